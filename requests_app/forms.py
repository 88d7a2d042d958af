"""One form per request type, used by the web page and, row by row, by the CSV importer."""

from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass, field

from django import forms
from django.utils import timezone

from accounts.forms import SecretField
from accounts.models import Tenant
from buckets.models import Bucket, Purpose, Status
from connectors.pipeline.archivekeys import file_name_problem
from requests_app.models import Security
from requests_app.types import TARGET_TO_SOURCE, RequestType

_HOST = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_FILE_NAME = re.compile(r"^[\w@+.-][\w@+. -]{0,150}$")
_PREFIX_PART = re.compile(r"^[\w@+.=-]+$")


def split_folders(value: str) -> list[str]:
    """``INBOX;Projects/2024`` → ["INBOX", "Projects/2024"]; folder paths use '/' whatever the server's separator."""
    return [part.strip().strip("/") for part in (value or "").split(";") if part.strip().strip("/")]


_YES = {"1", "true", "yes", "y", "on"}
_NO = {"0", "false", "no", "n", "off", ""}
AUTH_METHODS = [("password", "Password"), ("oauth", "OAuth (XOAUTH2) through a Microsoft connection")]


def parse_yes_no(value) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value if value is not None else "").strip().lower()
    return True if text in _YES else False if text in _NO else None


class YesNoCheckbox(forms.CheckboxInput):
    """A checkbox on the web page, ``yes``/``no`` (true/false, 1/0) in CSV files."""

    def __init__(self, attrs=None):
        super().__init__(attrs, check_test=lambda value: bool(parse_yes_no(value)))

    def value_from_datadict(self, data, files, name):
        return data.get(name, "")


class YesNoField(forms.Field):
    widget = YesNoCheckbox

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value):
        parsed = parse_yes_no(value)
        if parsed is None:
            raise forms.ValidationError("Use yes or no.")
        return parsed


MAX_RECIPIENTS = 20


def parse_recipients(value) -> list[str]:
    """``a@x.test; b@y.test`` (or a list) → the addresses, lower-cased, each once, in order;
    ValidationError naming a bad address."""
    from django.core.validators import validate_email

    parts = value if isinstance(value, (list, tuple)) else re.split(r"[;,\s]+", value or "")
    out: list[str] = []
    for part in parts:
        address = part.strip().lower()
        if not address:
            continue
        try:
            validate_email(address)
        except forms.ValidationError:
            raise forms.ValidationError(f"{part.strip()!r} is not an email address.") from None
        if address not in out:
            out.append(address)
    if len(out) > MAX_RECIPIENTS:
        raise forms.ValidationError(f"At most {MAX_RECIPIENTS} addresses.")
    return out


def clean_imap_host(value: str | None, rtype: RequestType) -> str:
    """An IMAP server field (a backup's source, a restore's target): the type's own server when
    empty, else a valid host name, lower-cased."""
    value = (value or "").strip() or rtype.server
    if not value:
        raise forms.ValidationError("Enter the IMAP server's host name.")
    if not _HOST.match(value):
        raise forms.ValidationError(f"{value!r} is not a valid host name.")
    return value.lower()


class RecipientsField(forms.CharField):
    """Email addresses separated by ';' (the CSV ``notify`` column, the forms' Notify field)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 4000)
        kwargs.setdefault("help_text", "Email addresses separated by ';': a mail when the run starts and when it ends.")
        super().__init__(**kwargs)

    def clean(self, value):
        return parse_recipients(super().clean(value))


def destination_buckets(tenant):
    return Bucket.objects.for_tenant(tenant).filter(
        status=Status.VERIFIED, purpose__in=[Purpose.DESTINATION, Purpose.BOTH])


def source_buckets(tenant):
    """The buckets a restore may read: the tenant's own, verified, purpose source or both."""
    return Bucket.objects.for_tenant(tenant).filter(
        status=Status.VERIFIED, purpose__in=[Purpose.SOURCE, Purpose.BOTH])


