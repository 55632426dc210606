"""The headers of every rejection the gateway sends, built in one place.

A 429 or 503 carries Retry-After (whole wall seconds, at least 1) and the RateLimit-Policy /
RateLimit fields (draft-ietf-httpapi-ratelimit-headers-10): the fields of the policies the
request passed, as on a 200, plus one item for what rejected it, whose `t` is the Retry-After
itself, so a client reading either waits the same time. Fleet-side rejections (queue_full,
shed, timeout, draining, drain_timeout, the connection limit) have no policy of their own:
their item is `"fleet";r=0;t=<Retry-After>` with `"fleet";q=<queue limit>` in the policy.
Client errors (408, 413, 422) carry `Connection: close` when the connection is dropped.
"""

from __future__ import annotations

import math

from sim.live.admission import quota, ratelimit_fields, wall_s

FLEET = '"fleet"'
RETRIED = (429, 503)  # statuses that tell the client when to come back


def rejection_headers(status: int, retry_after_s: float | None = None, infos=(),
                      time_scale: float = 1.0, *, rejected_by=None, fleet_quota: int | None = None,
                      retry_after_wall: int | None = None, close: bool = False) -> dict[str, str]:
    """Headers of a rejection.

    status: the HTTP status; retry_after_s: simulated seconds until a retry would pass (None:
    unknown, 1 s); infos: (LivePolicy, Decision) of the policies the request passed;
    rejected_by: the (LivePolicy, Decision) that rejected it, None for the fleet;
    retry_after_wall: wall seconds when already known (the drain's remaining time)."""
    out: dict[str, str] = {}
    if status in RETRIED:
        if retry_after_wall is None:
            sim = retry_after_s if retry_after_s is not None and math.isfinite(retry_after_s) else 0.0
            retry_after_wall = wall_s(sim, time_scale, 1)
        ra = max(1, int(retry_after_wall))
        out = ratelimit_fields(list(infos), time_scale)
        if rejected_by is not None:
            lp, d = rejected_by
            name = f'"{lp.header}"'
            if d.limit is None:  # a policy without a quota to state (a content filter...)
                pol = name
            else:
                q, w = quota(lp.active.policy, d)
                pol = f"{name};q={q}" + (f";w={wall_s(w, time_scale, 1)}" if w else "")
        else:
            name, pol = FLEET, FLEET + (f";q={fleet_quota}" if fleet_quota is not None else "")
        out["RateLimit-Policy"] = ", ".join(x for x in (out.get("RateLimit-Policy"), pol) if x)
        out["RateLimit"] = ", ".join(x for x in (out.get("RateLimit"), f"{name};r=0;t={ra}") if x)
        out["Retry-After"] = str(ra)
    if close:
        out["Connection"] = "close"
    return out
