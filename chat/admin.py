"""The model catalogue (with "Refresh models now"), the endpoints' status, system prompt presets
(each edit of the text a new version; their history, and rollback), conversations and messages in
Django admin."""

from django import forms
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from chat import discovery, presets
from chat.models import SYSTEM_PROMPT_MAX, ChatModel, Conversation, FailoverLink, Message, PromptPreset, ProviderEndpoint
from parley.admin import ViewOnlyAdmin
from providers import AUTO
from providers.endpoints import endpoint_names
from resilience import chains


class PriceKnownFilter(admin.SimpleListFilter):
    title = "price"
    parameter_name = "price"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("known", "Known"), ("unknown", "Unknown")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ChatModel]) -> QuerySet[ChatModel]:
        unknown = Q(input_price_per_million__isnull=True) | Q(output_price_per_million__isnull=True)
        if self.value() == "unknown":
            return queryset.filter(unknown).exclude(provider=AUTO)  # auto has no price: each reply's model has
        if self.value() == "known":
            return queryset.exclude(unknown)
        return queryset


# The `auto` row (routing/) is a router, not a model: admins may rename, order and switch it off;
# what a model has (provider, prices, window, vision) it takes from each message's chosen model.
AUTO_EDITABLE = ("label", "enabled", "sort_order")


class CatalogueRowForm(ModelForm):
    """A row of the catalogue's list: the `auto` row's prices, vision and default are not its to set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.is_auto:
            for name, field in self.fields.items():
                field.disabled = name not in AUTO_EDITABLE


def _report(request: HttpRequest, outcomes: list[discovery.Outcome]) -> None:
    if not outcomes:
        messages.warning(request, "No provider endpoint is configured: set OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY or PARLEY_OPENAI_ENDPOINTS.")
    for outcome in outcomes:
        messages.add_message(request, messages.SUCCESS if outcome.ok and not outcome.error else messages.WARNING, str(outcome))


class FailoverForm(ModelForm):
    class Meta:
        model = FailoverLink
        fields = ["fallback", "position"]

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        fallback = data.get("fallback")
        if fallback is not None and self.instance.model_id is not None and fallback.pk == self.instance.model_id:
            raise ValidationError("A model cannot be its own failover.")
        return data


class FailoverInline(admin.TabularInline):
    """The models that answer in this one's place when it fails before its first token
    (resilience/attempts.py), lowest position first."""

    model = FailoverLink
    fk_name = "model"
    form = FailoverForm
    extra = 0
    verbose_name = "failover model"
    verbose_name_plural = "failover chain: tried in this order when the model fails before its first token"


@admin.register(ChatModel)
class ChatModelAdmin(admin.ModelAdmin):
    """The model catalogue: what the endpoints list, kept current by "Refresh models now" and the
    schedule; admins switch models on or off, pick the default and set prices (empty: unknown)."""

    change_list_template = "admin/chat/chatmodel/change_list.html"
    # What fits a 1280-px screen beside the filters; the order and when it was last listed are on its page.
    # (The endpoint and availability are filters beside it.)
    list_display = [
        "label", "name", "enabled", "is_default", "supports_vision", "input_price_per_million", "output_price_per_million",
        "price_is_known",
    ]
    list_editable = ["enabled", "is_default", "supports_vision", "input_price_per_million", "output_price_per_million"]
    list_filter = ["provider", "endpoint", "available", "enabled", PriceKnownFilter]
    search_fields = ["name", "label", "remote_name"]
    readonly_fields = ["available", "last_seen"]
    inlines = [FailoverInline]

    @admin.display(boolean=True, description="price known")
    def price_is_known(self, obj: ChatModel) -> bool | None:
        return None if obj.is_auto else obj.price_known

    def get_readonly_fields(self, request: HttpRequest, obj: ChatModel | None = None) -> list[str]:
        if obj is not None and obj.is_auto:
            return [field.name for field in ChatModel._meta.fields if field.editable and field.name not in AUTO_EDITABLE and field.name != "id"]
        return list(self.readonly_fields)

    def has_delete_permission(self, request: HttpRequest, obj: ChatModel | None = None) -> bool:
        # Only its migration makes the auto row; switching it off hides it.
        return not (obj is not None and obj.is_auto) and super().has_delete_permission(request, obj)

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> type[ModelForm]:
        return super().get_changelist_form(request, form=CatalogueRowForm, **kwargs)

    def save_model(self, request: HttpRequest, obj: ChatModel, form: ModelForm, change: bool) -> None:
        if {"input_price_per_million", "output_price_per_million"} & set(form.changed_data):
            obj.prices_from_list = False  # an admin's price: no refresh replaces it
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: ModelForm, formsets: list, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        chains.forget()  # this process at once; the others within resilience.chains.CHAIN_SECONDS

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, object] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_refresh": self.has_change_permission(request)}
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[URLPattern]:
        refresh = self.admin_site.admin_view(require_POST(self.refresh_view))
        return [path("refresh/", refresh, name="chat_chatmodel_refresh"), *super().get_urls()]

    def refresh_view(self, request: HttpRequest) -> HttpResponse:
        """Reads every endpoint's model list now, in this request's thread (the admin waits a few seconds)."""
        if not self.has_change_permission(request):
            return HttpResponse(status=403)
        _report(request, discovery.refresh())
        return HttpResponseRedirect(reverse("admin:chat_chatmodel_changelist"))


@admin.register(ProviderEndpoint)
class ProviderEndpointAdmin(ViewOnlyAdmin):
    """How the last reading of each endpoint's model list went; the endpoints come from the settings."""

    list_display = ["name", "kind", "base_url", "configured", "ok", "error", "checked_at", "last_ok_at", "models_listed"]
    actions = ["refresh_now"]

    @admin.display(boolean=True)
    def configured(self, obj: ProviderEndpoint) -> bool:
        return obj.name in endpoint_names()

    @admin.action(description="Refresh models now", permissions=["refresh"])
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[ProviderEndpoint]) -> None:
        _report(request, discovery.refresh([endpoint.name for endpoint in queryset]))

    def has_refresh_permission(self, request: HttpRequest) -> bool:
        # The rows are view-only; refreshing changes the model catalogue, so it is for those who may.
        return request.user.has_perm("chat.change_chatmodel")


