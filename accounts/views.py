"""Sign-up and API tokens; log in, log out and password changes are Django's own auth views."""

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import SignupForm, TokenForm
from accounts.models import ApiToken, User


@never_cache
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("chat:home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        # Several auth backends may be configured later; name the one that created the session.
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("chat:home")
    return render(request, "accounts/signup.html", {"form": form}, status=422 if form.errors else 200)


def _active_tokens(user: User) -> list[ApiToken]:
    return list(ApiToken.objects.filter(user=user, revoked__isnull=True))


@never_cache  # the page shows a raw token once; no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    form = TokenForm(request.POST or None)
    created: ApiToken | None = None
    raw_token = ""
    if request.method == "POST" and form.is_valid():
        # Rendered straight from the POST rather than redirected, so the secret never rests in a
        # session or cookie on its way to the page.
        created, raw_token = ApiToken.issue(user, form.cleaned_data["name"])
        form = TokenForm()
    context = {"form": form, "tokens": _active_tokens(user), "created": created, "raw_token": raw_token}
    return render(request, "accounts/tokens.html", context, status=422 if form.errors else 200)


@login_required
@require_POST
def revoke_token(request: HttpRequest, pk: int) -> HttpResponse:
    token = ApiToken.objects.filter(pk=pk, user=request.user, revoked__isnull=True).first()
    if token is None:
        raise Http404("No such token.")
    token.revoke()
    return redirect("tokens")
