"""The GPU fleet: pools of workers, tier queues and the scheduler, around the compiled loop."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numpy as np
from numba import njit, typeof, types
from numba._dispatcher import compute_fingerprint as _fingerprint

from sim import rng
from sim.fleet import kernel as K
from sim.fleet.cost import CostModel
from sim.fleet.purchase import Ledger

QUEUE_FIELDS = ("q_t", "q_steps", "q_noise", "q_z", "q_user", "q_id", "q_cls", "q_reg")

DISCIPLINES = {"strict_priority": K.STRICT, "fifo": K.FIFO, "edf": K.EDF, "drr": K.DRR}
DISTRIBUTIONS = {"deterministic": 0, "exponential": 1, "profile": 2}

FIELDS = (
    # configuration
    "cfg prio_order disc lifo deadline slo patience q_limit tier_limit user_limit "
    "drr_quantum drr_deficit drr_ptr pool_maxb pool_maxw pool_cycle pool_dist pool_sigma "
    "cost_fixed cost_step shed_util shed_depth codel deg deg_stats pool_steps pool_ext ep "
    # request classes, batch groups, models and routing
    "cost_enc cls_group cls_steps cls_enc cls_quality deg_cls grp_model pool_serves pool_swap "
    "pool_order p_act swaps cls_stats "
    # fleet regions (sim/regions.py): users' region -> home, network latency, pool -> region,
    # images/s per GPU, [spill wait, max latency], outage flags; per users' region counts
    "reg_home reg_net pool_reg pool_rate spill reg_down reg_done reg_drop reg_nsys reg_spill "
    "reg_lat_hist reg_stats "
    # queues: ring buffers per lane (tier x batch group), q_size per tier
    "q_t q_steps q_noise q_z q_user q_head q_size q_id q_n q_cls q_reg "
    # workers
    "w_state w_pool w_speed w_until w_bn w_bt w_bk w_bu w_bid w_bstart w_steps w_bc w_model w_br "
    "idle idle_n "
    "h_t h_w h_n tmr "
    # outbox (kind, id, t, aux)
    "ob_kind ob_id ob_t ob_aux ob_n "
    # clock and counters
    "clock n_sys n_busy n_active user_inflight admitted completed abandoned kernel_rej "
    "adm_stats done_stats aband_stats good sum_wait sum_lat sum_sys area_sys area batches "
    "wait_hist lat_hist "
    # fixed-interval series
    "ser_busy ser_active ser_queue ser_admitted ser_started ser_completed ser_good ser_rej ser_lat_hist"
).split()
State = namedtuple("State", FIELDS)


@dataclass
class PoolSetup:
    name: str
    gpus: int
    max_gpus: int
    cost: CostModel
    max_batch: int
    max_wait_s: float
    cycle: bool
    distribution: str
    price_per_gpu_hour: float
    steps: float = 0.0  # denoising steps of a request served here (brownout may lower them)
    # reserved / on-demand / spot layout of the slots and their prices (cell counts)
    ledger: Ledger | None = None


@dataclass
class ClassSetup:
    """Request classes resolved against the pools (sim/classes.py builds it).

    A class belongs to one batch group (same model, resolution, CFG and cost source: one cost
    curve per pool); `cost[p][g]` is pool p's cost model for group g (None: p does not hold
    its model), `enc[p][g]` the input-encode time of a batch with n encodes (n = 0..)."""

    names: list[str]
    group: list[int]  # class -> batch group
    steps: list[float]
    encode: list[bool]
    quality: list[float]
    group_names: list[str]
    group_model: list[int]  # group -> model index (a GPU holding it needs no swap)
    cost: list[list[CostModel | None]]
    enc: list[list[np.ndarray | None]]
    swap_s: list[float] | None = None  # per pool: seconds to load another model


@njit(cache=True, nogil=True)
def _live(w_pool, w_state, pool, idle, busy):  # pragma: no cover - compiled
    n = 0
    for w in range(len(w_pool)):
        if w_pool[w] == pool and (w_state[w] == idle or w_state[w] == busy):
            n += 1
    return n


class Fleet:
    """Holds the state arrays; `advance` runs the compiled loop over a chunk of arrivals.

    One implementation for both clocks: the simulator advances it chunk by chunk, the live
    gateway on each arrival and timer (sim/live/workers.py). With `outbox` it records each
    request's start, completion or drop (with times) for the caller; `external` pools have
    their batch ends reported by the caller (`complete`) instead of drawn from the cost model.
    """

    def __init__(self, pools: list[PoolSetup], tiers, scheduler, horizon: float,
                 interval: float, warmup: float, seed: int, queue_capacity: int = 4096,
                 outbox: bool = False, external: bool = False, max_queue: float = 2.0**62,
                 classes: ClassSetup | None = None, router: int = K.LISTED,
                 order: list[int] | None = None, regions=None):
        if external and not outbox:
            raise ValueError("an external pool reports its batches through the outbox")
        nk = len(tiers)
        self.pools = pools
        self.interval = interval
        nI = int(np.ceil(horizon / interval)) + 1
        N = sum(p.max_gpus for p in pools)
        B = max(p.max_batch for p in pools)
        P = len(pools)
        self.classes = classes
        self.regions = regions
        # the fleet loop's general path (lanes, classes, routers, regions) or the one-group one
        self.general = classes is not None or router != K.LISTED or regions is not None
        G0 = len(classes.group_names) if classes else 1
        # with regions a lane's group is (batch group, fleet region): g = g0 * R + region, so a
        # region's pools serve only its lanes and batch them apart
        R = len(regions.names) if regions is not None else 1
        G = G0 * R
        C = len(classes.names) if classes else 1
        cost_fixed = np.zeros((P, G, B + 1))
        cost_step = np.zeros((P, G, B + 1))
        cost_enc = np.zeros((P, G, B + 1))
        serves = np.ones((P, G), bool)
        for j, p in enumerate(pools):
            for g in range(G):
                g0 = g // R
                cm = classes.cost[j][g0] if classes else p.cost
                if cm is None or (regions is not None and regions.pool_region[j] != g % R):
                    serves[j, g] = False
                    continue
                cost_fixed[j, g, : p.max_batch + 1] = cm.fixed[: p.max_batch + 1]
                cost_step[j, g, : p.max_batch + 1] = cm.step[: p.max_batch + 1]
                if classes and classes.enc[j][g0] is not None:
                    cost_enc[j, g, : p.max_batch + 1] = classes.enc[j][g0][: p.max_batch + 1]
            cost_fixed[j, 0, 0] = p.cost.batch_time(1)  # an empty epoch of a cycling worker
        U = len(regions.users) if regions is not None else 1
        prio = np.argsort([t.priority for t in tiers], kind="stable")
        f8, i8 = np.float64, np.int64
        z = np.zeros
        cap = queue_capacity
        nL = nk * G  # queue lanes: lane = tier * G + batch group
        state = dict(
            # warm-up, series interval, total queue limit, outbox on, nominal steps (brownout),
            # router, request classes on, fleet regions (0: none)
            cfg=np.array([warmup, interval, max_queue, 1.0 if outbox else 0.0,
                          max(p.steps or 0.0 for p in pools) or np.inf,
                          router, 1.0 if classes else 0.0,
                          R if regions is not None else 0], f8),
            prio_order=prio.astype(i8),
            disc=np.array([DISCIPLINES[scheduler.discipline]], i8),
            lifo=np.array([t.lifo for t in tiers], bool),
            deadline=np.array([t.slo_s for t in tiers], f8),
            slo=np.array([t.slo_s for t in tiers], f8),
            patience=np.array([t.patience_s or np.inf for t in tiers], f8),
            q_limit=np.array([t.queue_limit if t.queue_limit is not None else 2**62 for t in tiers], i8),
            tier_limit=np.full(nk, 2**62, i8),
            user_limit=np.full(nk, 2**62, i8),  # per-user in-flight cap, by the user's tier
            drr_quantum=np.array([t.weight * scheduler.quantum_s for t in tiers], f8),
            drr_deficit=z(nk, f8),
            drr_ptr=z(2, i8),
            pool_maxb=np.array([p.max_batch for p in pools], i8),
            pool_maxw=np.array([p.max_wait_s for p in pools], f8),
            pool_cycle=np.array([p.cycle for p in pools], bool),
            pool_dist=np.array([DISTRIBUTIONS[p.distribution] for p in pools], i8),
            pool_sigma=np.array([p.cost.sigma for p in pools], f8),
            cost_fixed=cost_fixed,
            cost_step=cost_step,
            # with classes a request's steps are its class's, whichever pool serves it
            pool_steps=np.array([np.inf if classes else p.steps or np.inf for p in pools], f8),
            pool_ext=np.full(P, bool(external)),
            shed_util=np.full(nk, np.inf),
            shed_depth=np.full(nk, np.inf),
            # CoDel per tier: target, interval (inf: off), last instant the queue was empty
            codel=np.array([[np.inf, np.inf, 0.0]] * nk, f8),
            # brownout per tier: utilisation, queue depth, steps when degraded (inf: none),
            # on (> 0); counts: requests it saw, degraded, steps given (capped at the nominal
            # or the class's), quality given (classes: the class's quality x steps share)
            deg=np.array([[np.inf, np.inf, np.inf, 0.0]] * nk, f8), deg_stats=z((nk, 4), f8),
            deg_cls=np.tile(np.arange(C, dtype=i8), (nk, 1)),  # class -> class when degraded
            cost_enc=cost_enc,
            cls_group=np.array(classes.group if classes else [0], i8),
            cls_steps=np.array(classes.steps if classes else [np.inf], f8),
            cls_enc=np.array(classes.encode if classes else [False], bool),
            cls_quality=np.array(classes.quality if classes else [1.0], f8),
            grp_model=np.repeat(np.array(classes.group_model if classes else [0], i8), R),
            pool_serves=serves,
            pool_swap=np.array(classes.swap_s if classes and classes.swap_s else [0.0] * P, f8),
            pool_order=np.array(order if order else range(P), i8),  # router cheapest
            p_act=z(P, i8), swaps=z(P, i8),
            # per class: started, sum of batch sizes, sum of batch fill, completed, sum of
            # latency, within SLO (requests arrived after warm-up)
            cls_stats=z((C, 6), f8),
            reg_home=(regions.home if regions is not None else np.zeros(1)).astype(i8),
            reg_net=(regions.net if regions is not None else np.zeros((1, 1))).astype(f8),
            pool_reg=(regions.pool_region if regions is not None else np.zeros(P)).astype(i8),
            pool_rate=np.array([p.cost.images_per_s(p.max_batch) for p in pools], f8),
            spill=np.array([regions.spill_wait, regions.max_latency] if regions is not None
                           else [np.inf, np.inf], f8),
            reg_down=z(R, bool),
            # per users' region: completions by fleet region that served them, timeouts
            # (patience, CoDel), in system, spilled (arrivals sent away from home, and
            # requests moved by an outage), latency histogram and [completions, sum of
            # latency, within SLO, sum of network latency] of arrivals after warm-up
            reg_done=z((U, R), i8), reg_drop=z(U, i8), reg_nsys=z(U, i8), reg_spill=z(U, i8),
            reg_lat_hist=z((U, K.HIST_BINS) if regions is not None else (1, 1), i8),
            reg_stats=z((U, 4), f8),
            ep=np.array([rng.key("epochs", seed), 0], i8),  # empty epochs: key, draws so far
            q_t=z((nL, cap), f8), q_steps=z((nL, cap), np.float32), q_noise=z((nL, cap), f8),
            q_z=z((nL, cap), f8), q_user=z((nL, cap), i8), q_head=z(nL, i8), q_size=z(nk, i8),
            q_id=z((nL, cap), i8), q_n=z(nL, i8), q_cls=z((nL, cap), np.int16),
            q_reg=z((nL, cap) if regions is not None else (nL, 1), np.int16),
            w_state=z(N, np.int8), w_pool=z(N, i8), w_speed=np.ones(N), w_until=z(N, f8),
            w_bn=z(N, i8), w_bt=z((N, B), f8), w_bk=z((N, B), i8), w_bu=z((N, B), i8),
            w_bid=z((N, B), i8), w_bstart=z(N, f8), w_steps=z(N, f8),
            w_bc=z((N, B), np.int16), w_model=np.full(N, -1, i8),
            w_br=z((N, B), np.int16),
            idle=z((P, N), i8), idle_n=z(P, i8),
            h_t=z(N + 1, f8), h_w=z(N + 1, i8), h_n=z(1, i8), tmr=np.full(1, np.inf),
            ob_kind=z(1024 if outbox else 1, np.int8), ob_id=z(1024 if outbox else 1, i8),
            ob_t=z(1024 if outbox else 1, f8), ob_aux=z(1024 if outbox else 1, i8), ob_n=z(1, i8),
            clock=z(1, f8), n_sys=z(nk, i8), n_busy=z(1, i8), n_active=z(1, i8),
            user_inflight=z(0, i8),
            admitted=z(nk, i8), completed=z(nk, i8), abandoned=z(nk, i8),
            kernel_rej=z((nk, K.N_KERNEL_REASONS), i8),
            adm_stats=z(nk, i8), done_stats=z(nk, i8), aband_stats=z(nk, i8), good=z(nk, i8),
            sum_wait=z(nk, f8), sum_lat=z(nk, f8), sum_sys=z(nk, f8), area_sys=z(nk, f8),
            area=z(2, f8), batches=z(2, i8),  # batches, requests in them
            wait_hist=z((nk, K.HIST_BINS), i8), lat_hist=z((nk, K.HIST_BINS), i8),
            ser_busy=z(nI, f8), ser_active=z(nI, f8), ser_queue=z((nI, nk), f8),
            ser_admitted=z((nI, nk), i8), ser_started=z((nI, nk), i8),
            ser_completed=z((nI, nk), i8), ser_good=z((nI, nk), i8),
            ser_rej=z((nI, nk, K.N_KERNEL_REASONS), i8),
            ser_lat_hist=z((nI, nk, K.SERIES_BINS), np.int32),
        )
        self.S = State(**state)
        self._ep_state, self._ep = None, {}  # compiled entry points (_kernel)
        w = 0
        for j, p in enumerate(pools):
            self.S.w_pool[w : w + p.max_gpus] = j
            w += p.max_gpus
        for j, p in enumerate(pools):
            self.set_gpus(j, p.gpus)
        if external:  # its batch ends come through complete(): compiled before the first
            self.warm()

    # -- configuration changes (call at the fleet's current clock) --

    def set_gpus(self, pool: int, n: int) -> int:
        """Provision or retire GPUs of a pool; retiring ones finish their batch. Returns count."""
        S = self.S
        ids = np.flatnonzero(S.w_pool == pool)
        n = int(min(max(n, 0), len(ids)))
        live = [w for w in ids if S.w_state[w] in (K.IDLE, K.BUSY)]
        if n > len(live):
            for w in [w for w in ids if S.w_state[w] in (K.OFF, K.RETIRING)][: n - len(live)]:
                if S.w_state[w] == K.RETIRING:  # un-retire: still running its batch
                    S.w_state[w] = K.BUSY
                else:
                    self._start(w)
        elif n < len(live):
            drop = len(live) - n
            idle = [int(S.idle[pool, j]) for j in range(S.idle_n[pool])]
            for w in idle[::-1][:drop]:
                self._stop_idle(pool, w)
                drop -= 1
            for w in [w for w in live if S.w_state[w] == K.BUSY][:drop]:
                S.w_state[w] = K.RETIRING
        return n

    def _start(self, w: int) -> None:
        S, p = self.S, int(self.S.w_pool[w])
        S.n_active[0] += 1
        S.p_act[p] += 1
        S.w_state[w] = K.IDLE  # the next dispatch gives it work (or an empty epoch if cycling)
        S.idle[p, S.idle_n[p]] = w
        S.idle_n[p] += 1

    def _stop_idle(self, pool: int, w: int) -> None:
        S = self.S
        stack = [int(S.idle[pool, j]) for j in range(S.idle_n[pool]) if S.idle[pool, j] != w]
        S.idle_n[pool] = len(stack)
        S.idle[pool, : len(stack)] = stack
        S.w_state[w] = K.OFF
        S.n_active[0] -= 1
        S.p_act[pool] -= 1

    def region_out(self, r: int, out: bool) -> int:
        """Fleet region r's GPUs are out (or back): new arrivals route around it, and while
        out the requests queued there move (kernel.evacuate). The caller takes its GPUs
        away (set_gpus). Returns how many requests moved."""
        S = self.S
        S.reg_down[r] = out
        if not out:
            return 0
        G, R = S.pool_serves.shape[1], len(self.regions.names)
        lanes = [k * G + g0 * R + r for k in range(len(S.q_size)) for g0 in range(G // R)]
        while S.q_t.shape[1] < int(S.q_n.max()) + int(S.q_n[lanes].max()):
            self._grow_queues()
            S = self.S
        return int(K.evacuate(S, r))

    def gpus(self, pool: int) -> int:
        """The pool's live GPUs: its workers idle or busy (the gates and autoscalers ask
        every chunk: one compiled count, not four passes over the worker slots)."""
        S = self.S
        return int(_live(S.w_pool, S.w_state, pool, K.IDLE, K.BUSY))

    # -- the hot path --

    def advance(self, t, ids, tier, user, steps, noise, z, until: float, hold: bool = False,
                cont: bool = False, cls: np.ndarray | None = None,
                reg: np.ndarray | None = None) -> np.ndarray:
        """Feed admitted arrivals (all <= until) with their request ids (and request classes:
        None is class 0; and users' regions with fleet regions: None is region 0) and run to
        `until`; returns each one's fate (0 queued, else 1 + kernel reason). hold: the next
        call brings more arrivals at exactly `until`; cont: this is that call (kernel.advance)."""
        fate = np.zeros(len(t), dtype=np.int8)
        if cls is None and self.general:
            cls = np.zeros(len(t), np.int16)
        elif not self.general:
            cls = None  # the loop's one-group version
        if self.regions is None:
            reg = None  # the loop's version without regions
        elif reg is None:
            reg = np.zeros(len(t), np.int16)
        i = 0
        while True:
            code, i = self._kernel(t, ids, tier, cls, reg, user, steps, noise, z, fate)(
                self.S, t, ids, tier, cls, reg, user, steps, noise, z, fate, i, float(until),
                bool(hold), bool(cont))
            cont = False  # a call again after growing starts with a dispatch, as before
            if code == K.DONE:
                return fate
            if code == K.GROW:
                self._grow_queues()
            else:
                self._grow_outbox()

    def _kernel(self, *arrays):
        """kernel.advance's compiled entry point for this state and these arrays' types.
        numba's dispatcher types every argument per call, the state's ~130 arrays included
        (~12 us a call, a few ns a request at a window's few thousand): the state tuple is
        immutable (growing makes a new one), so its types are found once per tuple; the
        arrivals' are fingerprinted per call (dtype, layout, flags), as the dispatcher does."""
        if not hasattr(K.advance, "overloads"):  # (wrapped, e.g. by a profiler)
            return K.advance
        if self._ep_state is not self.S:
            self._ep_state, self._ep = self.S, {}
        key = tuple(map(_fingerprint, arrays))
        ep = self._ep.get(key)
        if ep is None:
            sig = (typeof(self.S), *map(typeof, arrays), types.int64, types.float64,
                   types.boolean, types.boolean)
            if sig not in K.advance.overloads:
                K.advance.compile(sig)
            ep = self._ep[key] = K.advance.overloads[sig].entry_point
        return ep

    def __getstate__(self) -> dict:  # the entry points are process-local: found again
        return {k: v for k, v in self.__dict__.items() if k not in ("_ep_state", "_ep")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._ep_state, self._ep = None, {}

    def outbox(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(kind, id, t, aux) of the events since the last call, in order; empties it."""
        S = self.S
        n = int(S.ob_n[0])
        out = (S.ob_kind[:n].copy(), S.ob_id[:n].copy(), S.ob_t[:n].copy(), S.ob_aux[:n].copy())
        S.ob_n[0] = 0
        return out

    def complete(self, w: int, t: float) -> None:
        """The external batch on worker w ended at t; the next advance(until >= t) sees it."""
        K.complete(self.S, int(w), float(t))

    def warm(self) -> None:
        """Compile now (or load from numba's cache) what an external fleet first calls only when a
        batch ends: compiled then, inside its event loop, it stalled every request for
        seconds (a fresh clone's cold cache) and a fault test killed an idle worker."""
        K.complete.compile((typeof(self.S), types.int64, types.float64))

    def next_event(self) -> float:
        """When the fleet next changes by itself: a batch end, a patience expiry or the
        batch-wait timer (inf: nothing pending)."""
        S = self.S
        t = float(S.tmr[0])
        if S.h_n[0] > 0:
            t = min(t, float(S.h_t[0]))
        cap = S.q_t.shape[1]
        G = S.pool_serves.shape[1]
        for ln in range(len(S.q_n)):
            k = ln // G
            if S.q_n[ln] > 0 and S.patience[k] < np.inf:
                t = min(t, float(S.q_t[ln, S.q_head[ln] % cap] + S.patience[k]))
        return t

    def _grow_outbox(self) -> None:
        S = self.S
        n = 2 * len(S.ob_kind) + 2 * int(S.q_size.sum()) + S.w_bt.shape[1] + 2
        new = {}
        for f in ("ob_kind", "ob_id", "ob_t", "ob_aux"):
            old = getattr(S, f)
            arr = np.zeros(n, old.dtype)
            arr[: len(old)] = old
            new[f] = arr
        self.S = S._replace(**new)

    def _grow_queues(self) -> None:
        S = self.S
        cap = S.q_t.shape[1]
        new = {}
        for f in QUEUE_FIELDS:
            old = getattr(S, f)
            if f == "q_reg" and self.regions is None:
                continue  # no regions: unused
            arr = np.zeros((old.shape[0], 2 * cap), old.dtype)
            for ln in range(old.shape[0]):  # unroll each ring so the head is at 0
                idx = (S.q_head[ln] + np.arange(S.q_n[ln])) % cap
                arr[ln, : S.q_n[ln]] = old[ln, idx]
            new[f] = arr
        S.q_head[:] = 0
        self.S = S._replace(**new)

    # -- what policies and the autoscaler see --

    def view(self) -> dict:
        S = self.S
        act = int(S.n_active[0])
        return {
            "now": float(S.clock[0]),
            "busy": int(S.n_busy[0]),
            "active": act,
            "utilization": S.n_busy[0] / act if act else 1.0,
            "queue_depth": int(S.q_size.sum()),
            "tier_queue": S.q_size.copy(),
            "in_system": S.n_sys.copy(),
        }
