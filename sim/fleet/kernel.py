"""Compiled event loop of the GPU fleet: tier queues, dispatch, batching, completions.

SimPy drives everything that shapes a run (chunk boundaries, schedules, autoscaling); between
two such events this loop advances the fleet exactly, event by event, without a SimPy event per
request. Events: arrival, batch completion, batch-wait timer, abandonment. Ties are resolved
completion -> abandonment -> arrival -> timer, the same inside one call and across calls.

Queues are lanes, one per (tier, batch group): a batch group is the requests that can share
a batch (same model, resolution and CFG: one cost curve). Lane l = tier * G + group; with no
request classes G = 1 and lanes are the tier queues. Tier-level counts (q_size) and rules
(limits, priority, DRR, CoDel, patience) stay per tier; a batch takes one group only, and a
pool takes only groups it holds the model of (pool_serves).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from sim.outcomes import KERNEL_REASONS, Reason
from sim.rng import _GAMMA, mix64

# Scheduling disciplines (see sim/scheduler.py for the names).
STRICT, FIFO, EDF, DRR = 0, 1, 2, 3
# Routers: the order in which pools with idle GPUs take work (cfg[5]). LISTED: as declared;
# CHEAPEST: a static order by price per image (pool_order); LEAST_LOADED: the lowest busy
# share first, at each dispatch; AFFINITY: as listed, and a GPU prefers the group of the model
# it holds (no swap).
LISTED, CHEAPEST, LEAST_LOADED, AFFINITY = 0, 1, 2, 3
# Worker states.
OFF, IDLE, BUSY, RETIRING, DOWN = 0, 1, 2, 3, 4
# Rejections decided inside the fleet, in this order in its reason axis (sim.outcomes).
R_QUEUE_FULL = KERNEL_REASONS.index(Reason.QUEUE_FULL)
R_SHED = KERNEL_REASONS.index(Reason.SHED)
R_TIMEOUT = KERNEL_REASONS.index(Reason.TIMEOUT)
R_CONCURRENCY = KERNEL_REASONS.index(Reason.RATE_LIMITED)
N_KERNEL_REASONS = len(KERNEL_REASONS)
# Return codes of advance(): DONE; GROW: tier queue storage is full; OUTBOX: the outbox
# might not hold the next event's records (the caller drains or grows it, then calls again).
DONE, GROW, OUTBOX = 0, 1, 2
# Outbox records (kind, id, t, aux), written when cfg[3] (outbox on) is set:
# STARTED (request id, time, worker), COMPLETED (request id, time, worker), DROPPED (request
# id, time, reason: R_TIMEOUT for patience or CoDel), BATCH (worker, time, batch size) after
# the STARTED records of its requests; on an external pool the caller runs it and reports
# its end (`complete`).
STARTED, COMPLETED, DROPPED, BATCH = 0, 1, 2, 3

# Streaming quantiles: log-spaced histograms (DDSketch-style). A value reported from bin i is
# within (gamma - 1) / (gamma + 1) of the true value: 0.5% for the run totals, 4.8% per interval.
HIST_MIN = 1e-4
HIST_GAMMA = 1.01
HIST_BINS = 2400
SERIES_MIN = 1e-3
SERIES_GAMMA = 1.1
SERIES_BINS = 200


@njit(cache=True, inline="always")
def hist_bin(x, xmin, lng, nbins):
    if x < xmin:
        return 0
    i = 1 + int(math.log(x / xmin) / lng)
    return i if i < nbins else nbins - 1


# The loop bins without a log: the least value of each bin (bin_edges, found by bisection on
# hist_bin itself, so on this machine's own log) and a table from a value's float bits
# (exponent and top mantissa bits: a cell narrower than a bin, ordered as the values) to the
# bin of the cell's start; a value's bin is its cell's, moved up past the edges at or below it.
# That is hist_bin exactly where hist_bin is non-decreasing; the tests check it around every
# edge (where a log's rounding could break it) and on random values.


@njit(cache=True)
def _f2u(x):
    return np.float64(x).view(np.uint64)


@njit(cache=True)
def _u2f(u):
    return np.uint64(u).view(np.float64)


@njit(cache=True)
def bin_edges(xmin, gamma, nbins):
    """e[b] = the least double with hist_bin >= b (b = 1 .. nbins - 1); e[0] = -inf and
    e[nbins] = inf (sentinels)."""
    lng = math.log(gamma)
    e = np.empty(nbins + 1)
    e[0] = -np.inf
    e[nbins] = np.inf
    e[1] = xmin  # (hist_bin: below xmin is bin 0, xmin itself is bin 1)
    for b in range(2, nbins):
        lo = _f2u(e[b - 1])  # hist_bin < b
        hi = _f2u(xmin * gamma ** (b - 1))
        while hist_bin(_u2f(hi), xmin, lng, nbins) < b:
            hi += hi - lo
        while hi - lo > np.uint64(1):
            mid = lo + (hi - lo) // np.uint64(2)
            if hist_bin(_u2f(mid), xmin, lng, nbins) >= b:
                hi = mid
            else:
                lo = mid
        e[b] = _u2f(hi)
    return e


@njit(cache=True)
def bin_table(edges, shift):
    """tab[j]: the bin of the start of cell j (cells: the values whose float bits >> shift
    are k0 + j, k0 that of edges[1]; the last cell stands for all above)."""
    nbins = edges.shape[0] - 1
    k0 = _f2u(edges[1]) >> np.uint64(shift)
    k1 = (_f2u(edges[nbins - 1]) >> np.uint64(shift)) + np.uint64(1)
    tab = np.empty(np.int64(k1 - k0) + 1, np.int16)
    b = 1
    for j in range(tab.shape[0]):
        x = max(_u2f((k0 + np.uint64(j)) << np.uint64(shift)), edges[1])
        while x >= edges[b + 1]:
            b += 1
        tab[j] = b
    return tab


# shifts: cells of 2^-7 (run totals, gamma 1.01) and 2^-4 (series, 1.1) of an octave, each
# narrower than a bin, so the step up past edges is at most one
H_SHIFT, S_SHIFT = 52 - 7, 52 - 4
H_EDGES = bin_edges(HIST_MIN, HIST_GAMMA, HIST_BINS)
H_TAB = bin_table(H_EDGES, H_SHIFT)
H_K0 = int(_f2u(HIST_MIN)) >> H_SHIFT
S_EDGES = bin_edges(SERIES_MIN, SERIES_GAMMA, SERIES_BINS)
S_TAB = bin_table(S_EDGES, S_SHIFT)
S_K0 = int(_f2u(SERIES_MIN)) >> S_SHIFT


@njit(cache=True, inline="always")
def _table_bin(x, xmin, edges, tab, k0, shift):
    """hist_bin without the log: the table's bin for x's float bits, moved up past the edge
    at or below x (a cell is narrower than a bin, so there is at most one: tested)."""
    if x < xmin:
        return 0
    j = np.int64(np.float64(x).view(np.uint64) >> np.uint64(shift)) - k0
    if j >= tab.shape[0]:
        j = tab.shape[0] - 1
    b = np.int64(tab[j])
    return b + np.int64(x >= edges[b + 1])  # (at most one edge per cell: no loop, no branch)


@njit(cache=True, inline="always")
def _hbin(x):
    """hist_bin(x, HIST_MIN, log(HIST_GAMMA), HIST_BINS) (a run total)."""
    return _table_bin(x, HIST_MIN, H_EDGES, H_TAB, H_K0, H_SHIFT)


@njit(cache=True, inline="always")
def _sbin(x):
    """hist_bin(x, SERIES_MIN, log(SERIES_GAMMA), SERIES_BINS) (a series)."""
    return _table_bin(x, SERIES_MIN, S_EDGES, S_TAB, S_K0, S_SHIFT)


@njit(cache=True, inline="always")
def _ser_ix(s, dts):
    """The series interval the integration from instant s adds to (s on a boundary that
    rounding put below it counts in the next one)."""
    ix = int(s / dts)
    if (ix + 1) * dts <= s:
        ix += 1
    return ix


@njit(cache=True, inline="always")
def _ser_ix_end(ix, dts):
    """The least instant whose _ser_ix exceeds ix. _ser_ix is non-decreasing in s (so is
    a correctly rounded s / dts), so it is ix on [any s it gave ix for, this): the loop caches
    it instead of dividing per event. The rounding it can hide sits within an ulp or two."""
    e = (ix + 1) * dts  # (its _ser_ix is > ix)
    while True:
        b = np.nextafter(e, -np.inf)
        if _ser_ix(b, dts) <= ix:
            return e
        e = b


@njit(cache=True, inline="always")
def _iv_end(iv, dts):
    """The least instant s with int(s / dts) > iv (the counts' interval; non-decreasing too)."""
    e = (iv + 1) * dts
    while int(e / dts) <= iv:
        e = np.nextafter(e, np.inf)
    while True:
        b = np.nextafter(e, -np.inf)
        if int(b / dts) <= iv:
            return e
        e = b


@njit(cache=True, inline="always")
def shed_decision(util, depth, thr_util, thr_depth):
    """True when a tier with these thresholds is shed at this utilisation and queue depth."""
    return util >= thr_util or depth >= thr_depth


# Helpers the loop calls per request that take arrays are compiled without NRT (_nrt=False):
# they only read and write the caller's arrays (borrowed, never allocated or kept), and with
# NRT each call (inlined or not) would bind every array argument with an atomic incref and
# decref, which was most of the loop's time with request classes (about half, measured).


@njit(cache=True, _nrt=False)
def _lane(k, g, p, m, G, q_n, q_t, q_head, psv, psn, grp_model):
    """The lane of tier k pool p takes from next: of group g (g >= 0, one p serves), else of
    the groups p serves (psv[p, :psn[p]], ascending) the one with the oldest head (those of
    model m first, m >= 0); -1 if none. With one group the loop does `k if q_n[k] > 0`
    itself."""
    if g >= 0:
        ln = k * G + g
        return ln if q_n[ln] > 0 else -1
    best = -1
    bt = np.inf
    for rnd in range(2 if m >= 0 else 1):
        for x in range(psn[p]):
            gg = psv[p, x]
            if rnd == 0 and m >= 0 and grp_model[gg] != m:
                continue
            ln = k * G + gg
            if q_n[ln] > 0 and q_t[ln, q_head[ln]] < bt:
                bt = q_t[ln, q_head[ln]]
                best = ln
        if best >= 0:
            break
    return best


@njit(cache=True, _nrt=False)
def _region_rate(r, g0, nR, pool_reg, pool_rate, p_act, pool_serves):
    """The live images/s at max batch of fleet region r's pools that hold batch group g0's
    model (the loop caches it per region and group while no GPU comes or goes)."""
    rate = 0.0
    for p in range(pool_reg.shape[0]):
        if pool_reg[p] == r and pool_serves[p, g0 * nR + r]:
            rate += p_act[p] * pool_rate[p]
    return rate


@njit(cache=True, inline="always")
def _region_ahead(r, k, G, nR, G0, q_n, rank, strict):
    """The requests queued in fleet region r at tier k's priority or above (all of them
    unless strict priority); G0 = G // nR batch groups (the caller's: no division here)."""
    ahead = 0
    for kk in range(rank.shape[0]):
        if strict and rank[kk] > rank[k]:
            continue
        for gg in range(G0):
            ahead += q_n[kk * G + gg * nR + r]
    return ahead


@njit(cache=True, inline="always")
def _wait_of(down, rate, ahead):
    """Predicted wait in a region: its queue ahead over its rate; inf while the region is
    out or none of its pools holding the model has a live GPU."""
    if down or rate <= 0.0:
        return np.inf
    return ahead / rate


@njit(cache=True, inline="always")
def _stays_home(wh, spill):
    """Home takes the request: its predicted wait is finite and within the spill threshold."""
    return wh <= spill[0] and wh < np.inf


@njit(cache=True, _nrt=False)
def _region_wait(r, k, g0, G, nR, q_n, rank, strict, pool_reg, pool_rate, p_act, reg_down,
                 pool_serves):
    """Predicted wait of a tier-k arrival of batch group g0 in fleet region r (_wait_of)."""
    if reg_down[r]:
        return np.inf
    return _wait_of(False, _region_rate(r, g0, nR, pool_reg, pool_rate, p_act, pool_serves),
                    _region_ahead(r, k, G, nR, G // nR, q_n, rank, strict))


@njit(cache=True, _nrt=False)
def _route(u, k, g0, G, nR, q_n, rank, strict, reg_home, reg_net, spill, pool_reg, pool_rate,
           p_act, reg_down, pool_serves):
    """The fleet region a tier-k request of users' region u goes to (sim/regions.py): home,
    unless home's predicted wait is over the spill threshold or infinite (its GPUs out, or
    none live) and another region within the latency cap offers a lower network latency +
    wait."""
    h = reg_home[u]
    wh = _region_wait(h, k, g0, G, nR, q_n, rank, strict, pool_reg, pool_rate, p_act, reg_down,
                      pool_serves)
    if _stays_home(wh, spill):
        return h
    best = reg_net[u, h] + wh
    r = h
    for rr in range(nR):
        if rr == h or reg_net[u, rr] > spill[1]:
            continue
        w = _region_wait(rr, k, g0, G, nR, q_n, rank, strict, pool_reg, pool_rate, p_act,
                         reg_down, pool_serves)
        if w < np.inf and reg_net[u, rr] + w < best:
            best = reg_net[u, rr] + w
            r = rr
    return r


# ---- completion heap (min-heap of batch end times) ----


@njit(cache=True, _nrt=False)
def _leave_as_timeout(k, u, ta0, now, iv, warm, nU, n_sys, ser_rej, user_inflight, sum_sys,
                      aband_stats):
    """A queued request leaves unserved (its patience ran out, or CoDel dropped it): out of
    the system, its user's in-flight slot freed, its time in system still counted (Little)."""
    n_sys[k] -= 1
    ser_rej[iv, k, R_TIMEOUT] += 1
    if u >= 0 and u < nU:
        user_inflight[u] -= 1
    if ta0 >= warm:
        sum_sys[k] += now - ta0
        aband_stats[k] += 1


@njit(cache=True, _nrt=False)
def _exp1(ep):
    """An exponential(1) draw from a counter-based stream (splitmix64 of key + counter):
    the empty epochs of cycling workers, with no process-global random state."""
    # mix64 adds one gamma itself: the hash of key + counter * gamma, as it always was
    z = mix64(np.uint64(ep[0]) + np.uint64(ep[1]) * _GAMMA - _GAMMA)
    ep[1] += 1
    return -math.log((float(z >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0))


@njit(cache=True, _nrt=False)
def _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, kind, rid, t, aux):
    n = ob_n[0]
    ob_kind[n] = kind
    ob_id[n] = rid
    ob_t[n] = t
    ob_aux[n] = aux
    ob_n[0] = n + 1


@njit(cache=True, inline="always")
def _heap_push(ht, hw, hn, t, w):
    i = hn[0]
    hn[0] = i + 1
    ht[i] = t
    hw[i] = w
    while i > 0:
        p = (i - 1) >> 1
        if ht[p] < ht[i] or (ht[p] == ht[i] and hw[p] <= hw[i]):
            break
        ht[p], ht[i] = ht[i], ht[p]
        hw[p], hw[i] = hw[i], hw[p]
        i = p


@njit(cache=True, inline="always")
def _heap_pop(ht, hw, hn):
    """Bottom-up: the hole left at the root goes down to a leaf along the smaller children
    (no comparison with the moved element on the way), then the last element rises from
    there. Keys (end time, worker) are distinct (a worker has one batch), so the order of
    pops is the same for any valid heap. The child is chosen without a branch (its outcome
    is a coin toss), with a sentinel (inf) in the freed slot n standing for a missing right
    child, and indices unsigned (no negative-index wrap)."""
    one = np.uint64(1)
    w = hw[0]
    n = np.uint64(hn[0] - 1)
    hn[0] = n
    xt = ht[n]
    xw = hw[n]
    ht[n] = np.inf  # (slot n is outside the heap now; an end time is finite)
    i = np.uint64(0)
    a = one
    while a < n:
        b = a + one
        tb, ta = ht[b], ht[a]
        c = a + np.uint64((tb < ta) | ((tb == ta) & (hw[b] < hw[a])))
        ht[i] = ht[c]
        hw[i] = hw[c]
        i = c
        a = i + i + one
    while i > np.uint64(0):
        p = (i - one) >> one
        if ht[p] < xt or (ht[p] == xt and hw[p] <= xw):
            break
        ht[i] = ht[p]
        hw[i] = hw[p]
        i = p
    ht[i] = xt
    hw[i] = xw
    return w


# ---- the loop ----
# One function with the state unpacked into locals: numba then keeps array references out
# of the per-event path (attribute access on the state tuple costs atomic refcounts).


@njit(cache=True, nogil=True)  # nogil: the demand thread (Run(threads=True)) runs beside it
def advance(S, at, aid, atier, acls, areg, auser, asteps, anoise, az, afate, i0, until, hold,
            cont):
    """Run the fleet through the admitted arrivals at[i0:] (all <= until) and on to `until`.

    hold: more arrivals at exactly `until` follow in the next call (a caller feeding arrivals
    in pieces): events at `until` other than these arrivals wait for that call. cont: this
    call is that next one (nothing changed the fleet in between), so it starts with the
    events at its clock in their usual order (batch ends and timeouts, then arrivals, then
    the batch-wait timer) instead of a dispatch: the pieces give what one call would have.

    aid holds the arrivals' request ids (kept in queue and batch slots, written to the
    outbox), acls their request classes. asteps is each request's step
    cap (inf: its class's steps, or without classes its pool's own; brownout lowers it or
    switches the class). afate[i] is set to 0 (queued) or 1 + reason (rejected inside the
    fleet). Returns (code, i): GROW means tier queue storage is full at arrival i, OUTBOX
    that the outbox may not hold the next event; grow (or drain) and call again from i.

    acls None: one batch group held by every pool, pools taken as listed (no request
    classes). numba compiles that case apart with the class, lane and router paths folded
    away (skipped at run time they cost the one-group loop ~15%). areg: the arrivals' users'
    regions with fleet regions (sim/regions.py), None without (compiled apart as well).
    """
    general = acls is not None
    regs = areg is not None
    warm, dts, q_total_limit, obon, nominal = S.cfg[0], S.cfg[1], S.cfg[2], S.cfg[3] > 0, S.cfg[4]
    prio_order, disc, lifo, deadline, slo, patience = (
        S.prio_order, S.disc[0], S.lifo, S.deadline, S.slo, S.patience)
    q_limit, tier_limit, user_limit, codel = S.q_limit, S.tier_limit, S.user_limit, S.codel
    drr_quantum, drr_deficit, drr_ptr = S.drr_quantum, S.drr_deficit, S.drr_ptr
    pool_maxb, pool_maxw, pool_cycle, pool_dist, pool_sigma = (
        S.pool_maxb, S.pool_maxw, S.pool_cycle, S.pool_dist, S.pool_sigma)
    cost_fixed, cost_step, shed_util, shed_depth = S.cost_fixed, S.cost_step, S.shed_util, S.shed_depth
    pool_steps, pool_ext, tmr, deg, deg_stats = S.pool_steps, S.pool_ext, S.tmr, S.deg, S.deg_stats
    ep = S.ep
    router = int(S.cfg[5]) if general else LISTED
    cls_on = general and S.cfg[6] > 0  # request classes: per-class counts
    cost_enc, cls_group, cls_steps, cls_enc, cls_quality, deg_cls = (
        S.cost_enc, S.cls_group, S.cls_steps, S.cls_enc, S.cls_quality, S.deg_cls)
    grp_model, pool_serves, pool_swap, pool_order, p_act, swaps, cls_stats = (
        S.grp_model, S.pool_serves, S.pool_swap, S.pool_order, S.p_act, S.swaps, S.cls_stats)
    q_t, q_steps, q_noise, q_z, q_user, q_head, q_size, q_id = (
        S.q_t, S.q_steps, S.q_noise, S.q_z, S.q_user, S.q_head, S.q_size, S.q_id)
    q_n, q_cls, q_reg = S.q_n, S.q_cls, S.q_reg
    w_bid, w_steps, w_bc, w_model, w_br = S.w_bid, S.w_steps, S.w_bc, S.w_model, S.w_br
    reg_home, reg_net, pool_reg, pool_rate, spill, reg_down = (
        S.reg_home, S.reg_net, S.pool_reg, S.pool_rate, S.spill, S.reg_down)
    reg_done, reg_drop, reg_nsys, reg_spill, reg_lat_hist, reg_stats = (
        S.reg_done, S.reg_drop, S.reg_nsys, S.reg_spill, S.reg_lat_hist, S.reg_stats)
    ob_kind, ob_id, ob_t, ob_aux, ob_n = S.ob_kind, S.ob_id, S.ob_t, S.ob_aux, S.ob_n
    obcap = ob_kind.shape[0]
    w_state, w_pool, w_speed, w_until, w_bn = S.w_state, S.w_pool, S.w_speed, S.w_until, S.w_bn
    w_bt, w_bk, w_bu, w_bstart = S.w_bt, S.w_bk, S.w_bu, S.w_bstart
    maxb = w_bt.shape[1]
    idle, idle_n, h_t, h_w, h_n = S.idle, S.idle_n, S.h_t, S.h_w, S.h_n
    clock, n_sys, n_busy, n_active, user_inflight = (
        S.clock, S.n_sys, S.n_busy, S.n_active, S.user_inflight)
    admitted, completed, abandoned, kernel_rej = S.admitted, S.completed, S.abandoned, S.kernel_rej
    adm_stats, done_stats, aband_stats, good = S.adm_stats, S.done_stats, S.aband_stats, S.good
    sum_wait, sum_lat, sum_sys, area_sys, area, batches = (
        S.sum_wait, S.sum_lat, S.sum_sys, S.area_sys, S.area, S.batches)
    wait_hist, lat_hist = S.wait_hist, S.lat_hist
    ser_busy, ser_active, ser_queue, ser_admitted, ser_started = (
        S.ser_busy, S.ser_active, S.ser_queue, S.ser_admitted, S.ser_started)
    ser_completed, ser_good, ser_rej, ser_lat_hist = (
        S.ser_completed, S.ser_good, S.ser_rej, S.ser_lat_hist)

    nK = q_size.shape[0]
    G = pool_serves.shape[1] if general else 1  # batch groups (1 without request classes)
    nR = int(S.cfg[7]) if regs else 1  # fleet regions: lane group = batch group * nR + region
    strict = disc == STRICT
    deg_on = False  # brownout on in some tier (else the arrival skips its checks)
    for k in range(deg.shape[0]):
        if deg[k, 3] > 0.0:
            deg_on = True
    rank = np.empty(prio_order.shape[0], np.int64)  # a tier's place in priority order
    for jj in range(prio_order.shape[0]):
        rank[prio_order[jj]] = jj
    order = pool_order.copy()
    P = idle_n.shape[0]
    n_idle = 0  # idle workers, all pools (kept up to date: no dispatch scan without one)
    for p in range(P):
        n_idle += idle_n[p]
    nI = ser_busy.shape[0]
    cap = q_t.shape[1]
    nU = user_inflight.shape[0]
    n = at.shape[0]
    i = i0
    total = 0  # requests queued, all tiers
    for k in range(nK):
        total += q_size[k]
    # Kept up to date instead of rescanned per event: per batch group, the requests queued
    # (all tiers) and their oldest head (gstale: popped since, recomputed when asked); the
    # earliest patience expiry (tb_stale likewise); the groups each pool serves, ascending.
    gn = np.zeros(G, np.int64)
    gold = np.full(G, np.inf)
    gstale = np.ones(G, np.bool_)
    for k in range(nK):
        for g in range(G):
            gn[g] += q_n[k * G + g]
    psv = np.zeros((P, G), np.int64)
    psn = np.zeros(P, np.int64)
    for p in range(P):
        for g in range(G):
            if not general or pool_serves[p, g]:
                psv[p, psn[p]] = g
                psn[p] += 1
    # tbc: the earliest patience expiry, or while tb_stale a lower bound of it (a pop can
    # only raise the minimum, an arrival lowers both alike): the lanes are rescanned only
    # when the bound could be the next event, not after every pop (-inf: not known yet)
    tbc = -np.inf
    tb_stale = True
    # per pool, with fleet regions (pools of disjoint groups idle at once; not cycling ones):
    # found not ready, its next ready instant (inf: nothing queued for it) and nothing queued
    # or taken in its groups since (pclean): the dispatch reuses that instead of rescanning
    # every pool at every event (without regions the bookkeeping cost more than it saved)
    gpl = np.zeros((G, P), np.int64)  # the pools serving each group
    gpn = np.zeros(G, np.int64)
    for p in range(P):
        for x in range(psn[p]):
            g = psv[p, x]
            gpl[g, gpn[g]] = p
            gpn[g] += 1
    pclean = np.zeros(P, np.bool_)
    ptn = np.full(P, np.inf)
    # With regions and no cycling pool, a dispatch that would find every pool with an idle
    # GPU clean and not ready only arms the timer at the earliest of their ready instants:
    # dcache says the last scan left it so (dtimer that instant, dtot0 whether nothing was
    # queued), until a pool's flag clears, a GPU goes idle or the queue empties or fills
    can_cache = regs and not obon
    for p in range(P):
        if pool_cycle[p]:
            can_cache = False
    dcache = False
    dtimer = np.inf
    dtot0 = False
    G0 = G // nR  # batch groups (of the scenario's classes)
    rrate = np.zeros((nR, G0))  # _region_rate per fleet region and batch group
    rate_stale = True
    # the series interval of the integration (_ser_ix) and of the counts (int(t / dts)) on
    # [lo, hi): instants only grow, so a division per interval instead of per event
    sx, sx_lo, sx_hi = 0, np.inf, np.inf
    ivr, iv_lo, iv_hi = 0, np.inf, np.inf
    now = clock[0]
    timer = tmr[0] if cont else np.inf  # the timer the held call left armed
    first = not cont
    while True:
        if not first:
            if obon and ob_n[0] + 2 * total + maxb + 2 > obcap:
                tmr[0] = timer
                return OUTBOX, i  # (calling again at this instant redoes nothing)
            # -- pick the next event --
            ta = at[i] if i < n else np.inf
            tc = h_t[0] if h_n[0] > 0 else np.inf
            if tb_stale and tbc <= min(ta, tc, timer):
                # abandonment: the oldest of a lane is always at its front
                tbc = np.inf
                for k in range(nK):
                    if q_size[k] > 0 and patience[k] < np.inf:
                        for ln in range(k * G, k * G + G):
                            if q_n[ln] > 0:
                                v = q_t[ln, q_head[ln]] + patience[k]
                                if v < tbc:
                                    tbc = v
                tb_stale = False
            tb = tbc
            t = min(ta, tc, tb, timer)
            if t > until or (hold and t == until and ta != t):
                break
            # -- integrate the state from the last event to t --
            t0 = clock[0]
            if t > t0:
                if t > warm:
                    dt = t - (t0 if t0 > warm else warm)
                    for k in range(nK):
                        area_sys[k] += n_sys[k] * dt
                    area[0] += n_busy[0] * dt
                    area[1] += n_active[0] * dt
                s = t0
                while s < t:
                    if s < sx_lo or s >= sx_hi:
                        sx = _ser_ix(s, dts)
                        sx_lo = s
                        sx_hi = _ser_ix_end(sx, dts)
                    ix = sx
                    if ix >= nI:
                        break
                    e = min((ix + 1) * dts, t)
                    d = e - s
                    ser_busy[ix] += n_busy[0] * d
                    ser_active[ix] += n_active[0] * d
                    for k in range(nK):
                        ser_queue[ix, k] += q_size[k] * d
                    s = e
                clock[0] = t
            now = t
            if now < iv_lo or now >= iv_hi:
                ivr = int(now / dts)
                iv_lo = now
                iv_hi = _iv_end(ivr, dts)
            iv = min(ivr, nI - 1)
            if tc == t:
                # -- a batch completes --
                w = _heap_pop(h_t, h_w, h_n)
                # per batch: the serving region; per request, its tier's SLO and warm-up test
                # once (the stores below could alias them for the compiler: no reloads)
                fr = pool_reg[w_pool[w]] if regs else 0
                for j in range(w_bn[w]):
                    k = w_bk[w, j]
                    ta0 = w_bt[w, j]
                    sk = slo[k]
                    aw = ta0 >= warm
                    n_sys[k] -= 1
                    completed[k] += 1
                    ser_completed[iv, k] += 1
                    lat = now - ta0
                    hb = 0
                    if regs:
                        # the network latency from the users' region to the serving one
                        ur = w_br[w, j]
                        net = reg_net[ur, fr]
                        lat += net
                        reg_nsys[ur] -= 1
                        reg_done[ur, fr] += 1
                        if aw:
                            reg_stats[ur, 0] += 1
                            reg_stats[ur, 1] += lat
                            reg_stats[ur, 3] += net
                            hb = _hbin(lat)  # (lat_hist's bin too)
                            reg_lat_hist[ur, hb] += 1
                            if lat <= sk:
                                reg_stats[ur, 2] += 1
                    ok = lat <= sk
                    u = w_bu[w, j]
                    if u >= 0 and u < nU:
                        user_inflight[u] -= 1
                    if obon:
                        _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, COMPLETED, w_bid[w, j], now, w)
                    ser_lat_hist[iv, k, _sbin(lat)] += 1
                    ser_good[iv, k] += ok
                    if aw:
                        if cls_on:
                            c = w_bc[w, j]
                            cls_stats[c, 3] += 1
                            cls_stats[c, 4] += lat
                            if ok:
                                cls_stats[c, 5] += 1
                        done_stats[k] += 1
                        sum_lat[k] += lat
                        sum_sys[k] += now - ta0  # time in the fleet (Little), no network
                        if not regs:
                            hb = _hbin(lat)
                        lat_hist[k, hb] += 1
                        good[k] += ok
                w_bn[w] = 0
                n_busy[0] -= 1
                if w_state[w] == RETIRING:
                    w_state[w] = OFF
                    n_active[0] -= 1
                    p_act[w_pool[w]] -= 1
                    rate_stale = True
                else:
                    p = w_pool[w]
                    w_state[w] = IDLE
                    idle[p, idle_n[p]] = w
                    idle_n[p] += 1
                    n_idle += 1
                    dcache = False
            elif tb == t:
                # -- waiting requests whose patience ran out leave --
                tb_stale = True
                for k in range(nK):
                    if patience[k] == np.inf:
                        continue
                    for ln in range(k * G, k * G + G):
                        while q_n[ln] > 0:
                            idx = q_head[ln]
                            ta0 = q_t[ln, idx]
                            if ta0 + patience[k] > now:
                                break
                            q_head[ln] = idx + 1 if idx + 1 < cap else 0
                            q_n[ln] -= 1
                            if q_n[ln] == 0:
                                q_head[ln] = 0  # (an empty ring starts over: see below)
                            q_size[k] -= 1
                            total -= 1
                            gn[ln - k * G] -= 1
                            gstale[ln - k * G] = True
                            if regs:
                                for x in range(gpn[ln - k * G]):
                                    pclean[gpl[ln - k * G, x]] = False
                                dcache = False
                            abandoned[k] += 1
                            if regs:
                                reg_nsys[q_reg[ln, idx]] -= 1
                                reg_drop[q_reg[ln, idx]] += 1
                            if obon:
                                _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, DROPPED, q_id[ln, idx],
                                     now, R_TIMEOUT)
                            _leave_as_timeout(k, q_user[ln, idx], ta0, now, iv, warm, nU, n_sys,
                                              ser_rej, user_inflight, sum_sys, aband_stats)
            elif ta == t:
                # -- an arrival: fleet-side admission, then its tier queue --
                k = atier[i]
                if q_size[k] >= cap:
                    return GROW, i
                u = auser[i]
                util = n_busy[0] / n_active[0] if n_active[0] > 0 else 1.0
                reason = -1
                if q_size[k] >= q_limit[k] or total >= q_total_limit:
                    reason = R_QUEUE_FULL
                elif shed_decision(util, total, shed_util[k], shed_depth[k]):
                    reason = R_SHED
                elif n_sys[k] >= tier_limit[k] or (u >= 0 and u < nU and user_inflight[u] >= user_limit[k]):
                    reason = R_CONCURRENCY
                if reason >= 0:
                    afate[i] = 1 + reason
                    ser_rej[iv, k, reason] += 1
                    kernel_rej[k, reason] += 1
                else:
                    afate[i] = 0
                    if q_size[k] == 0:
                        codel[k, 2] = t  # CoDel: the last instant the tier's queue was empty
                    st = asteps[i]
                    if acls is None:
                        c0 = 0
                    else:
                        c0 = acls[i]
                    c = c0
                    low = False
                    if deg_on and deg[k, 3] > 0.0:
                        # brownout: a cheaper class and/or fewer steps for this tier at this
                        # utilisation or depth
                        deg_stats[k, 0] += 1
                        if shed_decision(util, total, deg[k, 0], deg[k, 1]):
                            low = True
                            c = deg_cls[k, c0]
                    cs = cls_steps[c] if general else np.inf
                    if cs < st:
                        st = cs
                    if low and deg[k, 2] < st:
                        st = deg[k, 2]
                    if deg_on and deg[k, 3] > 0.0:
                        ref = cls_steps[c0] if general and cls_steps[c0] < np.inf else nominal
                        if st < ref or c != c0:
                            deg_stats[k, 1] += 1
                        deg_stats[k, 2] += min(st, ref)
                        if cs < np.inf:  # quality proxy of the class served, at its steps
                            deg_stats[k, 3] += cls_quality[c] * min(st, cs) / cs
                    if regs:
                        ur = areg[i]
                        g0 = cls_group[c]
                        r = reg_home[ur]
                        if rate_stale:
                            for rr in range(nR):
                                for gg in range(G0):
                                    rrate[rr, gg] = _region_rate(rr, gg, nR, pool_reg, pool_rate,
                                                                 p_act, pool_serves)
                            rate_stale = False
                        # _route's first answer (home) from the cached rate, without the call
                        wh = _wait_of(reg_down[r], rrate[r, g0],
                                      _region_ahead(r, k, G, nR, G0, q_n, rank, strict))
                        if not _stays_home(wh, spill):
                            r = _route(ur, k, g0, G, nR, q_n, rank, strict, reg_home,
                                       reg_net, spill, pool_reg, pool_rate, p_act, reg_down,
                                       pool_serves)
                        if r != reg_home[ur]:
                            reg_spill[ur] += 1
                        reg_nsys[ur] += 1
                        ln = k * G + cls_group[c] * nR + r
                    else:
                        ln = k * G + cls_group[c] if general else k
                    j = q_head[ln] + q_n[ln]
                    if j >= cap:
                        j -= cap
                    q_t[ln, j] = t
                    q_steps[ln, j] = st
                    q_noise[ln, j] = anoise[i]
                    q_z[ln, j] = az[i]
                    q_user[ln, j] = u
                    if general:
                        q_cls[ln, j] = c
                    if regs:
                        q_reg[ln, j] = ur
                    if obon:
                        q_id[ln, j] = aid[i]
                    if q_n[ln] == 0 and patience[k] < np.inf:
                        v = t + patience[k]  # the lane's new head: its expiry
                        if v < tbc:
                            tbc = v
                    g = ln - k * G
                    if gn[g] == 0:  # (a group's others arrived no later)
                        gold[g] = t
                        gstale[g] = False
                    gn[g] += 1
                    if regs:
                        # a pool found not ready stays so unless this arrival fills a batch
                        # of the group or, its first, is due at once; else its next ready
                        # instant is the earlier of its own and this one's (what a rescan
                        # of the pool would find: only this group's count and head changed)
                        for x in range(gpn[g]):
                            pp = gpl[g, x]
                            if pclean[pp]:
                                if gn[g] >= pool_maxb[pp]:
                                    pclean[pp] = False
                                    dcache = False
                                elif gn[g] == 1:
                                    v = t + pool_maxw[pp]
                                    if now >= v:
                                        pclean[pp] = False
                                        dcache = False
                                    elif v < ptn[pp]:
                                        ptn[pp] = v
                                        if idle_n[pp] > 0 and v < dtimer:
                                            dtimer = v  # (what the scan's minimum becomes)
                    q_n[ln] += 1
                    q_size[k] += 1
                    total += 1
                    n_sys[k] += 1
                    admitted[k] += 1
                    ser_admitted[iv, k] += 1
                    if u >= 0 and u < nU:
                        user_inflight[u] += 1
                    if t >= warm:
                        adm_stats[k] += 1
                i += 1
            # else: the batch-wait timer fired; dispatch below launches the batch
        first = False

        # -- dispatch: idle workers take batches (a cycling worker also runs empty epochs) --
        timer = np.inf
        if n_idle == 0:
            continue  # no idle worker (the fleet saturated): the scan below would find none
        if dcache and now < dtimer and (total == 0) == dtot0:
            timer = dtimer  # what the scan would find (see can_cache)
            continue
        if now < iv_lo or now >= iv_hi:
            ivr = int(now / dts)
            iv_lo = now
            iv_hi = _iv_end(ivr, dts)
        iv = min(ivr, nI - 1)
        if router == LEAST_LOADED and P > 1:
            # lowest busy share first (ties: as listed); a pool with no live GPU goes last
            for a in range(P):
                order[a] = a
            for a in range(1, P):
                x = order[a]
                ux = (p_act[x] - idle_n[x]) / p_act[x] if p_act[x] > 0 else 2.0
                b2 = a - 1
                while b2 >= 0:
                    y = order[b2]
                    uy = (p_act[y] - idle_n[y]) / p_act[y] if p_act[y] > 0 else 2.0
                    if uy <= ux:
                        break
                    order[b2 + 1] = y
                    b2 -= 1
                order[b2 + 1] = x
        for pi in range(P):
            p = order[pi] if general else pi
            while idle_n[p] > 0:
                if total == 0 and not pool_cycle[p]:
                    break
                if regs and pclean[p] and now < ptn[p]:  # still not ready: as found
                    maxb = pool_maxb[p]  # (as the scan leaves it: the outbox check reads it)
                    if ptn[p] < timer:
                        timer = ptn[p]
                    break
                # what this pool can take: the queued requests of the groups it serves; a
                # group is ready to go when it fills a batch or its oldest has waited max_wait
                avail = 0
                ready = False
                tnext = np.inf
                maxb = pool_maxb[p]
                for x in range(psn[p]):
                    g = psv[p, x]
                    cnt = gn[g]
                    if cnt == 0:
                        continue
                    avail += cnt
                    if cnt >= maxb:
                        ready = True
                        continue
                    if gstale[g]:
                        oldest = np.inf
                        for k in range(nK):
                            ln = k * G + g
                            if q_n[ln] > 0 and q_t[ln, q_head[ln]] < oldest:
                                oldest = q_t[ln, q_head[ln]]
                        gold[g] = oldest
                        gstale[g] = False
                    oldest = gold[g]
                    if now >= oldest + pool_maxw[p]:
                        ready = True
                    elif oldest + pool_maxw[p] < tnext:
                        tnext = oldest + pool_maxw[p]
                if not pool_cycle[p]:
                    if regs and not ready:
                        pclean[p] = True
                        ptn[p] = tnext
                    if avail == 0:
                        break
                    if not ready:
                        if tnext < timer:
                            timer = tnext
                        break
                idle_n[p] -= 1
                n_idle -= 1
                w = idle[p, idle_n[p]]
                avail0 = avail
                psteps = pool_steps[p]
                maxsteps = 0.0
                noise = 1.0
                bg = -1  # the batch's group, set by its first request
                pm = w_model[w] if router == AFFINITY else -1
                one = pool_serves[p, 0] if general else True  # (one group) held here?
                n_enc = 0
                j = 0
                while j < maxb and avail > 0:
                    # which tier (and lane) gives the next request
                    kk = -1
                    ll = -1
                    if disc == STRICT:
                        for jj in range(nK):
                            if G == 1:
                                ln = prio_order[jj] if one and q_n[prio_order[jj]] > 0 else -1
                            elif bg >= 0:  # (_lane's first case, without the call)
                                ln = prio_order[jj] * G + bg
                                if q_n[ln] == 0:
                                    ln = -1
                            else:
                                ln = _lane(prio_order[jj], bg, p, pm, G, q_n, q_t, q_head,
                                           psv, psn, grp_model)
                            if ln >= 0:
                                kk = prio_order[jj]
                                ll = ln
                                break
                    elif disc == FIFO or disc == EDF:
                        bv = np.inf
                        for k in range(nK):
                            if G == 1:
                                ln = k if one and q_n[k] > 0 else -1
                            elif bg >= 0:
                                ln = k * G + bg
                                if q_n[ln] == 0:
                                    ln = -1
                            else:
                                ln = _lane(k, bg, p, pm, G, q_n, q_t, q_head, psv, psn,
                                           grp_model)
                            if ln >= 0:
                                v = q_t[ln, q_head[ln]] + (deadline[k] if disc == EDF else 0.0)
                                if v < bv:
                                    bv = v
                                    kk = k
                                    ll = ln
                    else:
                        # DRR: a tier gets its quantum once per visit and serves while its
                        # deficit covers the next request's cost (GPU-seconds at batch 1).
                        while kk < 0:
                            k = drr_ptr[0]
                            if G == 1:
                                ln = k if one and q_n[k] > 0 else -1
                            elif bg >= 0:
                                ln = k * G + bg
                                if q_n[ln] == 0:
                                    ln = -1
                            else:
                                ln = _lane(k, bg, p, pm, G, q_n, q_t, q_head, psv, psn,
                                           grp_model)
                            if ln < 0:
                                drr_deficit[k] = 0.0
                                drr_ptr[0] = (k + 1) % nK
                                drr_ptr[1] = 0
                                continue
                            if drr_ptr[1] == 0:
                                drr_deficit[k] += drr_quantum[k]
                                drr_ptr[1] = 1
                            jx = q_head[ln]
                            if lifo[k]:
                                jx += q_n[ln] - 1
                                if jx >= cap:
                                    jx -= cap
                            # the request's GPU-seconds on the pool that is picking
                            gl = ln - k * G
                            rc = (cost_fixed[p, gl, 1] + min(q_steps[ln, jx], pool_steps[p])
                                  * cost_step[p, gl, 1])
                            if general and cls_enc[q_cls[ln, jx]]:
                                rc += cost_enc[p, gl, 1]
                            if drr_deficit[k] >= rc:
                                drr_deficit[k] -= rc
                                kk = k
                                ll = ln
                            else:
                                drr_ptr[0] = (k + 1) % nK
                                drr_ptr[1] = 0
                    k = kk
                    ln = ll
                    if strict and j > 0 and codel[k, 0] == np.inf:
                        # Strict priority, the batch's group known (and no CoDel to drop
                        # any): no event comes between two picks to fill a lane above this
                        # one, so the rest of the batch comes from it while it lasts. Its m
                        # requests are taken as one block: the same per-request updates in
                        # the same order, the lane's, tier's and interval's counts once.
                        m = min(maxb - j, q_n[ln])
                        gg = ln - k * G
                        pk = patience[k]
                        lf = lifo[k]
                        hd = q_head[ln]
                        qn = q_n[ln]
                        for _ in range(m):
                            if lf:
                                idx = hd + qn - 1
                                if idx >= cap:
                                    idx -= cap
                            else:
                                idx = hd
                                hd = idx + 1 if idx + 1 < cap else 0
                            qn -= 1
                            ta0 = q_t[ln, idx]
                            if ta0 <= gold[gg]:
                                gstale[gg] = True
                            if pk < np.inf and ta0 + pk <= tbc:
                                tb_stale = True
                            st = q_steps[ln, idx]
                            if st > psteps:
                                st = psteps
                            if st > maxsteps:
                                maxsteps = st
                            c = q_cls[ln, idx] if general else 0
                            if general and cls_enc[c]:
                                n_enc += 1
                            w_bt[w, j] = ta0
                            w_bk[w, j] = k
                            w_bu[w, j] = q_user[ln, idx]
                            if general:
                                w_bc[w, j] = c
                            if regs:
                                w_br[w, j] = q_reg[ln, idx]
                            if obon:
                                w_bid[w, j] = q_id[ln, idx]
                                _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, STARTED, q_id[ln, idx],
                                     now, w)
                            if ta0 >= warm:
                                wt = now - ta0
                                sum_wait[k] += wt
                                wait_hist[k, _hbin(wt)] += 1
                            j += 1
                        q_head[ln] = hd if qn > 0 else 0  # (an empty ring starts over)
                        q_n[ln] = qn
                        q_size[k] -= m
                        total -= m
                        avail -= m
                        gn[gg] -= m
                        ser_started[iv, k] += m
                        if regs:
                            for x in range(gpn[gg]):
                                pclean[gpl[gg, x]] = False
                        continue
                    if lifo[k]:
                        idx = q_head[ln] + q_n[ln] - 1
                        if idx >= cap:
                            idx -= cap
                    else:
                        idx = q_head[ln]
                        q_head[ln] = idx + 1 if idx + 1 < cap else 0
                    q_n[ln] -= 1
                    if q_n[ln] == 0:
                        # an empty ring starts over at slot 0: a lane that empties often (a
                        # batch takes it all) reuses its first cache lines instead of
                        # sweeping its whole capacity, cold after the glue between calls
                        q_head[ln] = 0
                    q_size[k] -= 1
                    total -= 1
                    avail -= 1
                    gg = ln - k * G
                    gn[gg] -= 1
                    ta0 = q_t[ln, idx]
                    # the group's oldest head and the earliest expiry change only if this
                    # request was (at) that minimum: a later head, or a LIFO tail, leaves them
                    if ta0 <= gold[gg]:
                        gstale[gg] = True
                    if regs:
                        for x in range(gpn[gg]):
                            pclean[gpl[gg, x]] = False
                    if patience[k] < np.inf and ta0 + patience[k] <= tbc:
                        tb_stale = True
                    if now - ta0 > codel[k, 0] and now - codel[k, 2] > codel[k, 1]:
                        # CoDel (server-queue form): the tier's queue has not been empty for
                        # an interval, so a request that waited over the target is dropped
                        kernel_rej[k, R_TIMEOUT] += 1
                        if regs:
                            reg_nsys[q_reg[ln, idx]] -= 1
                            reg_drop[q_reg[ln, idx]] += 1
                        if obon:
                            _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, DROPPED, q_id[ln, idx], now,
                                 R_TIMEOUT)
                        _leave_as_timeout(k, q_user[ln, idx], ta0, now, iv, warm, nU, n_sys,
                                          ser_rej, user_inflight, sum_sys, aband_stats)
                        continue
                    if j == 0:
                        # the batch's service noise comes from its first request (common
                        # random numbers across policy variants)
                        if pool_dist[p] == 1:
                            noise = q_noise[ln, idx]
                        elif pool_dist[p] == 2:
                            sg = pool_sigma[p]
                            noise = math.exp(sg * q_z[ln, idx] - sg * sg / 2)
                        if G > 1:  # the rest of the batch comes from this group only
                            bg = ln - k * G
                            avail = gn[bg]
                    st = q_steps[ln, idx]  # the class's (or pool's) steps unless degraded
                    if st > psteps:
                        st = psteps
                    if st > maxsteps:
                        maxsteps = st
                    c = q_cls[ln, idx] if general else 0
                    if general and cls_enc[c]:
                        n_enc += 1
                    w_bt[w, j] = ta0
                    w_bk[w, j] = k
                    w_bu[w, j] = q_user[ln, idx]
                    if general:
                        w_bc[w, j] = c
                    if regs:
                        w_br[w, j] = q_reg[ln, idx]
                    if obon:
                        w_bid[w, j] = q_id[ln, idx]
                        _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, STARTED, q_id[ln, idx], now, w)
                    ser_started[iv, k] += 1
                    if ta0 >= warm:
                        wt = now - ta0
                        sum_wait[k] += wt
                        wait_hist[k, _hbin(wt)] += 1
                    j += 1
                if j == 0 and avail0 > 0 and not pool_cycle[p]:  # CoDel dropped all it took
                    idle[p, idle_n[p]] = w
                    idle_n[p] += 1
                    n_idle += 1
                    break
                b = j
                if b == 0:
                    # an empty epoch of a cycling worker; cost_fixed[p, 0, 0] is its mean length
                    noise = _exp1(ep) if pool_dist[p] == 1 else 1.0
                    dur = cost_fixed[p, 0, 0] * noise * w_speed[w]
                else:
                    if bg < 0:
                        bg = 0
                    gpu_s = cost_fixed[p, bg, b] + maxsteps * cost_step[p, bg, b]
                    if general:
                        gpu_s += cost_enc[p, bg, n_enc]
                    dur = gpu_s * noise * w_speed[w]
                    batches[0] += 1
                    batches[1] += b
                    if general and pool_swap[p] > 0.0 and w_model[w] != grp_model[bg]:
                        # the GPU loads another model first (none held yet: no swap)
                        if w_model[w] >= 0:
                            dur += pool_swap[p]
                            swaps[p] += 1
                        w_model[w] = grp_model[bg]
                    elif router == AFFINITY:
                        w_model[w] = grp_model[bg]
                    if cls_on:
                        # batch fill per class: the batch sizes its requests ran in
                        fill = b / pool_maxb[p]
                        for jj in range(b):
                            if w_bt[w, jj] >= warm:
                                c = w_bc[w, jj]
                                cls_stats[c, 0] += 1
                                cls_stats[c, 1] += b
                                cls_stats[c, 2] += fill
                w_bn[w] = b
                w_bstart[w] = now
                w_steps[w] = maxsteps
                w_state[w] = BUSY
                n_busy[0] += 1
                if obon and b > 0:
                    _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, BATCH, w, now, b)
                if obon and b > 0 and pool_ext[p]:
                    # the batch runs outside (a real denoiser, a GPU worker process):
                    # `complete` reports its end; w_until holds the drawn one (a worker
                    # process of the cost model sleeps until it), nothing is scheduled
                    w_until[w] = now + dur
                else:
                    w_until[w] = now + dur
                    _heap_push(h_t, h_w, h_n, now + dur, w)
        if can_cache:
            # what a scan now would do: with every pool that has an idle GPU clean and not
            # ready, arm the timer at the earliest of their ready instants, launch nothing
            dcache = True
            dtimer = np.inf
            dtot0 = total == 0
            if total > 0:
                for p in range(P):
                    if idle_n[p] > 0:
                        if pclean[p] and now < ptn[p]:
                            if ptn[p] < dtimer:
                                dtimer = ptn[p]
                        else:
                            dcache = False
                            break
    tmr[0] = timer  # the batch-wait timer left armed (for the caller's next_event)
    # integrate up to `until`
    t0 = clock[0]
    if until > t0:
        if until > warm:
            dt = until - (t0 if t0 > warm else warm)
            for k in range(nK):
                area_sys[k] += n_sys[k] * dt
            area[0] += n_busy[0] * dt
            area[1] += n_active[0] * dt
        s = t0
        while s < until:
            if s < sx_lo or s >= sx_hi:
                sx = _ser_ix(s, dts)
                sx_lo = s
                sx_hi = _ser_ix_end(sx, dts)
            ix = sx
            if ix >= nI:
                break
            e = min((ix + 1) * dts, until)
            d = e - s
            ser_busy[ix] += n_busy[0] * d
            ser_active[ix] += n_active[0] * d
            for k in range(nK):
                ser_queue[ix, k] += q_size[k] * d
            s = e
        clock[0] = until
    return DONE, i


