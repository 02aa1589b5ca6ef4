"""Forms for signing up and naming API tokens; password forms come from django.contrib.auth."""

from django import forms
from django.contrib.auth.forms import UserCreationForm

from accounts.models import Plan, User


class SignupForm(UserCreationForm):
    """Username plus the password twice; Django's validators judge the password."""

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username",)

    def save(self, commit: bool = True) -> User:
        user = super().save(commit=False)
        user.plan = Plan.default()  # kept even if admins later change which plan is the default
        if commit:
            user.save()
        return user


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        strip=True,
        help_text="Something that tells you later where the token is used, e.g. “laptop script”.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. laptop script", "autocomplete": "off"}),
    )
