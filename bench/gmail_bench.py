"""Benchmark: GMAILAPI backup throughput against the Gmail fake enforcing Gmail's per-user quota.

    python bench/gmail_bench.py                      # 2,000 messages, 15,000 units / 60 s
    python bench/gmail_bench.py --throttle 0.05      # also throttle 5 % of batch parts
    python bench/gmail_bench.py --messages 6000 --window 60

One mailbox on the fake (seeded messages, one of 3 MB), served with the real quota: a sliding
window of 15,000 units per 60 s per user (messages.get = 5 units, so 50 messages/s at most).
The source lists every id (500 per page) and fetches them in multipart batches of 50 through
google-api-python-client, paced by the shared Redis quota. Every message is checked against the
fake's bytes (sha256); none may be lost or duplicated.

Target: ≥ 45 messages/s (90 % of the 50/s ceiling), zero messages lost.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.model import Message  # noqa: E402
from connectors.sources import tokens  # noqa: E402
from connectors.sources.gmail_api import GmailApiSource  # noqa: E402
from connectors.sources.ratelimit import RedisQuota, gmail_quota_key  # noqa: E402
from tests.fakes.google import GMAIL_USER_QUOTA, GoogleFake  # noqa: E402
from tests.fakes.redis_server import redis_url_for_tests  # noqa: E402

USER = "alice@legacyflo.test"


def run(messages: int, window: float, throttle: float, parallel: int, redis_url: str) -> dict:
    limit = int(GMAIL_USER_QUOTA * window / 60)
    fake = GoogleFake(mailboxes={USER: messages}, quota_units=limit, quota_window=window).start()
    try:
        if throttle:
            fake.gmail.faults.throttle_batch_parts(throttle, status=429, seed=1)
        credentials = tokens.google_service_account_credentials(
            fake.service_account_info, subject=USER, scopes=[tokens.GMAIL_READONLY_SCOPE],
            token_uri=fake.token_uri)
        quota = RedisQuota(redis_url, gmail_quota_key(f"bench-{uuid.uuid4().hex}-{USER}"),
                           limit=limit, window=window)
        source = GmailApiSource(credentials, api_url=fake.gmail_api_url, include_spam_trash=True,
                                quota=quota, parallel_batches=parallel)
        expected = {key: m.sha256 for key, m in fake.mailboxes[USER].messages.items()}

        started = time.perf_counter()
        [folder] = source.list_folders()
        ids = source.list_message_ids(folder)
        seen: dict[str, int] = {}
        wrong = failed = total_bytes = 0
        for item in source.fetch_messages(folder, ids):
            seen[item.source_id] = seen.get(item.source_id, 0) + 1
            if not isinstance(item, Message):
                failed += 1
                continue
            total_bytes += len(item.raw)
            wrong += hashlib.sha256(item.raw).hexdigest() != expected[item.source_id]
        elapsed = time.perf_counter() - started
    finally:
        fake.stop()
    return {
        "messages": len(expected), "listed": len(ids), "fetched": len(seen), "elapsed": elapsed,
        "rate": len(seen) / elapsed, "ceiling": limit / window / 5, "mb": total_bytes / 1e6,
        "lost": len(set(expected) - set(seen)), "duplicates": sum(n > 1 for n in seen.values()),
        "wrong_bytes": wrong, "failed": failed, "server_throttled": fake.gmail.throttled,
        "quota_rejections": fake.quota.rejected[USER], "peak_window_units": fake.quota.peak[USER],
        "limit": limit, "batches": source.stats["batches"], "retried_parts": source.stats["retried"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--window", type=float, default=60.0, help="quota window in seconds (limit scales)")
    parser.add_argument("--throttle", type=float, default=0.0, help="fraction of batch parts to throttle")
    parser.add_argument("--parallel", type=int, default=2, help="batches in flight")
    parser.add_argument("--redis", default=None, help="Redis URL (default: 127.0.0.1:6379 or a throwaway one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.redis:
            result = run(args.messages, args.window, args.throttle, args.parallel, args.redis)
        else:
            with redis_url_for_tests(Path(tmp)) as url:
                result = run(args.messages, args.window, args.throttle, args.parallel, url)

    print(f"Gmail API backup: {result['fetched']} of {result['messages']} messages "
          f"({result['mb']:.1f} MB) in {result['elapsed']:.1f} s")
    print(f"  rate            {result['rate']:.1f} messages/s = {100 * result['rate'] / result['ceiling']:.0f} % "
          f"of the {result['ceiling']:.0f}/s quota ceiling")
    print(f"  quota           {result['limit']} units / {args.window:g} s; peak in one window "
          f"{result['peak_window_units']}; calls refused for quota {result['quota_rejections']}")
    print(f"  batches         {result['batches']} (≤ 50 parts), parts retried {result['retried_parts']}, "
          f"throttled by the fake {result['server_throttled']}")
    print(f"  lost {result['lost']}, duplicated {result['duplicates']}, wrong bytes {result['wrong_bytes']}, "
          f"failed {result['failed']}")
    ok = not (result["lost"] or result["duplicates"] or result["wrong_bytes"] or result["failed"])
    if not args.throttle and result["rate"] < 0.9 * result["ceiling"]:
        print("  BELOW TARGET: less than 90 % of the ceiling")
        ok = False
    print("  OK" if ok else "  FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
