"""A real Redis server for the tests: Debian's `redis-server` on a free loopback port, in a
temporary folder, nothing persisted; stopped after. Absent: the tests skip with the reason,
except in CI (CI=true), where they fail (.ci/run installs it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

import pytest


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen
    dir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def need(what: str) -> None:
    """Skip for a missing tool, but in CI fail: there it must be installed."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI installs it: .ci/run)")
    pytest.skip(what)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(timeout: float = 10.0) -> RedisServer:
    exe = shutil.which("redis-server")
    if exe is None:
        need("redis-server is not installed (Debian: apt-get install redis-server)")
    for _ in range(3):  # a free port can be taken between the probe and the bind
        d = tempfile.mkdtemp(prefix="fg-redis-")
        port = _free_port()
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", d, "--logfile", os.path.join(d, "log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            if _ping(port):
                return RedisServer(port, proc, d)
            time.sleep(0.05)
        stop_redis(RedisServer(port, proc, d))
    raise RuntimeError("redis-server did not answer PING")


def stop_redis(srv: RedisServer) -> None:
    srv.proc.terminate()
    try:
        srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        srv.proc.wait()
    shutil.rmtree(srv.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    try:
        import redis  # noqa: F401
    except ImportError:
        need("the redis package is not installed (pip install 'floodgate[serve]')")
    srv = start_redis()
    yield srv
    stop_redis(srv)
