"""Benchmark: M365API backup against the Graph fake with injected 429s and the 4-request limit.

    python bench/graph_bench.py                        # 2,000 messages, 2 % of requests throttled
    python bench/graph_bench.py --throttle 0.1 --latency 0.05

One app-only mailbox on the fake (nested and hidden folders, one 3 MB message), every request
delayed by ``--latency`` seconds (a network round trip) and a fraction answered 429 with
``Retry-After: 1``. The fake rejects a 5th concurrent request per mailbox with 429
MailboxConcurrency and records the peak it saw. The source walks the folder tree, lists each
folder (pages of 250) and downloads each ``$value`` on 4 threads. Every message is checked
against the fake's bytes.

Targets: never more than 4 requests in flight (no MailboxConcurrency 429), zero messages lost.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.model import Message  # noqa: E402
from connectors.sources import tokens  # noqa: E402
from connectors.sources.graph import GraphSource  # noqa: E402
from tests.fakes.microsoft import MicrosoftFake  # noqa: E402

MAILBOX = "adele@legacyflo.onmicrosoft.com"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--throttle", type=float, default=0.02, help="fraction of requests answered 429")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to every request")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        fake = MicrosoftFake(Path(tmp), mailboxes={MAILBOX: args.messages}).start()
        try:
            fake.graph.latency = args.latency
            fake.graph.faults.throttle_randomly(args.throttle, retry_after=1, seed=1)
            client = tokens.MicrosoftClient(fake.client_id, fake.client_secret, tenant=fake.tenant_id,
                                            authority_host=fake.authority_host, ca_bundle=fake.ca_path)
            source = GraphSource(tokens.MicrosoftTokenProvider(client), mailbox=MAILBOX,
                                 graph_url=fake.graph_url, ca_bundle=fake.ca_path)
            expected = {key: m.sha256 for key, m in fake.mailboxes[MAILBOX].messages.items()}

            started = time.perf_counter()
            seen: dict[str, int] = {}
            wrong = failed = total_bytes = 0
            folders = source.list_folders()
            for folder in folders:
                for item in source.fetch_messages(folder, source.list_message_ids(folder)):
                    seen[item.source_id] = seen.get(item.source_id, 0) + 1
                    if not isinstance(item, Message):
                        failed += 1
                        continue
                    total_bytes += len(item.raw)
                    wrong += hashlib.sha256(item.raw).hexdigest() != expected[item.source_id]
            elapsed = time.perf_counter() - started
        finally:
            fake.stop()

    lost = len(set(expected) - set(seen))
    duplicates = sum(n > 1 for n in seen.values())
    peak = fake.graph.peak_attempted.get(MAILBOX, 0)
    print(f"Graph backup: {len(seen)} of {len(expected)} messages in {len(folders)} folders "
          f"({total_bytes / 1e6:.1f} MB) in {elapsed:.1f} s = {len(seen) / elapsed:.1f} messages/s")
    print(f"  requests        {source.stats['requests']} with {args.latency * 1000:.0f} ms latency each; "
          f"429 injected {fake.graph.faults.injected}, honoured {source.stats['throttled']}")
    print(f"  concurrency     peak {peak} in flight (limit {fake.graph.max_concurrency}); "
          f"MailboxConcurrency rejections {fake.graph.concurrency_rejections}")
    print(f"  lost {lost}, duplicated {duplicates}, wrong bytes {wrong}, failed {failed}")
    ok = not (lost or duplicates or wrong or failed) and peak <= 4 and not fake.graph.concurrency_rejections
    print("  OK" if ok else "  FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
