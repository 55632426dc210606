"""`floodgate serve --replicas N`: one fleet process and N gateway replicas on loopback.

The supervisor writes the key table once (every replica reads the same), picks the ports,
starts `floodgate serve --role fleet` and N `floodgate serve --role replica --fleet URL`
with one clock origin (`--start-at`), waits until each answers /healthz, then writes
deployment.json beside the fleet's log ({"fleet", "replicas", "pids", "logs"}) and prints
one `serving` line per process. SIGTERM or SIGINT is passed to every process (each drains:
replicas stop admitting and wait for what they forwarded, the fleet finishes what it
holds); the supervisor exits 0 when every process that was still running exited 0. A
process that died before (a killed replica) is reported on stderr; the others go on. With
--restart-replicas a replica that dies is started again on its port under a new name
(r1 -> r1.1: its request numbers start again, so the logs keep one key per request) and
appends to its log; deployment.json is rewritten with its pid. What it had forwarded is
the fleet's to finish (its in-flight slots, the concurrency gate's, free when they end).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sim.jsonout import dumps


def start_deployment(d: Path, scenario: Path, replicas: int, extra=(), timeout: float = 90.0,
                     log: Path | None = None) -> tuple[subprocess.Popen, dict]:
    """`floodgate serve --replicas N` with the fleet's log at `log` (default
    d/requests.jsonl; the replicas' beside it), in its own session; returns (supervisor,
    deployment.json) once every process answers /healthz (RuntimeError with the
    supervisor's stderr if not)."""
    d.mkdir(parents=True, exist_ok=True)
    log = log or d / "requests.jsonl"
    err = open(d / "supervisor.stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sim", "serve", str(scenario), "--replicas",
                             str(replicas), "--port", "0", "--log", str(log),
                             "--drain-timeout", "20", *extra],
                            stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                            start_new_session=True)
    err.close()
    dep = log.with_name("deployment.json")
    end = time.monotonic() + timeout
    try:
        while not dep.exists():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("deployment did not start: "
                                   f"{(d / 'supervisor.stderr').read_text()[-2000:]}")
            time.sleep(0.1)
    except BaseException:  # Ctrl-C or a failed start: leave no process behind
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # passed on to whatever it started
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        raise
    return proc, json.loads(dep.read_text())


def replica_log(fleet_log: Path, i: int) -> Path:
    return fleet_log.with_name(f"replica-{i}.jsonl")


def _child_args(args, role: str, port: int, log: Path, keys: Path, start_at: float) -> list[str]:
    cmd = [sys.executable, "-m", "sim", "serve", args.scenario, "--role", role,
           "--host", args.host, "--port", str(port), "--log", str(log), "--keys", str(keys),
           "--start-at", repr(start_at), "--time-scale", repr(args.time_scale),
           "--drain-timeout", repr(args.drain_timeout), "--max-body", str(args.max_body),
           "--header-timeout", repr(args.header_timeout), "--body-timeout", repr(args.body_timeout)]
    if args.max_connections:
        cmd += ["--max-connections", str(args.max_connections)]
    if role == "fleet":
        cmd += ["--kernel", args.kernel, "--gpu-procs", str(args.gpu_procs)]
        if args.max_queue is not None:
            cmd += ["--max-queue", str(args.max_queue)]
        if args.torch_device:
            cmd += ["--torch-device", args.torch_device]
        if args.torch_dtype:
            cmd += ["--torch-dtype", args.torch_dtype]
    return cmd


