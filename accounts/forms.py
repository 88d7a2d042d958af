from django import forms
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, PasswordResetForm
from django.contrib.auth.password_validation import validate_password
from django.views.decorators.debug import sensitive_variables

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

    @sensitive_variables()
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

    @sensitive_variables()
    def clean(self):
        email, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if email is None or not password:
            return super().clean()
        wait = bruteforce.login_locked_for(email=email, request=self.request)
        if wait:
            bruteforce.login_blocked(email=email, request=self.request)
            raise lockout_error(wait)
        try:
            super().clean()
        except forms.ValidationError:
            wait = bruteforce.login_failed(email=email, request=self.request)
            if wait:
                raise lockout_error(wait) from None
            raise
        bruteforce.login_succeeded(email=email, request=self.request)
        return self.cleaned_data


def lockout_error(seconds: int) -> forms.ValidationError:
    """The error a locked-out attempt gets; views answer 429 when a form holds one (code "locked")."""
    return forms.ValidationError(bruteforce.lockout_message(seconds), code="locked")


@sensitive_variables()
def check_password_throttled(*, user, password: str, request, purpose: str, error: forms.ValidationError) -> None:
    """Check a signed-in user's password as a login would be: refused while locked out, failures counted.

    Every form that asks a signed-in person for their password goes through here, or a stolen
    session could guess it without limit. Raises ``error`` for a wrong password, the lockout error
    while (or once) locked out. See ``accounts.bruteforce``.
    """
    wait = bruteforce.recheck_locked_for(user=user, request=request)
    if wait:
        bruteforce.recheck_blocked(user=user, request=request, purpose=purpose)
        raise lockout_error(wait)
    if not user.check_password(password):
        wait = bruteforce.recheck_failed(user=user, request=request, purpose=purpose)
        raise lockout_error(wait) if wait else error
    bruteforce.recheck_succeeded(user=user, request=request)


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """Password change whose old password is throttled like a login (see ``check_password_throttled``)."""

    def __init__(self, user, *args, request=None, **kwargs):
        self.request = request
        super().__init__(user, *args, **kwargs)

    @sensitive_variables()
    def clean_old_password(self):
        password = self.cleaned_data["old_password"]
        check_password_throttled(
            user=self.user, password=password, request=self.request, purpose="password_change",
            error=forms.ValidationError(self.error_messages["password_incorrect"], code="password_incorrect"))
        return password


class ThrottledPasswordResetForm(PasswordResetForm):
    """Password reset that sends no mail beyond the per-email and per-client limits.

    The view answers the same either way, so the limits reveal nothing about accounts.
    """

    @sensitive_variables()  # the reset token
    def save(self, *args, request=None, **kwargs):
        if bruteforce.password_reset_allowed(email=self.cleaned_data["email"], request=request):
            super().save(*args, request=request, **kwargs)
