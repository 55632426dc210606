"""What the gateway accepts from the network before a request reaches admission.

* The body of POST /v1/images is checked by a pydantic model (`ImageRequest`): finite numbers
  in stated ranges, at most MAX_DEPTH levels and MAX_INT_DIGITS digits (sim/inputs.py), no
  NaN/Infinity; anything else is a 422 with the reason, logged like every request.
* `BodyGuard` (ASGI, around the app) reads the whole body first, within `max_body` bytes
  (413) and `body_timeout` wall seconds (408), so the app never waits on a slow client.
* `guarded_protocol` (uvicorn's h11 protocol) closes a connection whose request headers take
  longer than `header_timeout` (408), and answers 503 at once beyond `max_connections` open
  connections (each queued request holds one, so this bounds memory and file descriptors).
Every rejection's headers come from sim.live.headers.rejection_headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import h11
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from uvicorn.protocols.http.h11_impl import H11Protocol

from sim.errors import InputError
from sim.inputs import load_json
from sim.jsonout import dumps
from sim.live.headers import rejection_headers

# bytes (a request body is ~60 bytes of JSON); wall seconds for a request's line and headers,
# and for its body. Defined in serve.py, which must parse flags without importing FastAPI.
from sim.live.serve import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_BODY  # noqa: E402

MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    max_body: int = MAX_BODY
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    max_connections: int = 20000


class ImageRequest(BaseModel):
    """The body of POST /v1/images. Other fields (a `tier` among them) are ignored: the key
    alone decides the user and tier."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)
    id: int = Field(ge=-MAX_ID, le=MAX_ID)
    attempt: int | None = Field(0, ge=0, le=10**6)
    scheduled_t: float | None = Field(None, ge=-1e12, le=1e12, description="schedule time, s")


def parse_body(raw: bytes) -> tuple[int, int, float | None] | str:
    """(id, attempt, scheduled_t), or the reason the body is refused (one line)."""
    if len(raw) > MAX_BODY:
        return f"body larger than {MAX_BODY} bytes"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8 JSON"
    if not text.strip():
        return "body is not JSON: empty"
    try:
        data = load_json(text, "body")
    except InputError as e:
        return f"body is not JSON: {e.message}" if "JSON" not in e.message else e.message
    if not isinstance(data, dict):
        return "body must be a JSON object"
    try:
        b = ImageRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "body"
        return f"{where}: {err['msg']}"
    return b.id, b.attempt or 0, None if b.scheduled_t is None else float(b.scheduled_t)


def http_record(t: float, status: int, reason: str, detail: str | None = None,
                who: tuple[int, str] | None = None, rid: int | None = None) -> dict:
    """The JSONL line of a request refused before admission (same keys as a served one's)."""
    return {"id": rid, "attempt": None, "user": None if who is None else who[0],
            "tier": None if who is None else who[1], "scheduled_t": None, "arrival_s": round(t, 6),
            "start_s": None, "done_s": None, "status": status, "reason": reason, "wait_s": None,
            "latency_s": None, "batch": None, "steps": None, "pool": None, "detail": detail}


# ---- a raw response written by the protocol or the guard (before or around the app) ----


def _raw_response(status: int, reason: str, headers: dict[str, str]) -> bytes:
    body = dumps({"detail": reason}).encode()
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "connection"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_PHRASES = {408: "Request Timeout", 413: "Content Too Large", 503: "Service Unavailable"}

OnReject = Callable[[int, str], None]  # (status, reason): the gateway logs it


def guarded_protocol(limits: Limits, on_reject: OnReject | None = None) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header-read deadline and a connection limit."""

    class Guarded(H11Protocol):
        _hdr_timer: asyncio.TimerHandle | None = None
        _bytes = 0

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                headers = rejection_headers(503, 1.0, (), 1.0, fleet_quota=limits.max_connections)
                self._refuse(503, "connection_limit", headers)
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._bytes = 0
            self._hdr_timer = self.loop.call_later(limits.header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._hdr_timer is not None:
                self._hdr_timer.cancel()
                self._hdr_timer = None

        def _refuse(self, status: int, reason: str, headers: dict[str, str]) -> None:
            if on_reject is not None:
                on_reject(status, reason)
            if not self.transport.is_closing():
                self.transport.write(_raw_response(status, reason, headers))
                self.transport.close()

        def _headers_late(self) -> None:
            self._hdr_timer = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return
            if self._bytes == 0:  # an idle keep-alive connection: just close it
                self.transport.close()
                return
            self._refuse(408, "header_timeout", rejection_headers(408, close=True))

        def data_received(self, data: bytes) -> None:
            self._bytes += len(data)
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the headers are in: the body has its own deadline

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Guarded


class BodyGuard:
    """ASGI middleware: the body is read here, whole, within limits, then replayed to the app."""

    def __init__(self, app, limits: Limits, on_reject: OnReject | None = None):
        self.app, self.limits, self.on_reject = app, limits, on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        lim = self.limits
        cl = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if cl is not None and (not cl.isdigit() or len(cl) > 18 or int(cl) > lim.max_body):
            return await self._refuse(send, scope, 413, "body_too_large")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lim.body_timeout
        chunks, size, more = [], 0, True
        while more:
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise TimeoutError
                msg = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return await self._refuse(send, scope, 408, "body_timeout")
            if msg["type"] == "http.disconnect":
                return None
            body = msg.get("body", b"")
            size += len(body)
            if size > lim.max_body:
                return await self._refuse(send, scope, 413, "body_too_large")
            chunks.append(body)
            more = msg.get("more_body", False)
        whole = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as uvicorn does

        return await self.app(scope, replay, send)

    async def _refuse(self, send, scope, status: int, reason: str) -> None:
        if self.on_reject is not None:
            self.on_reject(status, reason)
        headers = rejection_headers(status, close=True)
        body = dumps({"detail": reason}).encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})
