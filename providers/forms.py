"""Connection forms. Secrets are write-only: rendered empty, never echoed back, kept when left empty."""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError

from accounts.forms import SecretField
from providers.credentials import MICROSOFT_PURPOSES
from providers.services import parse_service_account_key

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
_NAME = re.compile(r"^[\w][\w .@+-]{0,99}$")


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders its value (a pasted key must not come back in the page)."""

    def format_value(self, value):
        return None


class ConnectionForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Requests and CSV files name the connection (column connection).")
    client_id = forms.CharField(max_length=255, required=False)
    client_secret = SecretField(required=False)

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.editing = editing
        if editing:
            for name in self.secret_fields:
                self.fields[name].help_text = "Stored encrypted and never shown. Leave empty to keep it."

    secret_fields: tuple[str, ...] = ("client_secret",)

    def clean_name(self):
        value = self.cleaned_data["name"].strip()
        if not _NAME.match(value):
            raise ValidationError("Use letters, digits, spaces and . @ + - _ (up to 100 characters).")
        return value


class GoogleConnectionForm(ConnectionForm):
    secret_fields = ("client_secret", "service_account_key")
    service_account_key = forms.CharField(
        required=False, strip=True, label="Service-account key (JSON)",
        widget=WriteOnlyTextarea(attrs={"rows": 4, "autocomplete": "off", "spellcheck": "false"}),
        help_text="For GMAILOAUTH and GMAILAPI without per-user consent: paste the JSON key of a service account "
                  "with domain-wide delegation. Stored encrypted and never shown again.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["client_id"].label = "OAuth client id"
        self.fields["client_id"].help_text = ("A Web application client (Google Cloud → APIs & Services → Credentials), "
                                              "for per-user consent (GMAILAPI).")
        self.fields["client_secret"].label = "OAuth client secret"

    def clean_service_account_key(self):
        value = self.cleaned_data.get("service_account_key") or ""
        if value:
            parse_service_account_key(value)
        return value

    def clean(self):
        data = super().clean()
        if data.get("client_id") and not data["client_id"].endswith(".apps.googleusercontent.com"):
            self.add_error("client_id", "A Google OAuth client id ends with .apps.googleusercontent.com.")
        if not self.editing:
            has_client = data.get("client_id") and data.get("client_secret")
            if data.get("client_id") and not data.get("client_secret"):
                self.add_error("client_secret", "Enter the client secret.")
            elif not has_client and not data.get("service_account_key"):
                raise ValidationError("Give an OAuth client (id and secret), a service-account key, or both.")
        return data


class MicrosoftConnectionForm(ConnectionForm):
    directory_tenant = forms.CharField(
        max_length=255, required=False, label="Directory (tenant id or domain)",
        help_text="e.g. contoso.onmicrosoft.com. Needed for app-only access (admin consent records it too); "
                  "empty: any work account may sign in.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["client_id"].label = "Application (client) id"
        self.fields["client_id"].required = True
        self.fields["client_secret"].label = "Client secret (value)"
        self.order_fields(["name", "directory_tenant", "client_id", "client_secret"])

    def clean_client_id(self):
        value = self.cleaned_data["client_id"].strip()
        if not _GUID.match(value):
            raise ValidationError("The application (client) id is a GUID like 3fa85f64-5717-4562-b3fc-2c963f66afa6.")
        return value.lower()

    def clean_directory_tenant(self):
        value = (self.cleaned_data.get("directory_tenant") or "").strip().lower()
        if value and not (_GUID.match(value) or _DOMAIN.match(value) or value in ("organizations", "common")):
            raise ValidationError("Enter the tenant id (a GUID) or a verified domain such as contoso.onmicrosoft.com.")
        return value

    def clean(self):
        data = super().clean()
        if not self.editing and not data.get("client_secret"):
            self.add_error("client_secret", "Enter the client secret.")
        return data


class ConsentForm(forms.Form):
    """Start a mailbox user's consent; the hint only pre-selects the account on the provider's page."""

    login_hint = forms.EmailField(required=False, label="Mailbox (optional hint)",
                                  widget=forms.EmailInput(attrs={"placeholder": "user@example.com (optional)"}))
    purpose = forms.ChoiceField(required=False, initial="graph", label="Access for",
                                choices=[("graph", "Microsoft Graph (M365API requests)"),
                                         ("imap", "IMAP with OAuth (O365 requests)")])

    def clean_purpose(self):
        value = self.cleaned_data.get("purpose") or "graph"
        return value if value in MICROSOFT_PURPOSES else "graph"


class ConnectionTestForm(forms.Form):
    mailbox = forms.EmailField(required=False, label="Mailbox to impersonate",
                               help_text="Google service accounts act as a user of the domain.",
                               widget=forms.EmailInput(attrs={"placeholder": "user@your-domain"}))
