"""Run a throwaway Redis server: Debian's `redis-server` on a loopback port in a temporary
folder, nothing persisted (--save '' --appendonly no). For the tests, the benchmarks and the
fault scenarios (stop it, start it again on the same port)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen
    dir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def redis_server_exe() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(port: int | None = None, timeout: float = 10.0) -> RedisServer:
    """A server answering PING on 127.0.0.1:port (a free one when None); FileNotFoundError
    without redis-server, RuntimeError when it does not come up within `timeout`."""
    exe = redis_server_exe()
    if exe is None:
        raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis-server)")
    for _ in range(1 if port else 3):  # a probed free port can be taken before the bind
        p = port or free_port()
        d = tempfile.mkdtemp(prefix="fg-redis-")
        proc = subprocess.Popen([exe, "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", d, "--logfile", os.path.join(d, "log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        srv = RedisServer(p, proc, d)
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            if ping(p):
                return srv
            time.sleep(0.05)
        stop_redis(srv)
    raise RuntimeError(f"redis-server did not answer PING on port {p}")


def stop_redis(srv: RedisServer) -> None:
    srv.proc.terminate()
    try:
        srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        srv.proc.wait()
    shutil.rmtree(srv.dir, ignore_errors=True)
