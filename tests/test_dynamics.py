"""Fleet dynamics with exact timing (autoscale's provisioning delay, cool-down and ceiling; a
failure at its drawn instant, the batch in hand finished; throttling's onset), and the fleet's
own mechanics: queue storage growth, GPU retire and un-retire."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import queue_scenario

from sim.engine import Run, build_pools
from sim.fleet import kernel as K
from sim.fleet.fleet import Fleet
from sim.scenario import parse_scenario


def traced(d: dict) -> Run:
    return Run(parse_scenario(d), trace=True).execute()


def batches(r: Run) -> list[tuple[float, float, int]]:
    """(start, duration, worker) of every finished batch, from the trace; durations rounded
    to 1e-9 s (end - start carries the float rounding of the clock)."""
    start, out, seen = {}, [], set()
    for kind, i, t, a in r.trace_events:
        if kind == K.STARTED:
            start[i] = t
        elif kind == K.COMPLETED and (a, start[i]) not in seen:
            seen.add((a, start[i]))
            out.append((start[i], round(t - start[i], 9), a))
    return sorted(out)


def test_autoscale_waits_the_provisioning_delay_the_cooldown_and_stops_at_the_ceiling():
    pol = [{"policy": "autoscale", "target": 0.7, "period_s": 10, "provisioning_delay_s": 25,
            "cooldown_s": 60, "min_gpus": 1, "max_gpus": 6}]
    d = queue_scenario(8.0, 1.0, 2, 600, seed=3, dist="deterministic", policies=pol,
                       demand={"points": [[0, 8.0], [299, 8.0], [300, 0.3], [600, 0.3]],
                               "users": 1000})
    d["fleet"]["pools"][0]["max_gpus"] = 10
    r = traced(d)
    log = [(t, n) for t, j, n in r.gpu_log[1:]]
    ups = [(t, n) for (t, n), (_, m) in zip(log, [(0, 2), *log], strict=False) if n > m]
    downs = [(t, n) for (t, n), (_, m) in zip(log, [(0, 2), *log], strict=False) if n < m]
    # overloaded from t = 0: the first decision (t = 10) wants ceil(2 x 1.0 / 0.7) = 3, live
    # after the provisioning delay, exactly
    assert ups[0] == (35.0, 3)
    for t, _ in ups:  # every GPU comes up 25 s after a decision on the 10 s grid
        assert (t - 25) % 10 == 0
    assert max(n for _, n in log) == 6 and all(n <= 6 for _, n in log)  # the ceiling
    assert downs, log  # demand fell at 300 s: it scales in
    last_decision = max(t - 25 for t, _ in ups if t - 25 < downs[0][0])
    assert downs[0][0] - last_decision >= 60 and downs[0][0] % 10 == 0  # after the cool-down
    for (t0, _), (t1, _) in zip(downs, downs[1:], strict=False):
        assert t1 - t0 >= 60
    # GPUs that serve are the ones logged: every batch ran on a live GPU
    assert r.policies[0].policy.report()["max_live_gpus"] == 6


def test_a_failure_comes_at_its_drawn_instant_and_the_batch_in_hand_finishes():
    pol = [{"policy": "failures", "mtbf_h": 0.01, "mttr_h": 1000, "seed": 4}]
    d = queue_scenario(0.9, 1 / 3.0, 1, 300, seed=2, dist="deterministic", policies=pol)
    r = traced(d)
    t_fail = np.random.default_rng([d["seed"], 5, 4]).exponential(0.01 * 3600)
    assert t_fail < 300
    assert r.gpu_log[1] == (pytest.approx(t_fail, abs=0), 0, 0)
    b = batches(r)
    before = [x for x in b if x[0] <= t_fail]
    assert before
    assert not [x for x in b if x[0] > t_fail]  # no batch starts on the failed GPU
    s, dur, _ = before[-1]
    if s + dur > t_fail:  # the batch in hand when it failed is served
        assert dur == 3.0
    S = r.fleet.S
    assert S.admitted.sum() == S.completed.sum() + S.n_sys.sum() + S.abandoned.sum()


def test_throttling_slows_batches_from_its_onset_and_recovers():
    pol = [{"policy": "throttling", "utilization": 0.9, "after_s": 30, "slowdown": 1.5,
            "cool_below": 0.7, "check_s": 10}]
    d = queue_scenario(3.0, 1.0, 2, 400, seed=6, dist="deterministic", policies=pol,
                       demand={"points": [[0, 3.0], [150, 3.0], [151, 0.4], [400, 0.4]],
                               "users": 1000})
    r = traced(d)
    b = batches(r)
    # hot at the checks at 10, 20 and 30 s: throttled from 30 s exactly
    assert all(dur == 1.0 for s, dur, _ in b if s < 30)
    slow = [s for s, dur, _ in b if dur == 1.5]
    assert slow and min(slow) == pytest.approx(30.0, abs=1.0) and min(slow) >= 30
    t_off = min(s for s, dur, _ in b if s > 30 and dur == 1.0)
    assert all(dur == 1.5 for s, dur, _ in b if 30 <= s < t_off)
    assert all(dur == 1.0 for s, dur, _ in b if s >= t_off)  # it cooled: one episode
    p = r.policies[0].policy
    assert p.episodes == 1
    assert p.throttled_s == pytest.approx(10 * np.ceil((t_off - 30) / 10), abs=10)


def _fleet(cap: int, gpus: int = 1, service: float = 1.0, max_batch: int = 1) -> Fleet:
    sc = parse_scenario(queue_scenario(1.0, 1 / service, gpus, 100, dist="deterministic",
                                       max_batch=max_batch))
    return Fleet(build_pools(sc), sc.tiers, sc.scheduler, 100, 1.0, 0.0, 0, queue_capacity=cap,
                 outbox=True)


def _feed(f: Fleet, t: np.ndarray, until: float):
    n = len(t)
    fate = f.advance(t, np.arange(n), np.zeros(n, np.int64), np.full(n, -1), np.full(n, np.inf, np.float32),
                     np.ones(n), np.zeros(n), until)
    return fate, f.outbox()


def test_queue_storage_grows_without_changing_anything():
    t = np.sort(np.random.default_rng(1).uniform(0, 5, 300))
    small, big = _fleet(2), _fleet(4096)
    a, b = _feed(small, t, 50.0), _feed(big, t, 50.0)
    assert small.S.q_t.shape[1] >= 256  # grown from 2
    assert (a[0] == b[0]).all()
    for x, y in zip(a[1], b[1], strict=True):
        assert np.array_equal(x, y)
    assert (small.S.q_size == big.S.q_size).all() and small.S.q_size.sum() > 200


def test_gpus_retire_after_their_batch_and_can_be_unretired():
    f = _fleet(64, gpus=2)
    _feed(f, np.array([0.0, 0.0]), 0.5)
    S = f.S
    assert (S.w_state[:2] == K.BUSY).all() and f.gpus(0) == 2
    assert f.set_gpus(0, 0) == 0
    assert (S.w_state[:2] == K.RETIRING).all() and f.gpus(0) == 0
    assert S.n_active[0] == 2 and S.n_busy[0] == 2  # still running their batches
    assert f.set_gpus(0, 1) == 1  # one is un-retired: it keeps its batch and stays
    assert sorted(S.w_state[:2].tolist()) == [K.BUSY, K.RETIRING]
    _, (kind, ids, ts, aux) = _feed(f, np.array([1.5]), 3.0)
    done = ts[kind == K.COMPLETED]
    assert list(done[:2]) == [1.0, 1.0]  # both batches finished
    assert S.n_active[0] == 1 and f.gpus(0) == 1
    assert sorted(S.w_state[:2].tolist()) == [K.OFF, K.IDLE]
    started = ts[(kind == K.STARTED) & (ids == 0)]
    assert list(started) == [1.5] and list(ts[(kind == K.COMPLETED) & (ids == 0)])[-1] == 2.5


def test_outbox_grows_and_keeps_every_record_in_order():
    f = _fleet(4096, gpus=4)
    t = np.sort(np.random.default_rng(2).uniform(0, 30, 3000))
    fate, (kind, ids, ts, _) = _feed(f, t, 1000.0)
    assert len(f.S.ob_kind) > 1024  # grown during the call
    assert (fate == 0).all()
    assert sorted(ids[kind == K.STARTED].tolist()) == list(range(3000))
    assert sorted(ids[kind == K.COMPLETED].tolist()) == list(range(3000))
    assert (np.diff(ts) >= 0).all()  # in time order


def test_external_batches_end_when_the_caller_says():
    """--kernel torch, --gpu-procs: a batch's end is reported (Fleet.complete), not
    scheduled; the cost model's drawn end is left in w_until (a worker process of the cost
    model sleeps until it)."""
    sc = parse_scenario(queue_scenario(1.0, 1.0, 1, 100, dist="deterministic", max_batch=2))
    f = Fleet(build_pools(sc), sc.tiers, sc.scheduler, 100, 1.0, 0.0, 0, outbox=True, external=True)
    _, (kind, ids, ts, aux) = _feed(f, np.array([0.0]), 0.0)
    assert kind.tolist() == [K.STARTED, K.BATCH] and aux[1] == 1
    w = int(ids[1])
    assert f.S.w_until[w] == pytest.approx(1.0)  # 0 + the deterministic 1 s of a batch of one
    _, (kind, *_rest) = _feed(f, np.array([0.5, 0.5]), 10.0)  # queued behind it
    assert len(kind) == 0 and f.next_event() == np.inf  # nothing drawn: it waits for the caller
    f.complete(w, 12.5)
    _, (kind, ids, ts, aux) = _feed(f, np.zeros(0), 12.5)
    assert [(k, t) for k, t in zip(kind.tolist(), ts.tolist(), strict=True)] == [
        (K.COMPLETED, 12.5), (K.STARTED, 12.5), (K.STARTED, 12.5), (K.BATCH, 12.5)]
    assert aux[-1] == 2
    with pytest.raises(ValueError):
        Fleet(build_pools(sc), sc.tiers, sc.scheduler, 100, 1.0, 0.0, 0, external=True)
