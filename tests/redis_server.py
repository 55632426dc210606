"""A real Redis server for the tests (sim/live/redis_server.py): Debian's `redis-server` on a
free loopback port, in a temporary folder, nothing persisted; stopped after. Absent: the tests
skip with the reason, except in CI (CI=true), where they fail (.ci/run installs it)."""

from __future__ import annotations

import os

import pytest

from sim.live.redis_server import redis_server_exe, start_redis, stop_redis


def need(what: str) -> None:
    """Skip for a missing tool, but in CI fail: there it must be installed."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI installs it: .ci/run)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def redis_server():
    if redis_server_exe() is None:
        need("redis-server is not installed (Debian: apt-get install redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        need("the redis package is not installed (pip install 'floodgate[serve]')")
    srv = start_redis()
    yield srv
    stop_redis(srv)
