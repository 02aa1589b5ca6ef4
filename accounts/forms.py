"""Forms for signing in and up and naming API tokens; password forms come from django.contrib.auth."""

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts import throttle
from accounts.models import Invitation, Plan, User


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


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        help_text="Something that tells you later where the token is used, e.g. “laptop script”.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. laptop script", "autocomplete": "off"}),
    )