def supervise(args) -> int:
    from sim.errors import InputError
    from sim.live.keys import generate_keys, load_keys, write_keys
    from sim.live.replica import check_replicable
    from sim.live.serve import _die_with_parent, _healthy, free_port, mark_live
    from sim.scenario import load_scenario

    sc = load_scenario(args.scenario)
    check_replicable(sc)
    log = Path(args.log) if args.log else Path("out") / sc.name / "live" / "requests.jsonl"
    mark_live(log)
    if args.keys:
        load_keys(args.keys, sc)  # checked here once, read by every process
        keys = Path(args.keys)
    else:
        keys = log.parent / "keys.csv"
        write_keys(keys, generate_keys(sc))
        print(f"keys: {keys} (generated, mode 0600)", file=sys.stderr)
    n = args.replicas
    ports = [args.port + i for i in range(n)] if args.port else [free_port(args.host) for _ in range(n)]
    if max(ports) > 65535:
        raise InputError("--port", str(args.port), f"replicas need ports up to {max(ports)}")
    fleet_port = free_port(args.host)
    start_at = args.start_at if args.start_at is not None else time.time()
    fleet_url = f"http://{args.host}:{fleet_port}"
    procs: dict[str, subprocess.Popen] = {}

    def spawn(name: str, cmd: list[str], mode: str = "wb") -> None:
        err = open(log.with_name(f"{name}.stderr"), mode)  # noqa: SIM115 (closed below)
        try:
            procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                           preexec_fn=_die_with_parent)
        finally:
            err.close()

    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # a second signal ends their drains at once
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        spawn("fleet", _child_args(args, "fleet", fleet_port, log, keys, start_at))
        for i, p in enumerate(ports):
            spawn(f"replica-{i}", [*_child_args(args, "replica", p, replica_log(log, i), keys, start_at),
                                   "--fleet", fleet_url, "--replica-name", f"r{i}",
                                   "--store-failure", args.store_failure,
                                   *(["--redis", args.redis] if args.redis else [])])
        urls = {"fleet": fleet_url, **{f"replica-{i}": f"http://{args.host}:{p}" for i, p in enumerate(ports)}}
        end = time.monotonic() + 60.0
        for name, url in urls.items():
            while not _healthy(url + "/healthz"):
                if procs[name].poll() is not None or time.monotonic() > end or stopping:
                    text = log.with_name(f"{name}.stderr").read_text().strip()
                    print(f"error: serve: {name} did not start: {text.splitlines()[-1] if text else '?'}",
                          file=sys.stderr)
                    on_signal(None, None)
                    return 1
                time.sleep(0.05)
        info = {"fleet": fleet_url, "replicas": [urls[f"replica-{i}"] for i in range(n)],
                "pids": {k: p.pid for k, p in procs.items()}, "start_at": start_at,
                "logs": {"fleet": str(log), "replicas": [str(replica_log(log, i)) for i in range(n)]},
                "redis": args.redis}
        tmp = log.with_name("deployment.json.tmp")
        tmp.write_text(dumps(info))
        tmp.replace(log.with_name("deployment.json"))
        for name, url in urls.items():
            print(f"serving {url} ({name})", file=sys.stderr, flush=True)
        dead: set[str] = set()
        lives = dict.fromkeys(urls, 0)  # restarts so far, per process
        while not stopping:
            for name, p in list(procs.items()):
                if p.poll() is None or name in dead:
                    continue
                if args.restart_replicas and name != "fleet" and not stopping:
                    i = int(name.split("-")[1])
                    lives[name] += 1
                    spawn(name, [*_child_args(args, "replica", ports[i], replica_log(log, i), keys, start_at),
                                 "--fleet", fleet_url, "--replica-name", f"r{i}.{lives[name]}",
                                 "--store-failure", args.store_failure,
                                 *(["--redis", args.redis] if args.redis else [])], "ab")
                    info["pids"][name] = procs[name].pid
                    info.setdefault("restarts", {})[name] = lives[name]
                    tmp.write_text(dumps(info))
                    tmp.replace(log.with_name("deployment.json"))
                    print(f"serve: {name} exited ({_how(p.returncode)}); restarted as "
                          f"r{i}.{lives[name]}", file=sys.stderr, flush=True)
                    continue
                dead.add(name)
                print(f"serve: {name} exited ({_how(p.returncode)}); the others go on",
                      file=sys.stderr, flush=True)
            if len(dead) == len(procs):
                break
            time.sleep(0.1)
        rc = 0
        for name, p in procs.items():
            if name in dead:
                continue
            try:
                p.wait(args.drain_timeout + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.returncode != 0:
                print(f"serve: {name} exited ({_how(p.returncode)})", file=sys.stderr)
                rc = 1
        return rc
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for s, h in old.items():
            signal.signal(s, h)


def _how(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"code {rc}"

