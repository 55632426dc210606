"""Named random streams: every draw of a run comes from one of these, keyed by the scenario's
seed, so a scenario and seed give identical results and a change to one stream leaves the
others alone (common random numbers across policy variants).

`stream(name, seed, *more)` is numpy's default_rng([seed, KEY, *more]). The keys are the
numbers the streams have always had, so summaries stay byte-identical.
"""

from __future__ import annotations

import numpy as np
from numba import njit

STREAMS = {
    "arrivals": 1,  # chunk k of demand: sim.demand.chunk_arrivals ([seed, 1, k])
    "service_noise": 2,  # chunk k's per-request service noise (exponential, normal)
    "run": 3,  # draws made during a run: retries, conversions, social offspring
    "gateway_noise": 4,  # the live gateway's per-request service noise
    "failures": 5,  # GPU failure and repair times (+ the policy's own seed)
    "content_filter": 77,  # the content filter's verdicts (+ the policy's own seed)
    "epochs": 6,  # lengths of a cycling pool's empty epochs (sim.fleet.kernel)
    "classes": 8,  # request classes, hashed from each request's service noise (sim.classes)
    "request_noise": 7,  # keyed draws of one request (id, attempt): keyed_uniform below
    "spot": 9,  # spot preemption instants (+ the purchase block's seed, the pool's index)
    "regions": 10,  # a user's region when the demand has no blocks: hashed from its id (sim.regions)
}


def stream(name: str, seed: int, *more: int) -> np.random.Generator:
    """The generator of a named stream for this seed (and sub-keys)."""
    return np.random.default_rng([int(seed), STREAMS[name], *(int(x) for x in more)])


@njit(cache=True, nogil=True)
def _noise(g, n):  # pragma: no cover - compiled
    return g.exponential(1.0, n), g.standard_normal(n)


def service_noise(g: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The service noise of n requests from g: n exponential(1) draws, then n standard
    normal ones, as numpy's `g.exponential(1.0, n), g.standard_normal(n)` draw them (numba's
    Generator runs numpy's own algorithms on g's bit generator: the same numbers and g's
    state after, at ~2/3 of the time; tests/test_rng.py checks it against numpy)."""
    return _noise(g, n)


def key(name: str, seed: int) -> int:
    """A 63-bit integer key of a stream, for generators outside numpy (the fleet loop's
    counter-based draws)."""
    return int(np.random.SeedSequence([int(seed), STREAMS[name]]).generate_state(1, np.uint64)[0] >> 1)


_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_ULP = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True, nogil=True, inline="always")
def mix64(x):  # pragma: no cover - compiled
    """splitmix64's finaliser (Steele, Lea and Flood 2014): a bijection of uint64, the one
    hash of this module (compiled: the fleet loop's and the class draw's callers inline it)."""
    x = x + _GAMMA
    x = (x ^ (x >> _S30)) * _C1
    x = (x ^ (x >> _S27)) * _C2
    return x ^ (x >> _S31)


@njit(cache=True, nogil=True)
def _mix_all(x, out):  # pragma: no cover - compiled
    for i in range(len(x)):
        out[i] = mix64(x[i])


@njit(cache=True, nogil=True, inline="always")
def unit_of(bits, salt):  # pragma: no cover - compiled
    """uniform_of for one value's float bits (salt: stream_salt of the stream)."""
    return np.float64(mix64(bits + salt) >> _S11) * _ULP


@njit(cache=True, nogil=True)
def _uniform_all(bits, salt, out):  # pragma: no cover - compiled
    for i in range(len(bits)):
        out[i] = unit_of(bits[i], salt)


def _mix(x: np.ndarray) -> np.ndarray:
    """mix64 of each element (any shape)."""
    a = np.asarray(x, dtype=np.uint64)
    out = np.empty(a.shape, np.uint64)
    _mix_all(a.ravel(), out.reshape(-1))
    return out if a.ndim else out[()]


def stream_salt(name: str) -> np.uint64:
    """What uniform_of adds to a value's bits before mixing for stream `name`."""
    # mix64 adds one gamma itself: bits + stream * gamma, as this has always hashed
    return np.uint64(((STREAMS[name] - 1) * int(_GAMMA)) % 2**64)


def uniform_of(x: np.ndarray, name: str) -> np.ndarray:
    """A uniform [0, 1) per value of x, a splitmix64 hash of its float bits keyed by a stream:
    a draw tied to a request's own random variate (common random numbers with no new
    sequence). Independent of x in practice: the hash scrambles every bit."""
    bits = np.ascontiguousarray(x, np.float64).view(np.uint64)
    out = np.empty(bits.shape)
    _uniform_all(bits.reshape(-1), stream_salt(name), out.reshape(-1))
    return out


# ---- keyed draws: a request's own random numbers, whoever serves it ----
# A counter-based generator (splitmix64 of the stream's key, the request's id, its attempt
# and a lane): the same request gets the same numbers in the live gateway and in the
# simulator's replay of its schedule, whatever order the two sides meet requests in
# (common random numbers: a live-vs-simulated difference is then fidelity, not sampling).
LANES = {"exponential": 0, "normal_r": 1, "normal_theta": 2,  # service noise
         "retry_probability": 3, "retry_backoff": 4}  # the retry rule's draws
def _u64(v) -> np.ndarray:
    """Integers (any size, negative too) as uint64, modulo 2**64."""
    a = np.asarray(v)
    if a.dtype.kind in "iu":
        return a.astype(np.int64 if a.dtype.kind == "i" else np.uint64).view(np.uint64)
    return np.array([int(x) % 2**64 for x in np.ravel(a)], np.uint64).reshape(a.shape)


def keyed_uniform(seed: int, ids, attempts, lane: str, name: str = "request_noise") -> np.ndarray:
    """One uniform in (0, 1) per (id, attempt), for a lane of LANES: a pure function of
    (seed, stream, id, attempt, lane), vectorised."""
    with np.errstate(over="ignore"):
        h = _mix(_u64(ids) ^ np.uint64(key(name, seed)))
        h = _mix(h ^ _u64(attempts))
        h = _mix(h + np.uint64(LANES[lane]))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def request_noise(seed: int, ids, attempts) -> tuple[np.ndarray, np.ndarray]:
    """The service noise of requests keyed by (id, attempt): exponential(1) draws (pools
    with exponential service) and standard normal draws (Box-Muller; lognormal profile
    noise), as the fleet loop takes them."""
    e = -np.log(keyed_uniform(seed, ids, attempts, "exponential"))
    r = np.sqrt(-2.0 * np.log(keyed_uniform(seed, ids, attempts, "normal_r")))
    z = r * np.cos(2.0 * np.pi * keyed_uniform(seed, ids, attempts, "normal_theta"))
    return e, z


def warm() -> None:
    """Load the compiled hashes now: a real-time caller's first draw (the Locust client's
    first retry) would otherwise pause ~0.1 s while numba loads them."""
    _mix(np.zeros(1, np.uint64))
    uniform_of(np.zeros(1), "classes")
