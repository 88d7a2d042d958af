"""The per-tenant limit: at most ``LEGACYFLO_TENANT_MAX_RUNNING`` running requests of one tenant.

So one tenant's plan of 1,500 mailboxes at 02:00 does not take every worker: a request claimed
while its tenant is at the limit stays queued, marked ``deferred_at``, and its job ends; it is
enqueued again when one of its tenant's runs leaves ``running`` (``release_deferred``, hooked
on ``lifecycle.ON_TRANSITION``) and, as a safety net, by every worker's recovery round.

Invariants:
- The count and the decision happen under a lock of the tenant's row (``claim`` and
  ``release_deferred`` both take it), so workers claiming at once never exceed the limit, and a
  request deferred while the tenant's last run was finishing is seen by that run's release.
- A deferred request is never lost: it stays ``queued`` (the UI says it waits for the limit)
  and is re-enqueued with a new job; cancelling it ends it as any queued request.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Tenant
from requests_app.models import MigrationRequest, State

log = logging.getLogger(__name__)


def lock_tenant(tenant_id: int) -> None:
    """Serialise this transaction with every other claim and release of the tenant."""
    Tenant.objects.select_for_update().filter(pk=tenant_id).values_list("pk", flat=True).first()


def running_count(tenant_id: int, *, excluding: int | None = None) -> int:
    """The tenant's runs that are going (running with a live heartbeat)."""
    from requests_app.lifecycle import stale_before

    qs = MigrationRequest.objects.filter(Q(tenant_id=tenant_id, state=State.RUNNING)
                                         & Q(heartbeat_at__gte=stale_before()))
    if excluding is not None:
        qs = qs.exclude(pk=excluding)
    return qs.count()


def at_limit(row: MigrationRequest) -> bool:
    """Whether ``row`` (being claimed, inside the claim's transaction) must wait: takes the
    tenant's lock, then counts."""
    lock_tenant(row.tenant_id)
    return running_count(row.tenant_id, excluding=row.pk) >= settings.LEGACYFLO_TENANT_MAX_RUNNING


def release_deferred(tenant_id: int) -> list[int]:
    """Re-enqueue the tenant's oldest deferred requests, as many as it has free places."""
    from requests_app.queue import enqueue_request

    with transaction.atomic():
        lock_tenant(tenant_id)
        free = settings.LEGACYFLO_TENANT_MAX_RUNNING - running_count(tenant_id)
        if free <= 0:
            return []
        pks = list(MigrationRequest.objects.filter(tenant_id=tenant_id, state=State.QUEUED,
                                                   deferred_at__isnull=False)
                   .order_by("deferred_at", "pk").values_list("pk", flat=True)[:free])
        MigrationRequest.objects.filter(pk__in=pks).update(deferred_at=None)
    for pk in pks:
        enqueue_request(pk)
    if pks:
        log.info("tenant %s: re-enqueued deferred requests %s", tenant_id, pks)
    return pks


def release_all() -> list[int]:
    """``release_deferred`` for every tenant with a deferred request (the recovery round)."""
    tenants = (MigrationRequest.objects.filter(state=State.QUEUED, deferred_at__isnull=False)
               .values_list("tenant_id", flat=True).distinct())
    released: list[int] = []
    for tenant_id in list(tenants):
        released += release_deferred(tenant_id)
    return released


def on_transition(transition) -> None:
    """A run left ``running``: its tenant may have a free place for a deferred request."""
    if transition.before != State.RUNNING or transition.after == State.RUNNING:
        return
    tenant_id = MigrationRequest.objects.filter(pk=transition.request_id).values_list("tenant_id", flat=True).first()
    if tenant_id is None:
        return
    try:
        release_deferred(tenant_id)
    except Exception:  # noqa: BLE001 - the recovery round releases it later
        log.exception("could not release the deferred requests of tenant %s", tenant_id)


def mark_deferred(row: MigrationRequest) -> None:
    row.deferred_at = timezone.now()
    row.save(update_fields=["deferred_at"])
