"""Incremental series on the API sources: Gmail ``historyId`` through ``users.history.list`` on
the Gmail fake (google-api-python-client against its wire protocol), with the 404 fall-back to
a full listing that skips what the series archived."""

from __future__ import annotations

import dataclasses
import random

import pytest

from connectors.pipeline.ledger import EXPORTED, MESSAGE, MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.series import Archived, SeriesContext
from connectors.pipeline.spec import COMPLETED, ExportSpec
from connectors.sources import tokens
from connectors.sources.gmail_api import GmailApiSource
from tests.fakes.clock import FakeClock
from tests.fakes.google import GoogleFake
from tests.fakes.mailstore import generate_messages
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import fast_tuning

ALICE = "alice@legacyflo.test"


@pytest.fixture
def google():
    server = GoogleFake(mailboxes={ALICE: 40}, clock=FakeClock()).start()
    yield server
    server.stop()


def gmail_source(fake: GoogleFake) -> GmailApiSource:
    credentials = tokens.google_service_account_credentials(
        fake.service_account_info, subject=ALICE, scopes=[tokens.GMAIL_READONLY_SCOPE], token_uri=fake.token_uri)
    return GmailApiSource(credentials, api_url=fake.gmail_api_url, rng=random.Random(7), sleep=fake.clock.sleep,
                          include_spam_trash=True)


class Series:
    def __init__(self, s3, make_source) -> None:
        self.s3, self.make_source = s3, make_source
        self.runs: list[tuple[MemoryLedger, object]] = []

    def archived(self, folder: str):
        for ledger, result in self.runs:
            if result.state == COMPLETED:
                for r in ledger.records:
                    if r.kind == MESSAGE and r.status == EXPORTED and r.folder == folder:
                        yield Archived(r.source_id, r.message_id, r.size)

    def run(self):
        number = len(self.runs) + 1
        done = [r for _, r in self.runs if r.state == COMPLETED]
        context = SeriesContext("k", run=number, cursors=done[-1].series["cursor"] if done else {},
                                archived=self.archived)
        ledger = MemoryLedger()
        result = run_backup(self.make_source(), self.s3.client(), ExportSpec(
            bucket=self.s3.bucket, prefix="api", file_name="alice" if number == 1 else f"alice.r{number:04d}",
            series=context), ledger, fast_tuning())
        self.runs.append((ledger, result))
        assert result.state == COMPLETED, result.error
        return result


def new_messages(n: int, start: int) -> list:
    out = []
    for i, message in enumerate(generate_messages(ALICE, n, seed=99)):
        out.append(dataclasses.replace(message, key=f"{0x19a0000000000000 + start + i:016x}", labels={"INBOX"}))
    return out


def test_gmail_series_follows_the_history_and_falls_back_to_a_full_listing_when_it_expired(google, s3):
    mailbox = google.mailboxes[ALICE]
    series = Series(s3, lambda: gmail_source(google))
    first = series.run()
    assert first.totals.exported == 40
    assert first.series["cursor"]["All Mail"]["history_id"] == str(mailbox.history_id)

    for message in new_messages(2, 0):
        mailbox.add(message)
    gone = next(iter(mailbox.messages))
    mailbox.delete(gone)
    gets = google.gmail.calls["messages.get"]
    second = series.run()
    assert second.totals.exported == 2
    assert second.series["folders"]["All Mail"]["mode"] == "new"
    assert second.series["expunged"] == 1
    assert google.gmail.calls["messages.get"] - gets == 2  # only the new ones were downloaded

    calls = dict(google.gmail.calls)
    third = series.run()
    assert third.totals.exported == 0 and third.archives == []
    assert third.series["folders"]["All Mail"]["mode"] == "unchanged"
    assert google.gmail.calls["history.list"] - calls.get("history.list", 0) == 1
    assert google.gmail.calls["messages.list"] == calls.get("messages.list", 0)  # no listing
    assert google.gmail.calls["messages.get"] == calls["messages.get"]

    mailbox.expire_history()
    for message in new_messages(1, 10):
        mailbox.add(message)
    gets = google.gmail.calls["messages.get"]
    fourth = series.run()
    assert fourth.series["folders"]["All Mail"]["mode"] == "resync"
    assert fourth.totals.exported == 1  # the full listing skipped every archived id
    assert google.gmail.calls["messages.get"] - gets == 1
    assert fourth.series["cursor"]["All Mail"]["history_id"] == str(mailbox.history_id)
