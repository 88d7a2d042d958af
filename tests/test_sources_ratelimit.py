"""connectors.sources.ratelimit: the shared GCRA bucket, in Redis and in-process, on a fake clock."""

from __future__ import annotations

import uuid

import pytest

from connectors.sources.ratelimit import LocalQuota, RedisQuota, gcra_rate, gmail_quota_key
from tests.fakes.clock import FakeClock
from tests.fakes.redis_server import redis_url_for_tests


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_url_for_tests(tmp_path_factory.mktemp("redis")) as url:
        yield url


def _quotas(redis_url, clock, n=2, **options):
    key = gmail_quota_key(f"{uuid.uuid4().hex}@legacyflo.test")
    return [RedisQuota(redis_url, key, clock=clock, sleep=clock.sleep, **options) for _ in range(n)]


def test_rate_leaves_room_for_burst_and_one_request():
    assert gcra_rate(15_000, 60, 250, 0.98) == pytest.approx((14_700 - 500) / 60)
    with pytest.raises(ValueError):
        gcra_rate(400, 60, 250, 1.0)


@pytest.mark.parametrize("kind", ["redis", "local"])
def test_bucket_lets_a_burst_through_then_paces(kind, redis_url):
    clock = FakeClock()
    if kind == "redis":
        [quota] = _quotas(redis_url, clock, n=1, limit=1000, window=10, burst=100, safety=1.0)
    else:
        quota = LocalQuota(limit=1000, window=10, burst=100, safety=1.0, clock=clock, sleep=clock.sleep)
    rate = (1000 - 200) / 10  # 80 units/s
    waits = [quota.acquire(50) for _ in range(6)]
    assert waits[:3] == [0, 0, 0]  # the burst (100 units) plus the request that crosses it
    assert waits[3] == pytest.approx(50 / rate, abs=1e-3)
    assert clock.slept == pytest.approx(waits[3:], abs=1e-3)


def test_two_workers_share_one_budget_and_never_exceed_the_window(redis_url):
    clock = FakeClock()
    first, second = _quotas(redis_url, clock, limit=1000, window=10, burst=100, safety=1.0)
    starts: list[tuple[float, int]] = []
    for i in range(200):
        (first if i % 2 else second).acquire(25)
        starts.append((clock(), 25))
    for t0, _ in starts:  # units started in any 10 s window stay within the limit
        assert sum(u for t, u in starts if t0 <= t < t0 + 10) <= 1000
    assert clock() - 1_700_000_000 == pytest.approx((200 * 25 - 125) / 80, abs=0.5)


def test_defer_pushes_every_holder_back(redis_url):
    clock = FakeClock()
    first, second = _quotas(redis_url, clock, limit=1000, window=10, burst=100, safety=1.0)
    first.defer(30)
    assert second.acquire(10) == pytest.approx(30, abs=1e-3)
