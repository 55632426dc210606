"""`floodgate serve SCENARIO`: the scenario's policies as a live HTTP gateway (one process, or\nwith --replicas N a fleet process and N admission replicas: sim/live/replica.py, deploy.py).

Also the helpers to run one from Python: `free_port()`, `start_server(...)` (a subprocess,
returned once /healthz answers) and `stop_server(proc)` (SIGTERM: drain, then exit).
FastAPI, uvicorn and torch load inside the command only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from sim.args import float_in, int_in, size
from sim.errors import InputError

# the guard's defaults (sim/live/http_guard.py), here so the parser needs no FastAPI import
MAX_BODY, HEADER_TIMEOUT, BODY_TIMEOUT = 64 * 2**10, 10.0, 10.0


def add_parser(subparsers) -> None:
    s = subparsers.add_parser("serve",)
    s.add_argument("scenario")
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    s.add_argument("--port", type=int_in(0, 65535, "a port"), default=8000,
                   help="default 8000; 0: any free port")
    s.add_argument("--time-scale", type=float_in(0, 1e6, low_open=True), default=1.0,
                   help="simulated seconds per wall second (default 1; 10: ten times faster)")
    s.add_argument("--kernel", choices=("model", "torch"), default="model",
                   help="model (default): sleep the calibrated batch time; torch: run the real denoiser")
    s.add_argument("--gpu-procs", type=int_in(0, 1024), default=0, metavar="K",
                   help="run batches in K GPU worker processes (kernel worker w on process "
                   "w %% K; torch: one per GPU, process i on cuda:i) instead of in this process "
                   "(0, default); gpu-workers.json beside the log lists their pids")
    s.add_argument("--torch-device", help="torch kernel device (default: cuda if available, else cpu)")
    s.add_argument("--torch-dtype", choices=("fp32", "fp16", "bf16"),
                   help="torch kernel dtype (default: fp16 on a GPU, fp32 on a CPU)")
    s.add_argument("--keys", help="key table CSV key,user,tier (default: random keys, written "
                   "0600 next to the log as keys.csv; required on a non-loopback --host)")
    s.add_argument("--log", help="per-request JSONL, appended to (default "
                   "out/<scenario>/live/requests.jsonl)")
    s.add_argument("--max-queue", type=int_in(0, 10**7), help="queued requests, all tiers, beyond which "
                   "requests get 503 queue_full (default: the tiers' queue limits summed, or 10000)")
    s.add_argument("--start-at", type=float_in(0, 1e11), help="unix time of simulated t = 0 "
                   "(default: when the server starts); validation sets it so the gateway's "
                   "policy clock and the load generator's schedule share one origin")
    s.add_argument("--drain-timeout", type=float_in(0, 86400), default=30.0,
                   help="on SIGTERM, wall seconds to finish admitted requests (default 30)")
    s.add_argument("--max-body", type=size, default=MAX_BODY,
                   help=f"largest request body, bytes (default {MAX_BODY // 1024}K; above: 413)")
    s.add_argument("--header-timeout", type=float_in(0.01, 3600), default=HEADER_TIMEOUT,
                   help=f"wall seconds to send a request's headers (default {HEADER_TIMEOUT:g}; then 408)")
    s.add_argument("--body-timeout", type=float_in(0.01, 3600), default=BODY_TIMEOUT,
                   help=f"wall seconds to send its body (default {BODY_TIMEOUT:g}; then 408)")
    s.add_argument("--max-connections", type=int_in(1, 10**6),
                   help="open connections beyond which new ones get 503 (default: --max-queue + 4096)")
    d = s.add_argument_group("replicas (sim/live/replica.py: N admission replicas, one fleet process)")
    d.add_argument("--replicas", type=int_in(1, 64), help="start a fleet process and N gateway "
                   "replicas forwarding to it; replica i listens on --port + i (--port 0: any "
                   "free ports); deployment.json beside the log lists them")
    d.add_argument("--redis", metavar="URL", help="redis://host:port/db: the replicas share their "
                   "limiter state there (default: each replica keeps its own, in memory)")
    d.add_argument("--store-failure", choices=("fail_open", "fail_closed"), default="fail_open",
                   help="when the limiter store is unreachable: admit without a check and count "
                   "it (fail_open, default) or answer 503 limiter_unavailable with Retry-After")
    d.add_argument("--restart-replicas", action="store_true", help="start a replica that dies "
                   "again on its port, under a new name (r1.1); default: the others go on")
    d.add_argument("--role", choices=("gateway", "fleet", "replica"), default="gateway",
                   help="gateway (default): admission and fleet in one process; fleet: the fleet "
                   "behind replicas (POST /fleet/v1/images, loopback only); replica: admission, "
                   "then forward to --fleet")
    d.add_argument("--fleet", metavar="URL", help="--role replica: the fleet process, http://127.0.0.1:PORT")
    d.add_argument("--replica-name", default="r0", help="--role replica: its name in the logs (default r0)")
    s.set_defaults(func=cmd_serve)


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listener says it is TCP; without it Nagle delays each response by ~40 ms on loopback.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError("--port", str(port), f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _writable(log: Path) -> None:
    """The log's folder can be made and the log appended to, before anything starts."""
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a"):
            pass
    except OSError as e:
        raise InputError(str(log), "(file)", f"cannot write: {e.strerror or e}") from None


