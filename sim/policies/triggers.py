"""Incident response: a policy change that fires on a metric rather than at a fixed time.

A schedule entry with `trigger:` (sim/scenario.py, Trigger) is watched every `check_s`: the
metric over the last check_s is compared with its threshold; once it has been above at every
check for `for` seconds the trigger fires, and the change (enabled, params) lands `delay_s`
later, the operator's reaction time. Each entry fires once. The same process runs in the
simulator and the live gateway (it reads through the gates; the simulator's run also gives the
admission policies' rejections). When each fired, and why, goes into the summary.
"""

from __future__ import annotations

import numpy as np

from sim.metrics.sketch import quantiles
from sim.policies.concurrency import LatencyWindow


class Reading:
    """One metric of a trigger, over the time since the last reading."""

    def __init__(self, host, trigger, tiers: list[str]):
        self.host, self.tr = host, trigger
        g = host.gates
        self.k = None if trigger.tier is None else tiers.index(trigger.tier)
        if trigger.metric == "utilization":
            self.prev = g.busy_area()
        elif trigger.metric == "queue_wait":
            self.prev = g.queue_area(self.k)
        elif trigger.metric == "p95":
            mask = np.zeros(len(tiers), bool)
            mask[self.k] = True
            self.win = LatencyWindow(g, mask)
        else:
            self.prev = self._counts()

    def _counts(self) -> tuple[int, int]:
        counts = getattr(self.host, "tier_counts", None)  # the simulator: every reason
        return counts(self.k) if counts is not None else self.host.gates.tier_counts(self.k)

    def read(self) -> float:
        """The metric since the last reading (nan when there is nothing to measure)."""
        m, g = self.tr.metric, self.host.gates
        if m == "p95":
            h = self.win.read()
            return float(quantiles(h, (0.95,), series=True)[0]) if h.sum() else float("nan")
        now = g.busy_area() if m == "utilization" else g.queue_area(self.k) if m == "queue_wait" \
            else self._counts()
        (a0, b0), (a1, b1) = self.prev, now
        self.prev = now
        if m == "rejection_share":  # (offered, rejected)
            a0, b0, a1, b1 = b0, a0, b1, a1
        da, db = a1 - a0, b1 - b0
        return da / db if db > 0 else float("nan")


def watch(host, env, ap, spec, index: int, apply):
    """SimPy process: fire schedule entry `index` of the policy when its trigger holds, then
    `apply(when)` after the reaction delay; the firing is recorded on `ap.fired`."""
    when = spec.schedule[index]
    tr = when.trigger
    reading = Reading(host, tr, [t.name for t in host.sc.tiers])
    since = None  # first check of the current run of checks above the threshold
    while True:
        yield env.timeout(tr.check_s)
        host.sync(env.now)
        v = reading.read()
        if not v > tr.above:  # nan (nothing measured) counts as not above
            since = None
            continue
        if since is None:
            since = env.now - tr.check_s  # the window that first read above began then
        if env.now - since >= tr.for_s:
            break
    fired_at = env.now
    if when.delay_s:
        yield env.timeout(when.delay_s)
        host.sync(env.now)
    apply(when)
    what = ("on" if when.enabled else "off") if when.enabled is not None else ""
    if when.params is not None:
        changed = when.params.model_dump(exclude_unset=True)
        what = (what + " " if what else "") + ", ".join(f"{k}={v}" for k, v in changed.items())
    ap.fired.append({
        "entry": index, "metric": tr.metric, "tier": tr.tier, "threshold": tr.above,
        "value": round(float(v), 6), "above_since_h": round(since / 3600, 4),
        "fired_h": round(fired_at / 3600, 4), "applied_h": round(env.now / 3600, 4),
        "change": what or "refresh",
        "why": f"{tr.tier + ' ' if tr.tier else ''}{tr.metric} {v:.4g} > {tr.above:g} at every check "
               f"since {since / 3600:.2f} h (for {tr.for_s / 3600:g} h); applied {when.delay_s / 3600:g} h "
               f"later (operator delay)",
    })
