"""A Redis for the quota tests: the one on 127.0.0.1:6379 if it answers, else a throwaway one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def redis_url_for_tests(data_dir: Path) -> Iterator[str]:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
        yield "redis://127.0.0.1:6379/0"
        return
    except redis.RedisError:
        pass
    from legacyflo.localservices import start_redis

    server = start_redis(data_dir)
    try:
        yield server.url
    finally:
        server.stop()
