"""One form per request type, used by the web page and, row by row, by the CSV importer."""

from __future__ import annotations

import re

from django import forms
from django.utils import timezone

from accounts.forms import SecretField
from buckets.models import Bucket, Purpose, Status
from requests_app.models import Security
from requests_app.types import RequestType

_HOST = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_FILE_NAME = re.compile(r"^[\w@+.-][\w@+. -]{0,150}$")
_PREFIX_PART = re.compile(r"^[\w@+.=-]+$")


def split_folders(value: str) -> list[str]:
    """``INBOX;Projects/2024`` → ["INBOX", "Projects/2024"]; folder paths use '/' whatever the server's separator."""
    return [part.strip().strip("/") for part in (value or "").split(";") if part.strip().strip("/")]


def destination_buckets(tenant):
    return Bucket.objects.for_tenant(tenant).filter(
        status=Status.VERIFIED, purpose__in=[Purpose.DESTINATION, Purpose.BOTH])


class RequestForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)
    source_server = forms.CharField(max_length=255, required=False, label="IMAP server")
    source_port = forms.IntegerField(min_value=1, max_value=65535, required=False, label="Port")
    source_security = forms.ChoiceField(choices=Security.choices, required=False, label="Security")
    source_user = forms.CharField(max_length=320, label="Mailbox user")
    source_password = SecretField(required=False, label="Password")
    folders = forms.CharField(required=False, label="Folders to include",
                              help_text="Separated by ';', '/' between levels; subfolders are included. Empty: all folders.")
    exclude_folders = forms.CharField(required=False, label="Folders to exclude", help_text="Separated by ';'; subfolders too.")
    since = forms.DateField(required=False, input_formats=["%Y-%m-%d"], help_text="YYYY-MM-DD: messages on or after this date.",
                            widget=forms.DateInput(attrs={"type": "date"}))
    before = forms.DateField(required=False, input_formats=["%Y-%m-%d"], help_text="YYYY-MM-DD: messages before this date.",
                             widget=forms.DateInput(attrs={"type": "date"}))
    bucket = forms.CharField(label="Destination bucket")
    s3_prefix = forms.CharField(max_length=500, required=False, label="S3 prefix",
                                help_text="Folder inside the bucket, without leading or trailing '/'.")
    file_name = forms.CharField(max_length=150, required=False, label="File name",
                                help_text="Without extension. Empty: derived from the mailbox user and today's date.")

    def __init__(self, *args, rtype: RequestType, tenant, **kwargs):
        super().__init__(*args, **kwargs)
        self.rtype = rtype
        self.tenant = tenant
        buckets = list(destination_buckets(tenant))
        self.fields["bucket"].widget = forms.Select(choices=[("", "— choose a verified bucket —")] +
                                                    [(str(b.uuid), str(b)) for b in buckets])
        if rtype.source != "imap":
            for name in ("source_server", "source_port", "source_security", "source_password"):
                del self.fields[name]
            self.fields["source_user"].label = "Mailbox (email address)"
        else:
            self.fields["source_server"].initial = rtype.server
            self.fields["source_port"].initial = rtype.port
            self.fields["source_security"].initial = rtype.security
            if rtype.server:
                self.fields["source_server"].help_text = f"Default: {rtype.server}; change it only for a private endpoint."
            if rtype.uses_password:
                self.fields["source_password"].required = True
                if rtype.flavour in ("gmail", "yahoo"):
                    self.fields["source_password"].label = "App password"

    # Field cleaning ---------------------------------------------------------------------------
    def clean_source_server(self):
        value = (self.cleaned_data.get("source_server") or "").strip() or self.rtype.server
        if not value:
            raise forms.ValidationError("Enter the IMAP server's host name.")
        if not _HOST.match(value):
            raise forms.ValidationError(f"{value!r} is not a valid host name.")
        return value.lower()

    def clean_source_port(self):
        return self.cleaned_data.get("source_port") or self.rtype.port

    def clean_source_security(self):
        return self.cleaned_data.get("source_security") or self.rtype.security

    def clean_source_user(self):
        return self.cleaned_data["source_user"].strip()

    def clean_folders(self):
        return split_folders(self.cleaned_data.get("folders", ""))

    def clean_exclude_folders(self):
        return split_folders(self.cleaned_data.get("exclude_folders", ""))

    def clean_bucket(self):
        value = self.cleaned_data["bucket"].strip()
        candidates = destination_buckets(self.tenant)
        by_uuid = None
        if re.fullmatch(r"[0-9a-fA-F-]{36}", value):
            by_uuid = candidates.filter(uuid=value).first()
        if by_uuid:
            return by_uuid
        named = list(candidates.filter(name=value))
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise forms.ValidationError(f"Several buckets are named {value}; choose one in the web form.")
        if Bucket.objects.for_tenant(self.tenant).filter(name=value).exists():
            raise forms.ValidationError(f"The bucket {value} is not a verified destination bucket: verify it first.")
        raise forms.ValidationError(f"No bucket named {value} is registered for this tenant.")

    def clean_s3_prefix(self):
        value = (self.cleaned_data.get("s3_prefix") or "").strip()
        if value.startswith("/") or value.endswith("/"):
            raise forms.ValidationError("The prefix cannot start or end with '/'.")
        if value and not all(_PREFIX_PART.match(part) for part in value.split("/")):
            raise forms.ValidationError("Use letters, digits and - _ . @ + = between single '/' (no '..', no spaces).")
        if any(part in (".", "..") for part in value.split("/")):
            raise forms.ValidationError("The prefix cannot contain '.' or '..' parts.")
        return value

    def clean_file_name(self):
        value = (self.cleaned_data.get("file_name") or "").strip()
        for ext in (".zip", ".pst"):
            if value.lower().endswith(ext):
                value = value[: -len(ext)]
        if value and (not _FILE_NAME.match(value) or value.startswith(".")):
            raise forms.ValidationError("Use letters, digits, spaces and - _ . @ + only (no '/').")
        return value

    def clean(self):
        data = super().clean()
        since, before = data.get("since"), data.get("before")
        if since and before and since >= before:
            self.add_error("before", "'before' must be later than 'since'.")
        if not data.get("file_name") and data.get("source_user"):
            stem = re.sub(r"[^\w@+.-]+", "-", data["source_user"]).strip("-.")
            data["file_name"] = f"{stem}-{timezone.now():%Y%m%d-%H%M%S}"
        return data
