from django import forms
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.contrib.auth.password_validation import validate_password

from accounts import bruteforce
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


class ThrottledAuthenticationForm(AuthenticationForm):
    """Email login that refuses attempts while the email or the client is locked out.

    A locked-out attempt is refused before the password is checked; the failure that reaches a
    limit already answers with the lockout. See ``accounts.bruteforce``.
    """

    def clean(self):
        email, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if email is None or not password:
            return super().clean()
        wait = bruteforce.login_locked_for(email=email, request=self.request)
        if wait:
            bruteforce.login_blocked(email=email, request=self.request)
            raise self._lockout_error(wait)
        try:
            super().clean()
        except forms.ValidationError:
            wait = bruteforce.login_failed(email=email, request=self.request)
            if wait:
                raise self._lockout_error(wait) from None
            raise
        bruteforce.login_succeeded(email=email, request=self.request)
        return self.cleaned_data

    @staticmethod
    def _lockout_error(seconds: int) -> forms.ValidationError:
        return forms.ValidationError(bruteforce.lockout_message(seconds), code="locked")


class ThrottledPasswordResetForm(PasswordResetForm):
    """Password reset that sends no mail beyond the per-email and per-client limits.

    The view answers the same either way, so the limits reveal nothing about accounts.
    """

    def save(self, *args, request=None, **kwargs):
        if bruteforce.password_reset_allowed(email=self.cleaned_data["email"], request=request):
            super().save(*args, request=request, **kwargs)
