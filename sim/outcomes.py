"""Every outcome a request can have other than being served: one definition for the
simulator, the gateway and the reports.

`Reason` values are the indices of the reason axis in count arrays ([tier, reason]); the
first six happen in the simulator, the last four only live (the gateway stops: draining,
drain_timeout; a real batch raised: error; a replica's limiter store was down:
limiter_unavailable). What HTTP status each maps to is the gateway's
business (sim/live/gateway.py). The fleet loop numbers its own four reasons in
KERNEL_REASONS order (sim/fleet/kernel.py R_*).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Reason(IntEnum):
    RATE_LIMITED = 0  # a limiter or a concurrency cap said no
    QUOTA_EXCEEDED = 1  # a quota is used up
    SHED = 2  # load shedding
    FILTERED = 3  # the content filter blocked it
    TIMEOUT = 4  # left the queue unserved: patience ran out, or CoDel dropped it
    QUEUE_FULL = 5  # its tier queue (or the gateway's total) was full
    DRAINING = 6  # live only: arrived while the gateway was draining
    DRAIN_TIMEOUT = 7  # live only: still queued or in service when the drain ended
    ERROR = 8  # live only: its real batch failed, or a replica could not reach the fleet
    LIMITER_UNAVAILABLE = 9  # live only: a replica's limiter store was down (fail_closed)

    @property
    def label(self) -> str:
        """The name used in summaries, logs and scenario files."""
        return self.name.lower()

    @classmethod
    def of(cls, label: str) -> Reason:
        return cls[label.upper()]


SIMULATED = tuple(r for r in Reason if r < Reason.DRAINING)
LIVE_ONLY = tuple(r for r in Reason if r >= Reason.DRAINING)
# The reason axis of the simulator's count arrays, by name.
REASONS = tuple(r.label for r in SIMULATED)
REASON_CODE = {r: i for i, r in enumerate(REASONS)}
# The fleet loop's reasons, in its own order (R_QUEUE_FULL, R_SHED, R_TIMEOUT, R_CONCURRENCY).
KERNEL_REASONS = (Reason.QUEUE_FULL, Reason.SHED, Reason.TIMEOUT, Reason.RATE_LIMITED)
# Where each reason decided inside the fleet lands on the reason axis.
KERNEL_REASON = np.array([int(r) for r in KERNEL_REASONS], dtype=np.int64)