@dataclass
class TenantLookups:
    """What a RequestForm looks up in the tenant's data, read once and then kept.

    The CSV importer validates every row against one snapshot, so a file of thousands of rows
    costs a handful of queries, not several per row. A snapshot serves one validation pass.
    """

    tenant: Tenant
    destinations: list[Bucket]
    bucket_names: set[str]
    sources: list[Bucket] = field(default_factory=list)
    _connections: dict[str, list] = field(default_factory=dict)
    _authorizations: dict[int, dict[str, object]] = field(default_factory=dict)

    @classmethod
    def load(cls, tenant) -> TenantLookups:
        return cls(tenant=tenant, destinations=list(destination_buckets(tenant)),
                   bucket_names=set(Bucket.objects.for_tenant(tenant).values_list("name", flat=True)),
                   sources=list(source_buckets(tenant)))

    def destination(self, value: str) -> Bucket:
        """The verified destination bucket named by uuid (web form) or name (CSV)."""
        return self._pick(self.destinations, value, "destination")

    def source(self, value: str) -> Bucket:
        """The verified source (or both) bucket named by uuid (web form) or name (CSV)."""
        return self._pick(self.sources, value, "source")

    def _pick(self, buckets: list[Bucket], value: str, purpose: str) -> Bucket:
        try:
            wanted = uuid.UUID(value) if re.fullmatch(r"[0-9a-fA-F-]{36}", value) else None
        except ValueError:
            wanted = None
        for bucket in buckets:
            if bucket.uuid == wanted:
                return bucket
        named = [b for b in buckets if b.name == value]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise forms.ValidationError(f"Several buckets are named {value}; choose one in the web form.")
        if value in self.bucket_names:
            raise forms.ValidationError(f"The bucket {value} is not a verified {purpose} bucket"
                                        + (" (purpose source or both)" if purpose == "source" else "")
                                        + ": verify it first.")
        raise forms.ValidationError(f"No bucket named {value} is registered for this tenant.")

    def connections(self, provider: str) -> list:
        from providers.selectors import connections_of

        if provider not in self._connections:
            self._connections[provider] = list(connections_of(self.tenant, provider))
        return self._connections[provider]

    def connection(self, provider: str, ref: str):
        from providers.selectors import pick_connection

        return pick_connection(self.connections(provider), ref)

    def authorization(self, connection, email: str, *, scope: str | None = None):
        """The mailbox's usable consent through ``connection`` (as ``selectors.authorization_for``)."""
        from providers.selectors import authorizations_of, usable_consent

        if connection.pk not in self._authorizations:
            self._authorizations[connection.pk] = {a.email: a for a in authorizations_of(connection)}
        return usable_consent(self._authorizations[connection.pk].get((email or "").strip().lower()), scope)


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
    notify = RecipientsField(label="Notify")

    def __init__(self, *args, rtype: RequestType, tenant, lookups: TenantLookups | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rtype = rtype
        self.tenant = tenant
        self.lookups = lookups or TenantLookups.load(tenant)
        self.fields["bucket"].widget = forms.Select(choices=[("", "— choose a verified bucket —")] +
                                                    [(str(b.uuid), str(b)) for b in self.lookups.destinations])
        if rtype.source != "imap" or not rtype.uses_password:  # the server is the provider's own
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
        if rtype.uses_connection:
            self._add_provider_fields()
        if rtype.is_backup:
            self.fields["incremental"] = YesNoField(
                label="Incremental series",
                help_text="Each later run of the same mailbox, bucket, prefix and file name archives only what is "
                          "new since the previous completed run, into its own FILE.rNNNN files.")

    def bound_copy(self, data: dict) -> RequestForm:
        """This unbound form, bound to ``data``, sharing its fields.

        Building a form deep-copies every field, which was most of the cost of checking a CSV of
        10,000 rows. Validation never changes a field, so each copy checks its row exactly as a
        form of its own would (errors and cleaned data are the copy's own).
        """
        form = copy.copy(self)
        form.data, form.is_bound = data, True
        form._errors, form._bound_fields_cache = None, {}
        return form

    def _add_provider_fields(self) -> None:
        """The provider connection (by uuid from the page, by name from CSV) and the type's options."""
        from providers.models import Provider

        rtype = self.rtype
        label = Provider(rtype.provider).label
        choices = [("", f"— choose a {label} connection —")] + [
            (str(c.uuid), c.name) for c in self.lookups.connections(rtype.provider)]
        self.fields["connection"] = forms.CharField(
            required=not rtype.uses_password, label="Connection", widget=forms.Select(choices=choices),
            help_text="Registered under Connections. The mailbox's own consent is used when it has one, otherwise "
                      + ("the service account's delegation." if rtype.provider == "google" else "app-only access."))
        if rtype.uses_password:
            self.fields["auth_method"] = forms.ChoiceField(choices=AUTH_METHODS, required=False, initial="password",
                                                           label="Authentication")
            self.fields["source_password"].required = False
            self.fields["source_password"].help_text = "Only with password authentication."
        if "include_spam_trash" in rtype.extra_columns:
            self.fields["include_spam_trash"] = YesNoField(label="Include Spam and Trash")
        order = list(self.fields)
        moved = [n for n in ("auth_method", "connection", "include_spam_trash") if n in self.fields]
        anchor = order.index("source_password") + 1 if "source_password" in order else order.index("source_user") + 1
        rest = [n for n in order if n not in moved]
        self.order_fields(rest[:anchor] + moved + rest[anchor:])

    # Field cleaning ---------------------------------------------------------------------------
    def clean_source_server(self):
        return clean_imap_host(self.cleaned_data.get("source_server"), self.rtype)

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
        return self.lookups.destination(self.cleaned_data["bucket"].strip())

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
        if value and (problem := file_name_problem(value)):
            raise forms.ValidationError(problem)
        return value

    def clean(self):
        data = super().clean()
        since, before = data.get("since"), data.get("before")
        if since and before and since >= before:
            self.add_error("before", "'before' must be later than 'since'.")
        if self.rtype.uses_connection:
            self._clean_provider(data)
        if not data.get("file_name") and data.get("source_user"):
            stem = re.sub(r"[^\w@+.-]+", "-", data["source_user"]).strip("-.")
            data["file_name"] = f"{stem}-{timezone.now():%Y%m%d-%H%M%S}"
        return data

    # Provider connections ---------------------------------------------------------------------
    def _clean_provider(self, data: dict) -> None:
        """Resolve the connection and decide, once, how the worker will authenticate.

        ``options`` records the connection's uuid and the credential its source kind chose
        (``requests_app.kinds``; never a secret): the mailbox's own consent when it has one,
        otherwise the connection's service account (Google) or app-only access (Microsoft).
        OAuth over IMAP always goes to the provider's host from the settings, so a typed server
        can never receive a token.
        """
        from requests_app.kinds import NoCredential, kind_for

        lookups = self.lookups
        rtype = self.rtype
        kind = kind_for(rtype, "oauth")
        if "auth_method" in self.fields:
            kind = kind_for(rtype, data.get("auth_method") or "password")
            if not kind.uses_connection:
                if data.get("connection"):
                    self.add_error("connection", "Leave the connection empty with password authentication "
                                                 "(or choose auth_method oauth).")
                if not data.get("source_password") and "source_password" not in self.errors:
                    self.add_error("source_password", "Enter the password (or choose OAuth).")
                return
        ref = data.get("connection") or ""
        if not ref:
            if "connection" not in self.errors:
                self.add_error("connection", "Choose a connection.")
            return
        connection = lookups.connection(rtype.provider, ref)
        if connection is None:
            self.add_error("connection", f"No {rtype.provider.title()} connection named {ref} is registered for this tenant.")
            return
        user = data.get("source_user")
        if not user:
            return
        problem = kind.server_problem(rtype, data.get("source_server") or "")
        if problem:
            self.add_error("source_server", problem)
            return
        try:
            credential = kind.credential(connection, user,
                                         lambda scope=None: lookups.authorization(connection, user, scope=scope))
        except NoCredential as exc:
            self.add_error(exc.field, exc.message)
            return
        options = {"connection": str(connection.uuid), "credential": credential}
        if "include_spam_trash" in self.fields:
            options["include_spam_trash"] = bool(data.get("include_spam_trash"))
        if "auth_method" in self.fields:
            options["auth_method"] = "oauth"
        endpoint = kind.endpoint()
        if endpoint is not None:
            host, port, security = endpoint
            data.update(source_server=host, source_port=port, source_security=security, source_password="")
        data["options"] = options


class RestoreForm(forms.Form):
    """A restore request (S3-IMAP-ZIP, S3-IMAP-PST, S3-MITHI-ZIP): an archive of a source bucket
    into a mailbox. Its ``target_*`` fields are the mailbox side, cleaned like a backup's source
    server (host names only; private addresses are refused when the worker connects, as for
    backups) and returned under the request's ``source_*`` keys, where the model keeps them.

    ``check_archive``: look the archive up in the bucket (one listing) so a wrong key is an error
    of the form, not of the run; the CSV import leaves it to the run (one listing per row of a
    large file would be slow) and the run fails with the same message.
    """

    title = forms.CharField(max_length=200, required=False)
    bucket = forms.CharField(label="Source bucket", help_text="Registered with purpose source or both.")
    archive_key = forms.CharField(max_length=1024, label="Archive key",
                                  help_text="mail/2026/user1.zip; a split archive's first volume or base name; an "
                                            "incremental series' base name (mail/2026/user1) restores every run.")
    target_server = forms.CharField(max_length=255, required=False, label="IMAP server")
    target_port = forms.IntegerField(min_value=1, max_value=65535, required=False, label="Port")
    target_security = forms.ChoiceField(choices=Security.choices, required=False, label="Security")
    target_user = forms.CharField(max_length=320, label="Mailbox user")
    target_password = SecretField(label="Password")
    target_folder = forms.CharField(max_length=500, required=False, label="Restore under folder",
                                    help_text="Optional, e.g. Restored/2026-12-01: the archive's folders go under it.")
    folders = forms.CharField(required=False, label="Folders to restore",
                              help_text="Separated by ';', '/' between levels; subfolders are included. Empty: all.")
    exclude_folders = forms.CharField(required=False, label="Folders to leave out", help_text="Separated by ';'.")
    since = forms.DateField(required=False, input_formats=["%Y-%m-%d"], help_text="YYYY-MM-DD: messages on or after.",
                            widget=forms.DateInput(attrs={"type": "date"}))
    before = forms.DateField(required=False, input_formats=["%Y-%m-%d"], help_text="YYYY-MM-DD: messages before.",
                             widget=forms.DateInput(attrs={"type": "date"}))
    notify = RecipientsField(label="Notify")

    def __init__(self, *args, rtype: RequestType, tenant, lookups: TenantLookups | None = None,
                 check_archive: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.rtype, self.tenant, self.check_archive = rtype, tenant, check_archive
        self.lookups = lookups or TenantLookups.load(tenant)
        self.fields["bucket"].widget = forms.Select(choices=[("", "— choose a verified source bucket —")] +
                                                    [(str(b.uuid), str(b)) for b in self.lookups.sources])
        self.fields["target_port"].initial = rtype.port
        self.fields["target_security"].initial = rtype.security

    bound_copy = RequestForm.bound_copy

    def clean_target_server(self):
        return clean_imap_host(self.cleaned_data.get("target_server"), self.rtype)

    def clean_target_port(self):
        return self.cleaned_data.get("target_port") or self.rtype.port

    def clean_target_security(self):
        return self.cleaned_data.get("target_security") or self.rtype.security

    def clean_target_user(self):
        return self.cleaned_data["target_user"].strip()

    def clean_target_folder(self):
        value = (self.cleaned_data.get("target_folder") or "").strip()
        levels = [level.strip() for level in value.split("/")]
        if value and not all(levels):
            raise forms.ValidationError("Use '/' between folder levels, with no empty level.")
        return "/".join(levels) if value else ""

    def clean_folders(self):
        return split_folders(self.cleaned_data.get("folders", ""))

    def clean_exclude_folders(self):
        return split_folders(self.cleaned_data.get("exclude_folders", ""))

    def clean_bucket(self):
        return self.lookups.source(self.cleaned_data["bucket"].strip())

    def clean_archive_key(self):
        from connectors.pipeline.restore_keys import key_problem

        value = self.cleaned_data["archive_key"].strip()
        problem = key_problem(value, self.rtype.format)
        if problem:
            raise forms.ValidationError(problem)
        return value

    def clean(self):
        from connectors.pipeline.restore_keys import restore_file_name

        data = super().clean()
        since, before = data.get("since"), data.get("before")
        if since and before and since >= before:
            self.add_error("before", "'before' must be later than 'since'.")
        for target, source in TARGET_TO_SOURCE.items():
            if target in data:
                data[source] = data[target]
        if data.get("archive_key"):
            # The report and summary go beside the archive, under a name of their own.
            data["s3_prefix"], data["file_name"] = restore_file_name(data["archive_key"], uuid.uuid4().hex[:12])
            if self.check_archive and isinstance(data.get("bucket"), Bucket):
                self._check_archive(data)
        return data

    def _check_archive(self, data: dict) -> None:
        from django.conf import settings

        from buckets.services import bucket_target
        from connectors.pipeline.restore_keys import resolve_archive
        from connectors.storage.s3.client import make_client

        try:
            client = make_client(bucket_target(data["bucket"]), allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS)
            resolve_archive(client, data["bucket"].name, data["archive_key"], self.rtype.format)
        except Exception as exc:  # noqa: BLE001 - shown to the user: S3's or the resolver's words
            from connectors.pipeline.restore_keys import ArchiveNotFound

            message = str(exc) if isinstance(exc, ArchiveNotFound) else (
                f"The archive could not be looked up in the bucket ({exc.__class__.__name__}: {exc}).")
            self.add_error("archive_key", message)


def form_class(rtype: RequestType) -> type[forms.Form]:
    """The form of ``rtype``: one for every backup type, one for every restore type."""
    return RestoreForm if rtype.is_restore else RequestForm


class PlanForm(RequestForm):
    """A backup type's form plus its schedule; on edit a blank password keeps the stored one."""

    schedule = forms.CharField(max_length=64, label="Schedule", initial="daily 02:00",
                               help_text="'daily HH:MM', 'weekly DAY HH:MM' (DAY mon..sun) or 'monthly N HH:MM' "
                                         "(N 1..31; in a shorter month, its last day), in UTC.")

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["notify"].help_text = "Email addresses separated by ';': a mail when each run starts and ends."
        self.order_fields(["title", *[n for n in self.fields if n not in ("title", "schedule")], "schedule"])
        if editing and "source_password" in self.fields:
            self.fields["source_password"].required = False
            self.fields["source_password"].help_text = "Leave empty to keep the stored password."

    def clean_schedule(self):
        from requests_app.schedule import ScheduleError, parse

        try:
            return str(parse(self.cleaned_data.get("schedule", "")))
        except ScheduleError as exc:
            raise forms.ValidationError(str(exc)) from None


class NotifyDefaultsForm(forms.Form):
    notify = RecipientsField(label="Mail every run to",
                             help_text="Email addresses separated by ';': they hear about every request and plan "
                                       "of this organisation, besides each one's own list.")
