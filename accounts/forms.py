from django import forms
from django.contrib.auth.password_validation import validate_password

from accounts.models import Role


class SecretField(forms.CharField):
    """A write-only secret: rendered empty, never echoed back, even after a validation error."""

    def __init__(self, **kwargs):
        kwargs.setdefault("widget", forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}))
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class AcceptInvitationForm(forms.Form):
    """For someone without an account yet: choose a password."""

    password1 = SecretField(label="Password")
    password2 = SecretField(label="Password again")

    def clean(self):
        data = super().clean()
        if data.get("password1") != data.get("password2"):
            raise forms.ValidationError("The two passwords differ.")
        if data.get("password1"):
            validate_password(data["password1"])
        return data
