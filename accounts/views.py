"""Sign-in, sign-up and API tokens; log out and password changes are Django's own auth views."""

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts import throttle
from accounts.forms import InvitationTaken, SignInForm, SignupForm, TokenForm
from accounts.models import ApiToken, SiteSettings, User

SIGNUP = SiteSettings.SignUp


class SignInView(auth_views.LoginView):
    """Django's log-in view; a sign-in the throttle refused is answered 429 with Retry-After."""

    template_name = "accounts/login.html"
    authentication_form = SignInForm
    redirect_authenticated_user = True

    def form_invalid(self, form: Form) -> HttpResponse:
        return throttle.refused_status(self.request, super().form_invalid(form))

    def get_context_data(self, **kwargs: object) -> dict[str, object]:
        return {**super().get_context_data(**kwargs), "signup": SiteSettings.current().signup}


@never_cache
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("chat:home")
    mode = SiteSettings.current().signup
    context: dict[str, object] = {"mode": mode}
    if mode == SIGNUP.CLOSED:
        return render(request, "accounts/signup.html", context, status=403 if request.method == "POST" else 200)
    form = SignupForm(
        request.POST or None, initial={"invite": request.GET.get("invite", "")},
        invitation_required=mode == SIGNUP.INVITATION,
    )
    context["form"] = form
    # Sign-ups an admin invited are not counted per address; only look at the count for the others.
    invited = mode == SIGNUP.INVITATION or bool(request.POST.get("invite") or request.GET.get("invite"))
    refusal = None if invited else throttle.signup_refusal(request, request.POST.get("username", ""))
    if refusal is None and request.method == "POST" and form.is_valid():
        if form.invitation is None:
            refusal = throttle.signup_refusal(request, form.cleaned_data["username"], count=True)
        if refusal is None:
            try:
                user = form.save()
            except InvitationTaken:
                form.add_error("invite", "This invitation has already been used.")
            else:
                # Name the backend that made the session: with two configured, login() cannot guess.
                login(request, user, backend="accounts.backends.ThrottledModelBackend")
                return redirect("chat:home")
    if refusal is not None:
        context["refusal"] = refusal
        response = render(request, "accounts/signup.html", context, status=refusal.status)
        response["Retry-After"] = str(refusal.seconds)
        return response
    return render(request, "accounts/signup.html", context, status=422 if form.errors else 200)


def _active_tokens(user: User) -> list[ApiToken]:
    """The tokens not revoked, expired ones included (the page says they are)."""
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
        data = form.cleaned_data
        created, raw_token = ApiToken.issue(
            user, data["name"], scopes=data["scopes"], expires=data["expires"], stores_calls=data["stores_calls"],
            allowed_origins=data["allowed_origins"],
        )
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