def mark_live(log: Path) -> None:
    """The log's folder made and marked as a live one, the log writable."""
    from sim.report.write import mark_dir

    try:
        mark_dir(log.parent, "live")  # `floodgate run` into out/<scenario>/ later keeps the log
    except OSError as e:
        raise InputError("--log", str(log), f"cannot create its folder: {e.strerror}") from None
    _writable(log)


def _raise_fd_limit(n: int) -> None:
    """Each queued request holds a connection: allow that many open files if we may."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = n if hard == resource.RLIM_INFINITY else min(n, hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def _check_roles(args) -> None:
    if args.role == "replica" and not args.fleet:
        raise InputError("--fleet", "(missing)", "--role replica needs --fleet URL")
    if args.role != "replica" and args.fleet:
        raise InputError("--fleet", args.fleet, "only for --role replica")
    if args.fleet and not _loopback(urllib.parse.urlsplit(args.fleet).hostname or ""):
        raise InputError("--fleet", args.fleet, "the fleet process is reached on loopback only")
    if args.role == "fleet" and not _loopback(args.host):
        raise InputError("--host", args.host, "--role fleet listens on loopback only "
                         "(its endpoint trusts the replicas' admission)")
    if args.redis is not None and not args.redis.startswith(("redis://", "rediss://", "unix://")):
        raise InputError("--redis", args.redis, "expected redis://host:port[/db] or unix://path")
    if args.gpu_procs and args.role == "replica":
        raise InputError("--gpu-procs", str(args.gpu_procs), "a replica runs no batches (give it to the fleet)")
    if args.restart_replicas and not args.replicas:
        raise InputError("--restart-replicas", "(set)", "only with --replicas N")
    if args.replicas and args.role != "gateway":
        raise InputError("--replicas", str(args.replicas), "starts its own --role processes")


def cmd_serve(args) -> int:
    import uvicorn  # the serve extra: missing, it is one line before anything is written

    _check_roles(args)
    if args.replicas:
        from sim.live.deploy import supervise

        return supervise(args)

    from sim.budget import check_drr
    from sim.live.gateway import Gateway, GatewayServer, create_app, default_max_queue
    from sim.live.http_guard import BodyGuard, Limits, guarded_protocol
    from sim.live.keys import generate_keys, load_keys, write_keys
    from sim.scenario import load_scenario

    sc = load_scenario(args.scenario)
    check_drr(sc)  # a DRR pick must not spin: the server would freeze
    if not args.keys and not _loopback(args.host):
        raise InputError("--host", args.host, "a non-loopback address needs --keys FILE "
                         "(generated keys are for local tests)")
    log = Path(args.log) if args.log else Path("out") / sc.name / "live" / "requests.jsonl"
    mark_live(log)
    if args.keys:
        keys = load_keys(args.keys, sc)
    else:
        keys = generate_keys(sc)
        try:
            write_keys(log.parent / "keys.csv", keys)
        except OSError as e:
            raise InputError(str(log.parent / "keys.csv"), "(file)", f"cannot write: {e.strerror}") from None
        print(f"keys: {log.parent / 'keys.csv'} ({len(keys)} generated, mode 0600)", file=sys.stderr)
    sock = _bind(args.host, args.port)

    from sim.engine import build_pools

    runner = procs = None
    if args.gpu_procs and args.role != "replica":
        from sim.live.gpu_worker import GpuProcs

        torch_args = None
        if args.kernel == "torch":
            torch_args = ["--torch", str(args.scenario)]
            torch_args += ["--device", args.torch_device] if args.torch_device else []
            torch_args += ["--dtype", args.torch_dtype] if args.torch_dtype else []
        procs = GpuProcs(args.gpu_procs, torch_args, log.with_name("gpu-workers.json"))
        print(f"GPU work: {procs.describe()}", file=sys.stderr)
    elif args.kernel == "torch":
        try:
            from sim.live.denoiser import TorchRunner
        except ImportError as e:
            raise InputError("--kernel", "torch", f"needs torch and diffusers: {e}") from None
        runner = TorchRunner(sc, build_pools(sc), args.torch_device, args.torch_dtype)
        print(f"torch kernel: {runner.describe()}", file=sys.stderr)
    _raise_fd_limit((args.max_queue if args.max_queue is not None else default_max_queue(sc)) + 4096)
    mq = args.max_queue if args.max_queue is not None else default_max_queue(sc)
    limits = Limits(args.max_body, args.header_timeout, args.body_timeout,
                    args.max_connections or mq + 4096)
    try:
        if args.role == "replica":
            from sim.live.replica import Replica, check_replicable, create_replica_app

            check_replicable(sc)
            gw = Replica(sc, keys, log, args.fleet, args.redis, args.replica_name,
                         args.time_scale, args.start_at, args.drain_timeout, args.store_failure)
            app = BodyGuard(create_replica_app(gw), limits, gw.log_http)
        else:
            gw = Gateway(sc, keys, log, args.time_scale, args.max_queue, args.drain_timeout,
                         runner, start_at=args.start_at, role=args.role, procs=procs)
            app = BodyGuard(create_app(gw), limits, gw.log_http)
    except OSError as e:
        raise InputError(str(log), "(file)", f"cannot write: {e.strerror}") from None
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, backlog=4096,
                            http=guarded_protocol(limits, gw.log_http))
    server = GatewayServer(config, gw, args.host)
    server.run(sockets=[sock])
    return 0


# ---- running a server from Python (tests, `floodgate validate`) ----


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(scenario_path, port: int, time_scale: float = 1.0, keys_path=None,
                 log_path=None, extra_args=(), *, host: str = "127.0.0.1",
                 timeout: float = 60.0, stderr_path=None) -> subprocess.Popen:
    """Start `floodgate serve` in a subprocess and return it once /healthz answers 200.

    Its stderr goes to `stderr_path` (default: serve.stderr next to the log, or a temporary
    file); if it exits or does not get healthy in `timeout` s, RuntimeError with that text.
    """
    cmd = [sys.executable, "-m", "sim", "serve", str(scenario_path), "--host", host,
           "--port", str(port), "--time-scale", repr(float(time_scale))]
    if keys_path is not None:
        cmd += ["--keys", str(keys_path)]
    if log_path is not None:
        cmd += ["--log", str(log_path)]
    cmd += [str(a) for a in extra_args]
    if stderr_path is None:
        if log_path is not None:
            stderr_path = Path(log_path).parent / "serve.stderr"
            stderr_path.parent.mkdir(parents=True, exist_ok=True)
        else:
            fd, stderr_path = tempfile.mkstemp(prefix="floodgate-serve-", suffix=".stderr")
            os.close(fd)
    err = open(stderr_path, "wb")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                preexec_fn=_die_with_parent)
    finally:
        err.close()
    proc.stderr_path = Path(stderr_path)
    url = f"http://{host}:{port}/healthz"
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"floodgate serve exited with {proc.returncode}: "
                                   f"{Path(stderr_path).read_text().strip()}")
            if _healthy(url):
                return proc
            time.sleep(0.05)
    except BaseException:  # Ctrl-C while waiting: leave no server behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    stop_server(proc, 5.0)
    raise RuntimeError(f"floodgate serve not healthy after {timeout} s: "
                       f"{Path(stderr_path).read_text().strip()}")


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM (a drain) when the parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_server(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM (the gateway drains), wait up to `timeout` s, then kill; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
