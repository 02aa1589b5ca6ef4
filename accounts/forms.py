"""Forms for signing in and up and making API tokens; password forms come from django.contrib.auth."""

import re
from datetime import UTC, date, datetime, time, timedelta

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts import throttle
from accounts.models import ApiToken, Invitation, Plan, User


class ThrottledSignIn:
    """Says in plain words when the throttle refused a sign-in, instead of "wrong password"."""

    request: object

    def get_invalid_login_error(self) -> ValidationError:
        refusal = throttle.refusal_of(self.request)  # type: ignore[arg-type]
        if refusal is not None:
            return ValidationError(refusal.message, code="throttled")
        return super().get_invalid_login_error()  # type: ignore[misc]


class SignInForm(ThrottledSignIn, AuthenticationForm):
    pass


class AdminSignInForm(ThrottledSignIn, AdminAuthenticationForm):
    pass


class InvitationTaken(Exception):
    """Another sign-up used the invitation between this one's check and its save."""


class SignupForm(UserCreationForm):
    """Username plus the password twice; Django's validators judge the password. With
    `invitation_required`, or when a code is given, an invitation code too."""

    invite = forms.CharField(label="Invitation code", max_length=40, strip=True)

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username",)

    def __init__(self, *args: object, invitation_required: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.invitation: Invitation | None = None
        self.invitation_required = invitation_required
        given = self.data.get("invite") or self.initial.get("invite")
        if not invitation_required and not given:
            del self.fields["invite"]  # open sign-up with no code: nothing to ask
        elif not invitation_required:
            self.fields["invite"].required = False

    def validate_password_for_user(self, user: User, password_field_name: str = "password1") -> None:  # type: ignore[override]
        """What is wrong with the password is said under the password, not under its confirmation."""
        super().validate_password_for_user(user, password_field_name=password_field_name)

    def clean_invite(self) -> str:
        code = self.cleaned_data["invite"]
        if not code:
            return code
        invitation = Invitation.objects.filter(code=code).first()
        if invitation is None:
            raise ValidationError("No invitation has this code: check it against your invitation.", code="unknown")
        problem = invitation.problem()
        if problem is not None:
            raise ValidationError(problem, code="unusable")
        self.invitation = invitation
        return code

    def save(self, commit: bool = True) -> User:
        user = super().save(commit=False)
        user.plan = Plan.default()  # kept even if admins later change which plan is the default
        if self.invitation is not None and self.invitation.email:
            user.email = self.invitation.email
        if commit:
            with transaction.atomic():
                user.save()
                if self.invitation is not None and not self.invitation.claim(user):
                    raise InvitationTaken  # rolls the new user back
        return user


ORIGIN = re.compile(r"^(https?)://([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::(\d{1,5}))?/?$", re.IGNORECASE)


def normalise_origin(line: str) -> str:
    """`scheme://host[:port]` in lower case, without a trailing slash or a default port; raises
    ValidationError naming the line when it is not a bare origin (a path, a query, a bad port)."""
    match = ORIGIN.match(line)
    port = match.group(3) if match else None
    if match is None or (port is not None and not 0 < int(port) < 65536):
        raise ValidationError(
            "“%(line)s” is not an origin: write scheme, host and optional port, like https://app.example.com:8443, with no path.",
            code="origin", params={"line": line},
        )
    scheme, host = match.group(1).lower(), match.group(2).lower()
    default = {"http": "80", "https": "443"}[scheme]
    return f"{scheme}://{host}" + (f":{int(port)}" if port is not None and port != default else "")


EXPIRY_PRESETS = (("", "Never"), ("30", "In 30 days"), ("90", "In 90 days"), ("365", "In a year"), ("date", "On a date…"))


class TokenForm(forms.Form):
    """A new API token: its name, scopes, optional expiry, whether gateway calls are kept, and the
    web origins allowed to use it. `expires` is the moment it ends (None: never)."""

    name = forms.CharField(
        max_length=100,
        strip=True,
        help_text="Something that tells you later where the token is used, e.g. “laptop script”.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. laptop script", "autocomplete": "off"}),
    )
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices, initial=[ApiToken.Scope.CHAT], widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one scope."},
    )
    expiry = forms.ChoiceField(label="Expires", choices=EXPIRY_PRESETS, required=False, initial="")
    expiry_date = forms.DateField(
        label="Expiry date", required=False, widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The token stops working at the start of this day (UTC).",
    )
    stores_calls = forms.BooleanField(
        label="Store gateway calls", required=False,
        help_text="Keep each gateway call as a conversation that support can review; off, only its usage is kept.",
    )
    allowed_origins = forms.CharField(
        label="Allowed web origins", required=False, max_length=4000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "https://app.example.com", "autocomplete": "off"}),
        help_text="One a line: web pages of these origins may use the token (AI SDK and AG-UI endpoints). Empty: none.",
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # The browser's date picker offers future days only; the server checks again in `_expires`.
        tomorrow = timezone.now().astimezone(UTC).date() + timedelta(days=1)
        self.fields["expiry_date"].widget.attrs["min"] = tomorrow.isoformat()

    def clean_allowed_origins(self) -> str:
        lines = [line.strip() for line in self.cleaned_data["allowed_origins"].splitlines() if line.strip()]
        errors, origins = [], []
        for line in lines:
            try:
                origin = normalise_origin(line)
            except ValidationError as error:
                errors.append(error)
                continue
            if origin not in origins:
                origins.append(origin)
        if errors:
            raise ValidationError(errors)
        return "\n".join(origins)

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        cleaned["expires"] = self._expires(cleaned.get("expiry") or "", cleaned.get("expiry_date"))
        return cleaned

    def _expires(self, preset: str, day: date | None) -> datetime | None:
        now = timezone.now()
        if preset == "date" or (not preset and day is not None):
            if day is None:
                self.add_error("expiry_date", ValidationError("Choose the day the token expires.", code="required"))
                return None
            if day <= now.astimezone(UTC).date():
                self.add_error("expiry_date", ValidationError("The expiry date must be in the future.", code="past"))
                return None
            return datetime.combine(day, time.min, tzinfo=UTC)
        return now + timedelta(days=int(preset)) if preset else None
