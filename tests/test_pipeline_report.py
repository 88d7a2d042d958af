"""report.csv and summary.json."""

from __future__ import annotations

import csv
import io
import json

from connectors.pipeline.ledger import EXPORTED, FAILED, MESSAGE, SKIPPED, EntryRecord
from connectors.pipeline.report import (
    REPORT_COLUMNS,
    FolderError,
    FolderStats,
    Summary,
    Totals,
    write_report,
)


def test_report_rows_columns_and_formula_guard():
    records = [
        EntryRecord(MESSAGE, "INBOX", "1:1", EXPORTED, name="INBOX/000001_x.eml", size=10,
                    subject="=HYPERLINK(\"http://evil\")", from_="a@b", sha256="ab",
                    imap_flags=("\\Seen", "$Forwarded"), labels=("=cmd", "Work"),
                    internal_date="2021-01-03T10:00:00+02:00"),
        EntryRecord(MESSAGE, "INBOX", "1:2", FAILED, error="server said NO"),
        EntryRecord("directory", "INBOX", name="INBOX/"),
    ]
    out = io.BytesIO()
    assert write_report(records, [FolderError("Gone", "deleted")], out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode("utf-8-sig"))))
    assert list(rows[0]) == REPORT_COLUMNS
    assert rows[0]["subject"] == "'=HYPERLINK(\"http://evil\")" and rows[0]["entry"] == "INBOX/000001_x.eml"
    assert rows[0]["flags"] == "\\Seen $Forwarded" and rows[0]["labels"] == "'=cmd;Work"
    assert rows[0]["internal_date"] == "2021-01-03T10:00:00+02:00"
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "server said NO"
    assert rows[1]["flags"] == rows[1]["labels"] == rows[1]["internal_date"] == ""
    assert rows[2]["folder"] == "Gone" and "deleted" in rows[2]["error"]


def test_folder_stats_reconcile_and_summary_json():
    stats = FolderStats("INBOX", source_count=3)
    for status in (EXPORTED, FAILED, SKIPPED):
        stats.add(EntryRecord(MESSAGE, "INBOX", "x", status, size=5))
    assert stats.reconciles and stats.bytes == 5
    summary = Summary(file="f", format="zip", state="completed_with_errors", folders=[stats],
                      totals=Totals.of([stats]))
    data = json.loads(summary.to_json())
    assert data["reconciled"] is True and data["totals"]["failed"] == 1