@njit(cache=True)
def complete(S, w, t):
    """An external batch on worker w ended at t (>= the fleet's clock): its completion is
    processed by the next advance(until >= t)."""
    _heap_push(S.h_t, S.h_w, S.h_n, t, w)
    S.w_until[w] = t



@njit(cache=True)
def _gather(a, lane, fl, fs, m):
    """a[lane, :m] = a[fl[x], fs[x]] for x < m (read all, then write)."""
    tmp = np.empty(m, a.dtype)
    for x in range(m):
        tmp[x] = a[fl[x], fs[x]]
    for x in range(m):
        a[lane, x] = tmp[x]


@njit(cache=True)
def _relane(S, lane, fl, fs, m):
    _gather(S.q_t, lane, fl, fs, m)
    _gather(S.q_steps, lane, fl, fs, m)
    _gather(S.q_noise, lane, fl, fs, m)
    _gather(S.q_z, lane, fl, fs, m)
    _gather(S.q_user, lane, fl, fs, m)
    _gather(S.q_id, lane, fl, fs, m)
    _gather(S.q_cls, lane, fl, fs, m)
    _gather(S.q_reg, lane, fl, fs, m)
    S.q_head[lane] = 0
    S.q_n[lane] = m


@njit(cache=True)
def evacuate(S, r):
    """Fleet region r is out (S.reg_down[r] set): each request queued in its lanes, oldest
    first per lane, goes where `_route` sends it now (counting those already moved), merged
    into that lane by arrival time; those with nowhere to go stay. Queue storage must hold
    every lane's requests plus the largest lane of r (the caller grows it). Returns how many
    moved."""
    G = S.pool_serves.shape[1]
    nR = int(S.cfg[7])
    nK = S.q_size.shape[0]
    cap = S.q_t.shape[1]
    rank = np.empty(nK, np.int64)
    for jj in range(nK):
        rank[S.prio_order[jj]] = jj
    strict = S.disc[0] == STRICT
    moved = 0
    dest = np.empty(cap, np.int64)
    n_orig = np.empty(nR, np.int64)
    fl = np.empty(2 * cap, np.int64)
    fs = np.empty(2 * cap, np.int64)
    for k in range(nK):
        for g0 in range(G // nR):
            src = k * G + g0 * nR + r
            n = S.q_n[src]
            if n == 0:
                continue
            for d in range(nR):
                n_orig[d] = S.q_n[k * G + g0 * nR + d]
            h0 = S.q_head[src]
            for j in range(n):
                idx = (h0 + j) % cap
                u = S.q_reg[src, idx]
                d = _route(u, k, g0, G, nR, S.q_n, rank, strict, S.reg_home, S.reg_net, S.spill,
                           S.pool_reg, S.pool_rate, S.p_act, S.reg_down, S.pool_serves)
                dest[j] = d
                if d != r:  # counted where it goes (the next one's predicted waits see it)
                    S.q_n[src] -= 1
                    S.q_n[k * G + g0 * nR + d] += 1
                    if r == S.reg_home[u]:  # away from home (one that spilled here was counted)
                        S.reg_spill[u] += 1
                    moved += 1
            for d in range(nR):
                if d == r:
                    continue
                dl = k * G + g0 * nR + d
                a, na, hd = 0, n_orig[d], S.q_head[dl]
                m = 0
                j = 0
                while True:  # merge by arrival time: the lane's own first at ties
                    while j < n and dest[j] != d:
                        j += 1
                    if a >= na and j >= n:
                        break
                    ia = (hd + a) % cap
                    ib = (h0 + j) % cap
                    if j >= n or (a < na and S.q_t[dl, ia] <= S.q_t[src, ib]):
                        fl[m] = dl
                        fs[m] = ia
                        a += 1
                    else:
                        fl[m] = src
                        fs[m] = ib
                        j += 1
                    m += 1
                if m > na:
                    _relane(S, dl, fl, fs, m)
            m = 0
            for j in range(n):  # those left stay, in order
                if dest[j] == r:
                    fl[m] = src
                    fs[m] = (h0 + j) % cap
                    m += 1
            _relane(S, src, fl, fs, m)
    return moved
