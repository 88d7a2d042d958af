"""What one small backup costs the database: the queries its job sends, counted (not timed)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.portal_fixtures import imap_form, run_worker_burst, submit

pytestmark = pytest.mark.django_db(transaction=True)

# The job of a fresh request on the default mailbox (nine folders, one part), BEGIN and COMMIT
# counted: claim, the engine's ledger (listing, one part, the commit), progress and the finish.
# 65 before the claim handed its row to the run, the ledger kept its checkpoint and knew a fresh
# request has no records to read, and notifications stopped building mails for nobody; 53 after.
MAX_QUERIES = 56


def test_a_small_fresh_backup_sends_a_bounded_number_of_queries(operator, tenant, dovecot, imap_ca, dest_bucket,
                                                                 rclone, rq_queue):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket))
    with CaptureQueriesContext(connection) as queries:
        run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    sent = [q["sql"] for q in queries.captured_queries]
    assert len(sent) <= MAX_QUERIES, "\n".join(sent)
