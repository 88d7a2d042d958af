"""Benchmark: the request list with 10,000 requests of one tenant (issue 15: "as fast as now").

    python bench/list_bench.py                 # 10,000 requests uploaded as one CSV batch, best of 5
    python bench/list_bench.py --repeat 10

Uploads the maximum CSV through the real view (bench/csv_bench.py), marks a spread of states,
then times GET of the list page, its polled rows fragment, a search, a filter and the batch page
with Django's test client as the operator (template rendering included).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.csv_bench import make_csv, setup_django, upload  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        redis = setup_django(Path(work))
        try:
            from django.test import Client

            from accounts.models import User
            from requests_app.models import MigrationRequest, RequestBatch

            _elapsed, response, tenant = upload(make_csv(args.rows))
            if response.status_code != 302:
                sys.exit(f"FAILED: upload answered {response.status_code}")
            qs = MigrationRequest.objects.for_tenant(tenant)
            for n, state in enumerate(("completed", "failed", "running", "cancelled")):
                qs.filter(pk__in=list(qs.values_list("pk", flat=True)[n * 1000:(n + 1) * 1000])).update(state=state)
            batch = RequestBatch.objects.get(tenant=tenant)
            client = Client()
            client.force_login(User.objects.get(email="operator@csv-bench.test"))
            base = f"/t/{tenant.slug}/requests/"
            for label, url in (("list", base), ("rows fragment", base + "rows/"), ("page 100", base + "?page=100"),
                               ("search 'user9999@'", base + "?q=user9999@"), ("state=failed", base + "?state=failed"),
                               ("batch page", base + f"batches/{batch.uuid}/")):
                best = float("inf")
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    got = client.get(url)
                    best = min(best, time.perf_counter() - started)
                    if got.status_code != 200:
                        sys.exit(f"FAILED: {url} answered {got.status_code}")
                print(f"{label:>22}: {best * 1000:7.1f} ms (best of {args.repeat}, {qs.count()} requests)")
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
