"""The "Circuit breakers" page (every breaker of the offered catalogue, live from Redis, with Force
open / Force closed / Automatic) and the breakers' history, read-only, in Django admin."""

import logging

import redis
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from breakers import control, status
from breakers.models import ENDPOINT_MAX, MODEL_MAX, Breaker, BreakerEvent
from parley.admin import ViewOnlyAdmin

logger = logging.getLogger(__name__)

FORCE_PERMISSION = "breakers.force_breaker"


class ForceForm(forms.Form):
    endpoint = forms.CharField(max_length=ENDPOINT_MAX)
    model = forms.CharField(max_length=MODEL_MAX)
    mode = forms.ChoiceField(choices=Breaker.Mode.choices)

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        pair = (cleaned.get("endpoint"), cleaned.get("model"))
        if None not in pair and pair not in status.known_breakers():
            raise forms.ValidationError(
                f"There is no breaker for the model {pair[1]} at the endpoint {pair[0]}: the page lists those of the"
                " models offered, and any still forced."
            )
        return cleaned


def _errors(form: ForceForm) -> str:
    return " ".join(str(error) for field_errors in form.errors.values() for error in field_errors)


@admin.register(Breaker)
class BreakerAdmin(ViewOnlyAdmin):
    """Not a list of rows (only forced breakers have one): the page of every breaker, and its one action."""

    def get_urls(self) -> list[URLPattern]:
        # Only the page and its action: a Breaker row is never edited on its own.
        return [
            path("", self.admin_site.admin_view(self.changelist_view), name="breakers_breaker_changelist"),
            path("force/", self.admin_site.admin_view(require_POST(self.force_view)), name="breakers_breaker_force"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, object] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return self._page(request)

    def force_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm(FORCE_PERMISSION):
            raise PermissionDenied
        form = ForceForm(request.POST)
        if not form.is_valid():
            return self._page(request, error=_errors(form), status_code=400)
        endpoint, model, mode = form.cleaned_data["endpoint"], form.cleaned_data["model"], form.cleaned_data["mode"]
        try:
            event = control.force(endpoint, model, mode, by=request.user)
        except (redis.RedisError, OSError) as error:
            logger.warning("Forcing the breaker of %s at %s failed: %s", model, endpoint, error)
            return self._page(request, error=f"Redis did not answer ({error}); nothing was changed. Try again.", status_code=503)
        if event is None:
            messages.info(request, f"The breaker of {model} at {endpoint} already was {Breaker.Mode(mode).label}.")
        else:
            messages.success(request, f"The breaker of {model} at {endpoint}: {event.get_from_state_display()} → "
                                      f"{event.get_to_state_display()}.")
        return HttpResponseRedirect(reverse("admin:breakers_breaker_changelist"))

    def _page(self, request: HttpRequest, error: str = "", status_code: int = 200) -> TemplateResponse:
        states = status.snapshot()
        context = {
            **self.admin_site.each_context(request),
            "title": "Circuit breakers",
            "opts": self.model._meta,
            "states": states,
            "redis_down": any(state.state == status.UNKNOWN for state in states),
            "can_force": request.user.has_perm(FORCE_PERMISSION),
            "modes": Breaker.Mode.choices,
            "error": error,
        }
        return TemplateResponse(request, "admin/breakers/breaker/change_list.html", context, status=status_code)


@admin.register(BreakerEvent)
class BreakerEventAdmin(ViewOnlyAdmin):
    """Every change of a breaker's state, who forced it when an admin did."""

    # What fits a 1280-px screen beside the filters; the failures counted are on each row's page.
    list_display = ["when", "breaker", "change", "reason", "by"]
    list_filter = ["to_state", "from_state", "endpoint"]
    search_fields = ["model", "endpoint", "reason"]
    list_select_related = ["by"]
    date_hierarchy = "created"

    @admin.display(description="When (UTC)", ordering="created")
    def when(self, event: BreakerEvent) -> str:
        return event.created.strftime("%Y-%m-%d %H:%M:%S")  # transitions come seconds apart

    @admin.display(description="Model at endpoint")
    def breaker(self, event: BreakerEvent) -> str:
        return f"{event.model} at {event.endpoint}"

    @admin.display(description="Change")
    def change(self, event: BreakerEvent) -> str:
        return f"{event.get_from_state_display()} → {event.get_to_state_display()}"

    def get_readonly_fields(self, request: object, obj: BreakerEvent | None = None) -> list[str]:
        return [field.name for field in BreakerEvent._meta.fields]
