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
                        yield Archived(r.source_id, r.message_id, r.size, date=r.date, from_=r.from_, subject=r.subject)

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


ADELE = "adele@legacyflo.onmicrosoft.com"


@pytest.fixture
def microsoft(tmp_path):
    from tests.fakes.microsoft import MicrosoftFake

    fake = MicrosoftFake(tmp_path / "ms-ca", mailboxes={ADELE: 30}).start()
    yield fake
    fake.stop()


def graph_source(fake):
    from connectors.sources.graph import GraphSource

    client = tokens.MicrosoftClient(fake.client_id, fake.client_secret, tenant=fake.tenant_id,
                                    authority_host=fake.authority_host, ca_bundle=fake.ca_path)
    return GraphSource(tokens.MicrosoftTokenProvider(client), mailbox=ADELE, graph_url=fake.graph_url,
                       ca_bundle=fake.ca_path, sleep=lambda seconds: None, rng=random.Random(3))


def graph_messages(n: int, seed: int) -> list:
    from tests.fakes.graph_api import graph_id

    rng = random.Random(seed)
    return [dataclasses.replace(m, key=graph_id(rng)) for m in generate_messages(ADELE, n, seed=seed)]


def test_graph_series_follows_each_folders_delta_and_resyncs_after_410(microsoft, s3):
    mailbox = microsoft.graph.mailboxes[ADELE]
    inbox = mailbox.folder("inbox")
    series = Series(s3, lambda: graph_source(microsoft))
    first = series.run()
    total = len(mailbox.messages)
    assert first.totals.exported == total
    assert all("$deltatoken=" in c["delta_link"] for c in first.series["cursor"].values())

    for message in graph_messages(2, 11):
        mailbox.add_message(inbox.id, message)
    gone = next(m for f in mailbox.folders.values() if f.id != inbox.id for m in f.messages)
    mailbox.remove_message(gone)
    values = sum(microsoft.graph.value_requests.values())
    second = series.run()
    assert second.totals.exported == 2 and second.series["expunged"] == 1
    assert second.series["folders"]["Inbox"]["mode"] == "new"
    assert sum(microsoft.graph.value_requests.values()) - values == 2

    requests = dict(microsoft.graph.requests)
    values = sum(microsoft.graph.value_requests.values())
    third = series.run()
    assert third.totals.exported == 0 and third.archives == []
    assert {f["mode"] for f in third.series["folders"].values()} == {"unchanged"}
    listed = {k: v - requests.get(k, 0) for k, v in microsoft.graph.requests.items() if v != requests.get(k, 0)}
    assert not any(k.endswith("/messages") for k in listed), listed  # no folder listed again
    assert listed.get("mailFolders/{id}/messages/delta") == len(third.series["folders"])
    assert sum(microsoft.graph.value_requests.values()) == values

    mailbox.expire_delta_tokens()
    for message in graph_messages(1, 12):
        mailbox.add_message(inbox.id, message)
    fourth = series.run()
    assert {f["mode"] for f in fourth.series["folders"].values()} == {"resync"}
    assert fourth.totals.exported == 1


def test_ids_that_failed_in_the_previous_run_are_asked_again_from_gmail_and_graph(google, microsoft):
    mailbox = google.mailboxes[ALICE]
    failed = next(iter(mailbox.messages))
    source = gmail_source(google)
    [folder] = source.list_folders()
    plan = source.series_plan(folder, {"history_id": str(mailbox.history_id), "retry_ids": [failed]}, lambda f: ())
    assert plan.mode == "new" and plan.ids == [failed]

    graph = graph_source(microsoft)
    inbox = next(f for f in graph.list_folders() if f.path == "Inbox")
    first = graph.series_plan(inbox, None, lambda f: ())
    retry = first.ids[0]
    plan = graph.series_plan(inbox, {**first.cursor, "retry_ids": [retry]}, lambda f: ())
    assert plan.mode == "new" and plan.ids == [retry]
    assert graph.series_plan(inbox, first.cursor, lambda f: ()).mode == "unchanged"
