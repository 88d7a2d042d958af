"""The request list's search and filters (GET parameters), applied inside the user's tenant.

Every lookup starts from ``MigrationRequest.objects.for_tenant(tenant)``; a bucket or batch is
named by its UUID and matched through the request's own foreign key within that queryset, so a
UUID of another tenant's bucket or batch simply matches nothing.
"""

from __future__ import annotations

from django import forms
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery

from requests_app.models import MigrationRequest, RequestBatch, State
from requests_app.types import available_types

SEARCH_FIELDS = ("q", "type", "state", "bucket", "batch", "created_from", "created_to")


class RequestFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search",
                        widget=forms.TextInput(attrs={"placeholder": "Mailbox or title", "type": "search"}))
    type = forms.ChoiceField(required=False, label="Type")
    state = forms.ChoiceField(required=False, label="State", choices=[("", "Any state"), *State.choices])
    bucket = forms.ChoiceField(required=False, label="Bucket")
    batch = forms.ChoiceField(required=False, label="CSV batch")
    created_from = forms.DateField(required=False, label="Created from", widget=forms.DateInput(attrs={"type": "date"}))
    created_to = forms.DateField(required=False, label="to", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, data, *, tenant, batch: RequestBatch | None = None) -> None:
        super().__init__(data)
        from buckets.models import Bucket

        self.tenant = tenant
        self.fields["type"].choices = [("", "Any type"), *((t.code, t.code) for t in available_types())]
        self.fields["bucket"].choices = [("", "Any bucket"), *(
            (str(u), name) for u, name in Bucket.objects.filter(tenant=tenant).values_list("uuid", "name"))]
        batches = list(RequestBatch.objects.for_tenant(tenant).values_list("uuid", "name", "created_at")[:50])
        if batch is not None and batch.uuid not in {b[0] for b in batches}:
            batches.append((batch.uuid, batch.name, batch.created_at))
        self.fields["batch"].choices = [("", "Any batch"), *(
            (str(u), f"{name or 'CSV'} ({created:%Y-%m-%d %H:%M})") for u, name, created in batches)]

    def filter(self, qs: QuerySet[MigrationRequest]) -> QuerySet[MigrationRequest]:
        """``qs`` narrowed by the valid fields (an invalid one is ignored, the form shows why)."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {
            k: v for k, v in getattr(self, "cleaned_data", {}).items() if k not in self.errors}
        if data.get("q"):
            q = data["q"].strip()
            qs = qs.filter(Q(source_user__icontains=q) | Q(title__icontains=q))
        if data.get("type"):
            qs = qs.filter(request_type=data["type"])
        if data.get("state"):
            qs = qs.filter(state=data["state"])
        if data.get("bucket"):
            qs = qs.filter(bucket__uuid=data["bucket"])
        if data.get("batch"):
            qs = qs.filter(batch__uuid=data["batch"])
        if data.get("created_from"):
            qs = qs.filter(created_at__date__gte=data["created_from"])
        if data.get("created_to"):
            qs = qs.filter(created_at__date__lte=data["created_to"])
        return qs

    @property
    def active(self) -> bool:
        return bool(self.is_bound and self.is_valid() and any(self.cleaned_data.get(f) for f in SEARCH_FIELDS))


def one_line_per_series(qs: QuerySet[MigrationRequest]) -> QuerySet[MigrationRequest]:
    """An incremental series shows as one line: its latest run, annotated with ``series_runs``
    (how many runs the series has; its page lists them). Every other request stays as it is."""
    same_series = MigrationRequest.objects.filter(tenant=OuterRef("tenant"), series_key=OuterRef("series_key"))
    newer = same_series.filter(Q(created_at__gt=OuterRef("created_at"))
                               | Q(created_at=OuterRef("created_at"), id__gt=OuterRef("id")))
    runs = same_series.order_by().values("series_key").annotate(n=Count("id")).values("n")
    series = Q(incremental=True) & ~Q(series_key="")
    return (qs.exclude(series & Exists(newer))
            .annotate(series_runs=Subquery(runs[:1])))
