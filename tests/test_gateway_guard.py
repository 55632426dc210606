"""The gateway against hostile or careless clients, on a real server on loopback (issue 18):
bodies checked by a schema (422, logged, never a 500), size limit (413), header and body read
timeouts (408), a connection limit (503), bounded flags, a log that survives a restart, and
one function for every rejection's headers. Every server is stopped by its test or fixture."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from test_gateway import PAID, Server, _fields, assert_rejection_headers, scenario, write

from sim.live.headers import rejection_headers
from sim.live.http_guard import parse_body
from sim.live.serve import free_port
from sim.scenario import parse_scenario


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """Fast service (0.02 simulated s at X = 20), short read deadlines, 40 connections."""
    s = Server(tmp_path_factory.mktemp("guard"), scenario([], service_s=0.02, max_batch=8),
               "--header-timeout", "0.5", "--body-timeout", "0.5", "--max-connections", "40",
               "--max-body", "4K")
    yield s
    assert s.stop() == 0


def _post(url: str, content: bytes, key: str = PAID[0], **headers) -> httpx.Response:
    return httpx.post(f"{url}/v1/images", content=content, timeout=10,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                               **headers})


@pytest.mark.parametrize("body,why", [
    ('{"id": 1, "scheduled_t": ' + "1" * 400 + "}", "digits"),
    ("[" * 2000 + "]" * 2000, "nested deeper"),  # 10,000 deep gets the 413 first
    ('{"id": 1, "scheduled_t": NaN}', "NaN is not JSON"),
    ('{"id": 1, "scheduled_t": Infinity}', "Infinity is not JSON"),
    ('{"id": 1, "scheduled_t": 1e400}', "finite"),
    ('{"id": true}', "valid integer"),
    ('{"id": 1, "attempt": -1}', "attempt"),
    ("\xff\xfe", "UTF-8"),
    ("", "empty"),
])
def test_bad_bodies_are_422_and_logged(srv, body, why):
    before = len(srv.records())
    r = _post(srv.url, body.encode("latin-1") if body.startswith("\xff") else body.encode())
    assert r.status_code == 422 and why in r.json()["detail"], r.text
    rec = srv.records()[before:]
    assert [x["status"] for x in rec] == [422] and rec[0]["reason"] == "invalid_body"
    assert rec[0]["tier"] == "paid" and why in rec[0]["detail"]


JSONS = st.recursive(
    st.none() | st.booleans() | st.integers(-10**40, 10**40) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12)
BODIES = st.one_of(
    st.fixed_dictionaries({"id": st.integers(-2**70, 2**70)},
                          optional={"attempt": JSONS, "scheduled_t": JSONS, "tier": JSONS}).map(json.dumps),
    JSONS.map(json.dumps),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)


@seed(18)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_fuzzed_bodies_never_500(srv, body):
    r = _post(srv.url, body.encode("utf-8", "surrogatepass"))
    assert r.status_code in (200, 422, 413), (r.status_code, body[:200], r.text[:200])
    assert json.loads(r.text, parse_constant=lambda c: pytest.fail(c))  # strict JSON back
    if r.status_code == 200:
        assert r.json()["tier"] == "paid"  # a `tier` in the body changes nothing


def test_log_lines_are_strict_json(srv):
    _post(srv.url, b'{"id": 7, "scheduled_t": 1e308}')
    from sim.jsonout import loads_strict

    for line in srv.log.read_text().splitlines():
        loads_strict(line)


def test_body_size_limit_413(srv):
    r = _post(srv.url, b'{"id": 1, "x": "' + b"a" * 5000 + b'"}')
    assert r.status_code == 413 and r.headers["Connection"] == "close"

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000
    r = httpx.post(f"{srv.url}/v1/images", content=chunks(), timeout=10,
                   headers={"Authorization": f"Bearer {PAID[0]}"})
    assert r.status_code == 413
    assert srv.records()[-1]["status"] == 413
    assert _post(srv.url, b'{"id": 2}').status_code == 200  # the server is fine


def _read_all(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(4096):
            out += chunk
    except TimeoutError:
        pass
    return out


def test_trickling_clients_get_408_and_are_closed(srv):
    t0 = time.monotonic()
    slow_headers = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(10)]
    for s in slow_headers:
        s.sendall(b"POST /v1/images HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    slow_body = socket.create_connection(("127.0.0.1", srv.port))
    slow_body.sendall(b"POST /v1/images HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + PAID[1].encode()
                      + b"\r\nContent-Length: 40\r\n\r\n{")
    got = [_read_all(s, 5) for s in [*slow_headers, slow_body]]
    for s in [*slow_headers, slow_body]:
        s.close()
    assert all(g.startswith(b"HTTP/1.1 408 ") for g in got), got
    assert time.monotonic() - t0 < 5  # deadlines of 0.5 s, not indefinitely
    assert _post(srv.url, b'{"id": 3}').status_code == 200


def test_connection_limit_503_with_the_rejection_headers(srv):
    socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(45)]
    try:
        time.sleep(0.2)
        late = [_read_all(s, 0.3) for s in socks[-5:]]
        for g in late:
            assert g.startswith(b"HTTP/1.1 503 "), g
            head = g.split(b"\r\n\r\n")[0].decode()
            h = dict(x.split(": ", 1) for x in head.split("\r\n")[1:])
            assert h["Retry-After"] == "1" and _fields(h["RateLimit"])["t"] == 1
    finally:
        for s in socks:
            s.close()
    time.sleep(0.2)
    assert _post(srv.url, b'{"id": 4}').status_code == 200


class _LP:  # what rejection_headers reads of a live policy
    def __init__(self, header, policy):
        self.header = header
        self.active = type("A", (), {"policy": policy})()


@pytest.mark.parametrize("reason", ["rate_limited", "quota_exceeded", "concurrency", "shed",
                                    "queue_full", "timeout", "draining", "drain_timeout",
                                    "connection_limit"])
def test_one_function_builds_every_rejections_headers(reason):
    from sim.policies import REGISTRY, Decision

    tiers = ["paid", "free"]
    X = 20.0

    def make(name, **p):
        cls = REGISTRY[name]
        return cls(cls.Params.model_validate(p), tiers)

    tb = _LP("token_bucket", make("token_bucket", rate=0.05, burst=3))
    passed = [(tb, Decision(True, limit=3, remaining=2))]
    by, ra_s, wall = None, None, None
    if reason == "rate_limited":  # the bucket's own refusal: 20 s to a token, 60 s to full
        passed, by, ra_s = [], (tb, Decision(False, "rate_limited", 20.0, 3, 0, 60.0)), 20.0
    elif reason == "quota_exceeded":
        q = _LP("daily_quota", make("daily_quota", limit=3))
        by, ra_s = (q, Decision(False, "quota_exceeded", 5000.0, 3, 0, 5000.0)), 5000.0
    elif reason == "concurrency":
        c = _LP("concurrency", make("concurrency", limit=4))
        by = (c, Decision(False, "rate_limited", None, 4, 0))
    elif reason == "draining":
        wall = 7
    h = rejection_headers(503 if reason not in ("rate_limited", "quota_exceeded") else 429, ra_s,
                          passed, X, rejected_by=by, fleet_quota=100, retry_after_wall=wall)
    ra = int(h["Retry-After"])
    items = [_fields(x.strip()) for x in h["RateLimit"].split(",")]
    assert items[-1]["r"] == 0 and items[-1]["t"] == ra
    assert ra == (wall if wall else max(1, math.ceil((ra_s or 0) / X)))
    want = by[0].header if by else "fleet"
    assert items[-1]["name"] == want and f'"{want}"' in h["RateLimit-Policy"]
    if passed:
        assert items[0] == {"name": "token_bucket", "r": 2}


def test_restart_appends_to_the_log(tmp_path):
    s = Server(tmp_path, scenario([], service_s=0.02))
    assert _post(s.url, b'{"id": 1}').status_code == 200
    assert s.stop() == 0
    s2 = Server(tmp_path, scenario([], service_s=0.02))
    try:
        assert _post(s2.url, b'{"id": 2}').status_code == 200
    finally:
        assert s2.stop() == 0
    assert [r["id"] for r in s2.records()] == [1, 2]


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", "serve", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("case", ["port", "time_scale", "binary_keys", "proc_log", "public_host",
                                  "drr"])
def test_bad_serve_flags_one_line(tmp_path, case):
    sc = scenario([])
    if case == "drr":
        sc["scheduler"] = {"discipline": "drr", "quantum_s": 0.001}
        sc["fleet"]["pools"][0]["service_time_s"] = 100.0
    path, keys = write(tmp_path, sc)
    port = str(free_port())
    args, expect = {
        "port": (["--port", "70000"], "argument --port: expected a port in 0..65535"),
        "time_scale": (["--time-scale", "inf", "--port", port], "argument --time-scale"),
        "binary_keys": (["--keys", sys.executable, "--port", port], "not UTF-8 text"),
        "proc_log": (["--keys", str(keys), "--log", "/proc/nope/r.jsonl", "--port", port], "cannot"),
        "public_host": (["--host", "0.0.0.0", "--port", port], "--host: 0.0.0.0: a non-loopback address needs --keys"),
        "drr": (["--port", port], "scheduler.quantum_s"),
    }[case]
    p = serve(str(path), *args)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert expect in lines[0], lines


def test_parse_body_contract():
    assert parse_body(b'{"id": 5, "attempt": 2, "scheduled_t": 1.5, "tier": "pro"}') == (5, 2, 1.5)
    assert parse_body(b'{"id": 5, "attempt": null}') == (5, 0, None)
    assert parse_body(b'[1]') == "body must be a JSON object"
    assert isinstance(parse_body(b'{"id": 5.0}'), str)
    sc = parse_scenario(scenario([]))
    assert sc.name == "gw_test"


def test_queue_full_503_carries_the_rejection_headers(tmp_path):
    """queue_full had Retry-After but no RateLimit fields; now the fleet's item, t = Retry-After."""
    import asyncio

    from test_gateway import burst

    s = Server(tmp_path, scenario([], service_s=5.0), "--max-queue", "0")
    try:
        got = asyncio.run(burst(s.url, [(PAID[i], 100 + i) for i in range(4)]))
    finally:
        assert s.stop() == 0
    full = [r for r in got if r.status_code == 503]
    assert full and all(r.json()["reason"] == "queue_full" for r in full)
    for r in full:
        assert_rejection_headers(r, "fleet")
        assert '"fleet";q=0' in r.headers["RateLimit-Policy"]
