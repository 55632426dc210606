"""`floodgate validate`: the simulator against a live gateway driven by Locust.

One schedule (sim/live/schedule.py) drives both. Live: the gateway (`floodgate serve`) and
a Locust process replaying the schedule open-loop, on loopback, bounded in time; each side
writes one record per attempt. Simulated: the same scenario with the schedule as its demand,
same time scale, several seeds: the first the scenario's, where each request draws the
service noise and retry jitter the live side drew (keyed by schedule id and attempt), the
others other seeds (the band; arrivals do not differ).
Then per tier, over the whole run and below and above saturation: latency percentiles,
rejection rates by reason, throughput per 10 s window and queue depth, simulated vs live
(sim/report/validation_report.py writes the report). The output folder appears atomically;
when the live side fails, its logs are kept in `<out>.failed/`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sim.args import float_in, int_in
from sim.errors import InputError
from sim.jsonout import dumps
from sim.live import schedule
from sim.live.fidelity import (  # noqa: F401 (Setup: part of this module's interface)
    BLOCK_WALL_S,
    QS,
    TARGETS,
    Setup,
    client_figures,
    compare,
    met,
    pairs,
    pct,
    series,
)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LEAD_S = 0.5  # Locust's start-up to the schedule's t = 0, wall seconds
START_S = 10.0  # from starting the gateway to the common t = 0 (gateway and Locust up by then)
START_REPLICAS_S = 40.0  # the same for a fleet and N replicas (each imports the simulator)
START_LOCUST_WORKERS_S = 10.0  # more for a Locust master and K workers (each imports Locust)


class LiveError(Exception):
    """The live side failed (a process died, nothing was recorded)."""


# ---- the live side ----


def pool_size(n: int) -> int:
    """Locust's connection pool: connections open lazily, so one as large as the schedule
    never makes a request wait for a connection."""
    return max(64, min(n + 16, 20000))


def _kill_group(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


def _start_locust(st: Setup, host: str, run_time: int, env: dict, lc_log: Path, d: Path,
                  live: Path, locust_workers: int = 0) -> tuple[subprocess.Popen, list[subprocess.Popen]]:
    """Locust in its own process (it monkey-patches with gevent), replaying the schedule from
    FG_START_AT, its output to lc_log; or a master and `locust_workers` workers, worker i
    the users with user % K == i. Returns the (master) process and the workers."""
    from sim.live.serve import free_port

    k = max(1, locust_workers)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "--host", host, "-u", str(k), "-r", str(k), "--run-time", f"{run_time}s",
           "--stop-timeout", str(math.ceil(st.drain + 5)), "--only-summary",
           "--loglevel", "WARNING"]
    if locust_workers:
        mport = free_port()
        cmd += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(mport),
                "--expect-workers", str(k), "--expect-workers-max-wait", str(math.ceil(START_S * 5))]
    workers: list[subprocess.Popen] = []
    with open(lc_log, "w") as out:
        loc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=str(d))
    for i in range(locust_workers):
        wcmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
                "--master-host", "127.0.0.1", "--master-port", str(mport),
                "--loglevel", "WARNING"]
        wenv = {**env, "FG_PART": f"{i}/{k}", "FG_OUT": str(live / f"client-{i}.jsonl")}
        with open(live / f"locust-{i}.log", "w") as wout:
            workers.append(subprocess.Popen(wcmd, env=wenv, stdout=wout, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=str(d)))
    return loc, workers


def run_live(st: Setup, d: Path, log=sys.stderr, replicas: int | None = None,
             redis_url: str | None = None, sub: str = "live", locust_workers: int = 0,
             gpu_procs: int = 0) -> dict:
    """Gateway (or a fleet and `replicas` replicas, sharing `redis_url` or each with its
    own limiter state) + Locust on loopback (one process, or a master and `locust_workers`
    workers, the schedule split by user); batches in `gpu_procs` GPU worker processes (0: in
    the fleet's process); returns paths and the Locust exit code."""
    from sim.live.serve import free_port, start_server, stop_server

    d = d.resolve()  # the subprocesses run elsewhere
    live = d / sub
    live.mkdir()
    gw_log, cl_log, lc_log = live / "gateway.jsonl", live / "client.jsonl", live / "locust.log"
    with open(d / "schedule.csv") as f:
        n = sum(1 for _ in f) - 1
    retry = st.sc.demand.retry
    env = {**os.environ, "FG_SCHEDULE": str(d / "schedule.csv"), "FG_OUT": str(cl_log),
           "FG_TIME_SCALE": repr(st.X), "FG_HORIZON": repr(st.horizon),
           "FG_DRAIN": repr(st.drain), "FG_LEAD": repr(LEAD_S), "FG_SEED": str(st.sc.seed),
           "FG_CONCURRENCY": str(pool_size(n)),
           "FG_RETRY": retry.model_dump_json() if retry is not None else "",
           "FG_TIERS": json.dumps([[t.name, t.patience_s] for t in st.sc.tiers])}
    run_time = math.ceil(START_S + st.duration + st.drain + 10
                         + (START_LOCUST_WORKERS_S if locust_workers else 0.0))
    server = loc = None
    workers: list[subprocess.Popen] = []
    t0 = time.monotonic()
    load0 = os.getloadavg()  # live timing depends on what else the machine runs
    try:
        port = free_port()
        # one origin for the gateway's clock (schedules, autoscaler, failures) and the replay
        t_launch = time.time()
        start_at = t_launch + (START_REPLICAS_S if replicas else START_S) + \
            (START_LOCUST_WORKERS_S if locust_workers else 0.0)
        env["FG_START_AT"] = repr(start_at)
        try:
            if replicas:
                from sim.live.deploy import start_deployment

                extra = ["--time-scale", repr(st.X), "--keys", str(d / "keys.csv"),
                         "--kernel", st.kernel, "--start-at", repr(start_at),
                         "--gpu-procs", str(gpu_procs)]
                server, dep = start_deployment(live, st.path.resolve(), replicas,
                                               extra + (["--redis", redis_url] if redis_url else []),
                                               log=gw_log)
                env["FG_HOSTS"] = ",".join(dep["replicas"])
                host = dep["replicas"][0]
                if time.time() > start_at - 2 * LEAD_S:  # Locust would start behind schedule
                    raise LiveError(f"the deployment took {time.time() - start_at + START_REPLICAS_S:.0f} s "
                                    f"to start (more than {START_REPLICAS_S:g} s): the machine is too busy")
            else:
                # Locust first, so that its start-up (imports, the schedule) overlaps the
                # gateway's: started one after the other on a busy machine, Locust began
                # behind t = 0 and sent its first requests in one burst
                host = f"http://127.0.0.1:{port}"
                loc, workers = _start_locust(st, host, run_time, env, lc_log, d, live, locust_workers)
                server = start_server(str(st.path.resolve()), port, st.X, str(d / "keys.csv"),
                                      str(gw_log), ("--kernel", st.kernel, "--start-at", repr(start_at),
                                                    "--gpu-procs", str(gpu_procs)))
                if time.time() > start_at - LEAD_S:
                    raise LiveError(f"the gateway took {time.time() - t_launch:.0f} s to start "
                                    f"(more than {start_at - t_launch - LEAD_S:.0f} s): the machine is too busy")
        except RuntimeError as e:
            raise LiveError(str(e)) from None
        print(f"gateway up on {host}; Locust replays {n} requests over {st.duration:g} s",
              file=log)
        if loc is None:
            loc, workers = _start_locust(st, host, run_time, env, lc_log, d, live, locust_workers)
        k = max(1, locust_workers)
        try:
            rc = loc.wait(timeout=run_time + st.drain + 30)
            wrc = [w.wait(timeout=30) for w in workers]
        except subprocess.TimeoutExpired:
            raise LiveError(f"Locust ran past {run_time + st.drain + 30:.0f} s; see {lc_log.name}") from None
        bad = [i for i, c in enumerate(wrc if locust_workers else []) if c not in (0, 1)]
        if bad:
            raise LiveError(f"Locust worker {bad[0]} exited with {wrc[bad[0]]}; see locust-{bad[0]}.log")
        if locust_workers:  # one client log, the parts' records in turn
            with open(cl_log, "w") as f:
                for i in range(k):
                    p = live / f"client-{i}.jsonl"
                    f.write(p.read_text() if p.exists() else "")
    finally:
        for w in workers:
            _kill_group(w)
        if loc is not None:
            _kill_group(loc)
        if server is not None:
            stop_server(server, timeout=st.drain + 30)
    wall = time.monotonic() - t0
    if rc not in (0, 1):  # 1: some request failed (recorded per attempt); anything else: Locust did
        lines = [x for x in lc_log.read_text().splitlines() if x.strip()]
        errs = [x for x in lines if "Error" in x or "Exception" in x] or lines or [""]
        raise LiveError(f"Locust exited with {rc}: {errs[-1].strip()}")
    if not cl_log.exists() or not gw_log.exists():
        raise LiveError("no per-request records from Locust or the gateway")
    out = {"gateway": gw_log, "client": cl_log, "gpus": live / "gpus.json", "locust_rc": rc,
           "wall_s": wall, "loadavg": [round(x, 2) for x in (*load0, *os.getloadavg())]}
    if replicas:
        out.update(replica_figures(live, gw_log, replicas))
    return out


def replica_figures(live: Path, fleet_log: Path, n: int) -> dict:
    """One record per attempt from a replicated run (the fleet's lines, and the replicas'
    own answers), the hop and the limiter store's call times."""
    from sim.live.deploy import replica_log
    from sim.live.replica import read_jsonl, reconcile

    reps = [replica_log(fleet_log, i) for i in range(n)]
    recs = read_jsonl(fleet_log)
    hops = [r["hop_s"] for r in recs if r.get("hop_s") is not None]
    for p in reps:
        recs += [r for r in read_jsonl(p) if "event" not in r and r.get("id") is not None]
    merged = live / "records.jsonl"
    with open(merged, "w") as f:
        f.writelines(dumps(r) + "\n" for r in recs)
    counts = [json.loads(p.with_name(f"{p.stem}.counts.json").read_text()) for p in reps
              if p.with_name(f"{p.stem}.counts.json").exists()]
    p50 = [c["store_p50_ms"] for c in counts if c.get("store_p50_ms") is not None]
    p99 = [c["store_p99_ms"] for c in counts if c.get("store_p99_ms") is not None]
    return {"gateway": merged, "hop_s": hops, "reconcile": reconcile(fleet_log, reps),
            "store_p50_ms": float(np.median(p50)) if p50 else None,
            "store_p99_ms": float(max(p99)) if p99 else None}


LIMITED = ("rate_limited", "quota_exceeded")


def limited_rate(gw: pd.DataFrame) -> float:
    """Share of attempts refused by limiters and quotas (the over-admission's measure)."""
    return float(gw["reason"].isin(LIMITED).mean()) if len(gw) else math.nan


def sim_limited_rate(run) -> float:
    from sim.outcomes import REASONS

    rej = run.rejections()
    off = float(run.offered.sum())
    return float(sum(rej[:, REASONS.index(r)].sum() for r in LIMITED)) / off if off else math.nan


def gpus_live(log: list, pools: list[str], t: np.ndarray) -> np.ndarray:
    """Total GPUs live at times t from a [(time, pool, n)] log (pool by name or index)."""
    n = np.zeros(len(t))
    for j, name in enumerate(pools):
        steps = sorted((float(x), int(c)) for x, p, c in log if p in (j, name))
        at = np.searchsorted([x for x, _ in steps], t, side="right") - 1
        n += np.array([c for _, c in steps])[np.maximum(at, 0)]
    return n


def gpu_figures(paths: dict, runs: list, off: float, pools: list[str], horizon: float) -> dict | None:
    """GPUs live over time, live against each replication: the largest gap over the run,
    on a 0.1 s grid of scheduled time (None: the gateway wrote no gpus.json)."""
    p = Path(paths.get("gpus", ""))
    if not p.is_file():
        return None
    live = [(t - off, pool, n) for t, pool, n in json.loads(p.read_text())]
    grid = np.arange(0.0, horizon, 0.1)
    g = gpus_live(live, pools, grid)
    gaps = [float(np.abs(g - gpus_live(r.gpu_log, pools, grid)).max()) for r in runs]
    return {"live_min": int(g.min()), "live_max": int(g.max()),
            "max_abs_diff_per_replication": gaps, "max_abs_diff_same_seed": gaps[0],
            "max_abs_diff_median": float(np.median(gaps))}


def _jsonl(path: Path) -> pd.DataFrame:
    with open(path) as f:
        return pd.DataFrame([json.loads(x) for x in f if x.strip()])


def load_live(paths: dict) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Gateway and client records; gateway times moved onto the schedule's clock."""
    gw, cl = _jsonl(paths["gateway"]), _jsonl(paths["client"])
    if len(gw) == 0:
        raise LiveError("the gateway recorded no request")
    # Gateway t = 0 is its start, the schedule's is Locust's: the offset is the smallest
    # arrival - scheduled (send lag >= 0; the least-lagged request is within ~1 ms).
    off = float(np.nanmin(gw["arrival_s"] - gw["scheduled_t"]))
    for c in ("arrival_s", "start_s", "done_s"):
        gw[c] = pd.to_numeric(gw[c], errors="coerce") - off
    return gw, cl, off


# ---- the simulated side ----


def simulate(st: Setup, sched_path: Path, t_first: float, seed: int, warmup: float = 0.0,
             trace: bool = False):
    """One run on the schedule; retries at or past the horizon are dropped, as live
    (trace: per-request records too, for fidelity.pairs)."""
    from sim.engine import Run

    sc = schedule.replay_scenario(st.sc, sched_path, st.horizon + st.drain * st.X, t_first,
                                  st.interval, seed, warmup)
    run = Run(sc, trace=trace)
    if run.retry is not None and run.retry.pending is not None:
        p, push, H = run.retry.pending, run.retry.pending.push, st.horizon
        p.push = lambda a: push(a.take(a.t < H))
    return run.execute()


def write_sim(run, d: Path) -> None:
    """summary.json and timeseries.csv of the first replication, as `floodgate run` has them."""
    from sim.jsonout import finite
    from sim.metrics.summary import summarize, timeseries
    from sim.report.write import dump_json

    d.mkdir()
    (d / "summary.json").write_text(dump_json(finite(summarize(run))))
    timeseries(run).to_csv(d / "timeseries.csv", index=False, float_format="%.6g")


def capacity(st: Setup) -> float:
    """Images per second of the fleet at max batch."""
    from sim.engine import build_pools

    return sum(p.cost.images_per_s(p.max_batch) * p.gpus for p in build_pools(st.sc))


def saturation_time(st: Setup, cap: float) -> float | None:
    """When the scheduled demand first reaches capacity, on the bootstrap-block grid."""
    from sim.demand import build_demand

    t = np.linspace(0.0, st.horizon, 2001)
    rate = build_demand(st.sc.model_copy(update={"horizon": st.horizon})).rate(t)
    over = np.flatnonzero(rate >= cap)
    if len(over) == 0:
        return None
    b = BLOCK_WALL_S * st.X
    ts = round(float(t[over[0]]) / b) * b
    return ts if 0 < ts < st.horizon else None


# ---- the command ----


def run_validation(scenario: str, duration: float = 60.0, time_scale: float = 1.0,
                   out: str | None = None, drain: float = 15.0, reps: int = 5,
                   kernel: str = "model", bootstrap_n: int = 500, log=sys.stderr,
                   replicas: int | None = None, locust_workers: int = 0, gpu_procs: int = 0) -> dict:
    """The whole validation; writes the report folder and returns validation.json.
    replicas: a fleet and N replicas sharing a throwaway Redis (the simulator models them
    with the measured hop), then the same schedule with per-replica limiter state, whose
    over-admission the simulator predicts (`over_admission`). locust_workers: Locust as a
    master and that many worker processes, the schedule split by user. gpu_procs: the
    fleet's batches run in that many GPU worker processes (sim/live/gpu_worker.py)."""
    from sim.live.refeed import refeed_figures  # the gateway's modules: only when validating
    from sim.outcomes import REASONS
    from sim.report.validation_report import write_report
    from sim.report.write import check_out, write_dir
    from sim.scenario import load_scenario

    if not duration > 0:
        raise InputError("--duration", str(duration), "must be positive")
    if not time_scale > 0:
        raise InputError("--time-scale", str(time_scale), "must be positive")
    if not drain >= 0:
        raise InputError("--drain", str(drain), "must be at least 0")
    if reps < 1:
        raise InputError("--reps", str(reps), "must be at least 1")
    sc = load_scenario(scenario)
    schedule.check_supported(sc)
    st = Setup(sc, Path(scenario), float(duration), float(time_scale), float(drain), reps, kernel)
    target = check_out(out if out is not None else Path("out") / sc.name / "validation")
    t_start = time.monotonic()
    result: dict = {}

    def fill(d: Path) -> None:
        nonlocal st
        sched = schedule.generate(sc, st.horizon)
        if len(sched) == 0:
            raise InputError(str(st.path), "demand", f"no request in the first {duration:g} s")
        schedule.write(sched, d / "schedule.csv")
        schedule.write_keys(sched, d / "keys.csv")
        per = None
        try:
            if replicas:
                from sim.live.redis_server import start_redis, stop_redis

                try:
                    srv = start_redis()
                except (FileNotFoundError, RuntimeError) as e:
                    raise LiveError(f"--replicas needs redis-server: {e}") from None
                try:
                    paths = run_live(st, d, log, replicas, srv.url, locust_workers=locust_workers,
                                     gpu_procs=gpu_procs)
                finally:
                    stop_redis(srv)
                per = run_live(st, d, log, replicas, None, sub="live_per_replica",
                               locust_workers=locust_workers, gpu_procs=gpu_procs)
            else:
                paths = run_live(st, d, log, locust_workers=locust_workers, gpu_procs=gpu_procs)
        except LiveError as e:  # keep the logs of a failed run beside the target
            kept = target.parent / f"{target.name}.failed"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(d, kept, ignore=shutil.ignore_patterns("schedule.csv", "keys.csv"))
            raise LiveError(f"{e} (logs in {kept})") from None
        if replicas:  # the simulator models the deployment, with the hop as measured
            from sim.scenario import GatewaySpec

            hop = float(np.median(paths["hop_s"])) if paths["hop_s"] else 0.0
            st = Setup(sc.model_copy(update={"gateway": GatewaySpec(
                replicas=replicas, limiter_state="shared", hop_latency_s=hop)}),
                st.path, st.duration, st.X, st.drain, st.reps, st.kernel)
        gw, cl, off = load_live(paths)
        print(f"live: {len(gw)} attempts recorded in {paths['wall_s']:.1f} s; simulating "
              f"{st.reps} replications", file=log)
        t_first = float(sched["t"].iloc[0])
        cap = capacity(st)
        t_sat = saturation_time(st, cap)
        simA = [simulate(st, d / "schedule.csv", t_first, sc.seed + i, trace=i == 0)
                for i in range(st.reps)]
        simB = ([simulate(st, d / "schedule.csv", t_first, sc.seed + i, t_sat) for i in range(st.reps)]
                if t_sat is not None else simA)
        ser = series(simA, gw, st, [t.name for t in sc.tiers])
        write_sim(simA[0], d / "sim")
        res = compare(st, gw, simA, simB, t_sat, ser, bootstrap_n)
        result.update({
            "scenario": sc.name, "duration_s": st.duration, "time_scale": st.X,
            "horizon_sim_s": st.horizon, "drain_s": st.drain, "kernel": kernel,
            "replications": st.reps, "bootstrap": bootstrap_n, "block_s": BLOCK_WALL_S,
            "capacity_images_per_s": round(cap, 4), "saturation_s": t_sat,
            "scheduled": int(len(sched)), "gateway_offset_s": round(off, 6),
            "locust_exit_code": paths["locust_rc"], "live_wall_s": round(paths["wall_s"], 2),
            "locust_workers": locust_workers, "gpu_procs": gpu_procs,
            # 1, 5, 15 min load averages when the live run began and ended, and the cores
            "machine": {"cpus": os.cpu_count(), "loadavg_start": paths["loadavg"][:3],
                        "loadavg_end": paths["loadavg"][3:]},
            "client": client_figures(cl, gw, st.X, pool_size(len(sched))),
            "targets": TARGETS, "headline": res["all"]["headline"],
            "met": met(res["all"]["headline"]),
            "phases": res,
            "gpus": gpu_figures(paths, simA, off, [p.name for p in sc.fleet.pools], st.horizon),
            "pairs": pairs(gw, simA[0], [t.name for t in sc.tiers]),
            # one gateway with the cost model's batch times only (replicas share a Redis; a
            # real denoiser's batch times are its own): else nothing to refeed
            "refeed": (refeed_figures(sc, gw, off, st.horizon + st.drain * st.X, QS, pct)
                       if kernel == "model" and not replicas else None),
        })
        result["live_only_outcomes"] = {r: int((gw["reason"] == r).sum())
                                        for r in gw["reason"].dropna().unique() if r not in REASONS}
        if replicas:
            result["replicas"] = replica_result(st, d, paths, per, gw, simA, t_first)
        result["wall_s"] = round(time.monotonic() - t_start, 2)
        write_report(d, result, ser, [t.name for t in sc.tiers])

    write_dir(target, fill, kind="validation")
    shutil.rmtree(target.parent / f"{target.name}.failed", ignore_errors=True)  # stale now
    result["out"] = str(target)
    return result


def replica_result(st: Setup, d: Path, paths: dict, per: dict, gw: pd.DataFrame, simA: list,
                   t_first: float) -> dict:
    """The replicated run's figures: the hop and the store's call times, and over-admission
    of per-replica limiters (limited share shared minus per-replica), measured and simulated."""
    from sim.scenario import GatewaySpec

    gw_per, _, _ = load_live(per)
    g = st.sc.gateway
    st_per = Setup(st.sc.model_copy(update={"gateway": GatewaySpec(
        replicas=g.replicas, limiter_state="per_replica", hop_latency_s=g.hop_latency_s)}),
        st.path, st.duration, st.X, st.drain, st.reps, st.kernel)
    sim_per = [simulate(st_per, d / "schedule.csv", t_first, st.sc.seed + i) for i in range(st.reps)]
    sim_sh = float(np.mean([sim_limited_rate(r) for r in simA]))
    sim_pr = float(np.mean([sim_limited_rate(r) for r in sim_per]))
    live_over = 100 * (limited_rate(gw) - limited_rate(gw_per))
    sim_over = 100 * (sim_sh - sim_pr)
    hops = np.asarray(paths["hop_s"], float) / st.X  # wall seconds
    return {"n": g.replicas, "hop_latency_s": g.hop_latency_s,
            "hop_wall_ms": {"p50": round(float(np.median(hops)) * 1e3, 3) if len(hops) else None,
                            "p99": round(float(np.quantile(hops, 0.99)) * 1e3, 3) if len(hops) else None},
            "redis_p50_ms": paths["store_p50_ms"], "redis_p99_ms": paths["store_p99_ms"],
            "memory_store_p50_ms": per["store_p50_ms"], "memory_store_p99_ms": per["store_p99_ms"],
            "limited_share": {"live_shared": round(limited_rate(gw), 6),
                              "live_per_replica": round(limited_rate(gw_per), 6),
                              "sim_shared": round(sim_sh, 6), "sim_per_replica": round(sim_pr, 6)},
            "over_admission_pp": {"live": round(live_over, 3), "sim": round(sim_over, 3)},
            "over_admission_err_pp": round(sim_over - live_over, 3),
            "accepted_lost": {"shared": paths["reconcile"]["accepted_lost"],
                              "per_replica": per["reconcile"]["accepted_lost"]}}


def json_line(res: dict) -> str:
    """The last line printed with --json: the worst tier of each figure, and the phases."""
    line = {**res["headline"], "met": res["met"], "out": res["out"], "wall_s": res["wall_s"],
            "scheduled": res["scheduled"], "saturation_s": res["saturation_s"]}
    for ph in ("below", "above"):
        if ph in res["phases"]:
            line[ph] = res["phases"][ph]["headline"]
    if res.get("locust_workers"):
        line.update(locust_workers=res["locust_workers"], lag_p99_s=res["client"].get("lag_p99_s"))
    if "replicas" in res:
        r = res["replicas"]
        line.update(replicas=r["n"], redis_p50_ms=r["redis_p50_ms"], redis_p99_ms=r["redis_p99_ms"],
                    over_admission_err_pp=r["over_admission_err_pp"])
    return dumps(line)


def missed(res: dict) -> list[str]:
    """The targets the worst tier missed, over the whole run and each side of saturation
    (`figure (phase)`), for --check."""
    out = [f"{k} (whole run)" for k, ok in res["met"].items() if not ok]
    for ph in ("below", "above"):
        if ph in res["phases"]:
            out += [f"{k} ({ph} saturation)" for k, ok in met(res["phases"][ph]["headline"]).items()
                    if not ok]
    return out


def cmd_validate(args) -> int:
    def stop(signum, frame):  # so that finally: blocks stop the gateway and Locust
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        res = run_validation(args.scenario, args.duration, args.time_scale, args.out,
                             args.drain, args.reps, args.kernel, replicas=args.replicas,
                             locust_workers=args.locust_workers, gpu_procs=args.gpu_procs)
    except LiveError as e:
        lines = [x for x in str(e).strip().splitlines() if x.strip()] or ["failed"]
        msg = lines[0] + (f" ... {lines[-1].strip()}" if len(lines) > 1 else "")
        print(f"error: validate: {msg}", file=sys.stderr)  # one line; the logs are in live/
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
    from sim.report.validation_report import summary_lines

    print("\n".join(summary_lines(res)), file=sys.stderr)
    print(f"wrote {res['out']}/ in {res['wall_s']:.1f} s", file=sys.stderr)
    if args.json:
        print(json_line(res))
    if args.check:
        miss = missed(res)
        if miss:
            print(f"validate --check: targets missed: {', '.join(miss)}", file=sys.stderr)
            return 3
    return 0


def add_parser(subparsers) -> None:
    v = subparsers.add_parser("validate",)
    v.add_argument("scenario")
    v.add_argument("--duration", type=float_in(0, 86400, low_open=True), default=60.0, help="wall seconds of schedule (default 60)")
    v.add_argument("--time-scale", type=float_in(0, 1e6, low_open=True), default=1.0, help="simulated seconds per wall second (default 1)")
    v.add_argument("--drain", type=float_in(0, 3600), default=15.0, help="wall seconds allowed for the last answers (default 15)")
    v.add_argument("--reps", type=int_in(1, 1000), default=5, help="simulator replications, seeds (default 5)")
    v.add_argument("--kernel", choices=["model", "torch"], default="model", help="gateway batch kernel (default model)")
    v.add_argument("--out", help="output folder (default out/<scenario>/validation)")
    v.add_argument("--json", action="store_true", help="print one JSON line of the errors last")
    v.add_argument("--check", action="store_true",
                   help="exit 3 when the worst tier misses a target (sim/live/fidelity.py TARGETS) over the "
                        "whole run or either side of saturation")
    v.add_argument("--replicas", type=int_in(2, 64), help="live: a fleet and N gateway replicas "
                   "sharing a throwaway Redis (redis-server), then the same schedule with "
                   "per-replica limiter state; the simulator models both (gateway: section)")
    v.add_argument("--locust-workers", type=int_in(0, 64), default=0, metavar="K",
                   help="live: Locust as a master and K worker processes, the schedule split by "
                   "user (user %% K; each user's requests keep their order), when one process "
                   "cannot hold the send rate (default 0: one process)")
    v.add_argument("--gpu-procs", type=int_in(0, 1024), default=0, metavar="K",
                   help="live: the fleet's batches in K GPU worker processes (serve --gpu-procs; "
                   "default 0: in the fleet's process)")
    v.set_defaults(func=cmd_validate)