class PromptPresetForm(ModelForm):
    """The preset's text is its current version's: saving a changed text makes a new version."""

    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12}), max_length=SYSTEM_PROMPT_MAX,
        help_text="Saving a changed text makes a new version, in force at once: conversations that follow the preset"
        " get it from their next reply. Earlier versions stay, listed below.",
    )
    note = forms.CharField(
        required=False, max_length=presets.NOTE_MAX, help_text="What changed, for the history (optional; kept only with a new text).",
    )

    class Meta:
        model = PromptPreset
        fields = ["name", "enabled", "sort"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.instance.pk and self.instance.current_version_id:
            self.fields["text"].initial = self.instance.current_version.text


@admin.register(PromptPreset)
class PromptPresetAdmin(admin.ModelAdmin):
    """System prompts users may pick for a conversation; only enabled ones are offered, in `sort`
    order. The page lists the preset's versions, with "Roll back to this version"."""

    form = PromptPresetForm
    change_form_template = "admin/chat/promptpreset/change_form.html"
    fields = ["name", "text", "note", "enabled", "sort"]
    list_display = ["name", "enabled", "sort", "version_in_force"]
    list_editable = ["enabled", "sort"]
    list_filter = ["enabled"]
    list_select_related = ["current_version"]
    search_fields = ["name", "current_version__text"]

    @admin.display(description="version in force")
    def version_in_force(self, obj: PromptPreset) -> int | None:
        return obj.current_version.number if obj.current_version else None

    def save_model(self, request: HttpRequest, obj: PromptPreset, form: ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if "text" in form.cleaned_data:  # the list's editable columns save without it
            # The admin's change view runs in a transaction: the preset and its version commit together.
            presets.revise(obj, form.cleaned_data["text"], by=request.user, note=form.cleaned_data.get("note", ""))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        preset = self.get_object(request, unquote(object_id))
        if preset is not None:
            extra_context = {
                **(extra_context or {}),
                "preset_versions": presets.history(preset),
                "can_roll_back": self.has_change_permission(request, preset),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        rollback = self.admin_site.admin_view(require_POST(self.rollback_view))
        # Before the admin's own: its catch-all "<object_id>/" would take the address otherwise.
        return [path("<path:object_id>/rollback/", rollback, name="chat_promptpreset_rollback"), *super().get_urls()]

    def rollback_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Puts the version numbered `version` (POST) in force again, as a new version (presets.roll_back)."""
        preset = self.get_object(request, unquote(object_id))
        if preset is None:
            messages.error(request, "That preset does not exist (it may have been deleted).")
            return HttpResponseRedirect(reverse("admin:chat_promptpreset_changelist"))
        if not self.has_change_permission(request, preset):
            raise PermissionDenied
        back = HttpResponseRedirect(reverse("admin:chat_promptpreset_change", args=[preset.pk]))
        try:
            version = presets.roll_back(preset, request.POST.get("version", ""), by=request.user)
        except presets.PresetError as refused:
            messages.error(request, str(refused))
            return back
        self.log_change(request, preset, f"Rolled back to version {version.restored_from.number} as version {version.number}.")
        messages.success(
            request, f"Version {version.restored_from.number} is in force again, as version {version.number}.",
        )
        return back


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["role", "status", "content", "error_code", "model", "created"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["display_title", "owner", "model", "updated", "archived"]
    list_filter = ["archived", "model"]
    search_fields = ["title", "owner__username"]
    list_select_related = ["owner", "model"]
    readonly_fields = [
        "owner", "title", "title_is_auto", "model", "system_prompt", "preset", "preset_version", "created", "updated", "archived", "current_leaf",
    ]
    inlines = [MessageInline]

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Read-only: messages change only through the streaming pipeline."""

    list_display = ["id", "conversation", "role", "status", "model", "completion_tokens", "created"]
    list_filter = ["role", "status", "provider"]
    search_fields = ["content", "conversation__title"]
    list_select_related = ["conversation"]
    raw_id_fields = ["conversation", "parent"]

    def get_readonly_fields(self, request: object, obj: Message | None = None) -> list[str]:
        return [field.name for field in Message._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
