"""Compiled event loop of the GPU fleet: tier queues, dispatch, batching, completions.

SimPy drives everything that shapes a run (chunk boundaries, schedules, autoscaling); between
two such events this loop advances the fleet exactly, event by event, without a SimPy event per
request. Events: arrival, batch completion, batch-wait timer, abandonment. Ties are resolved
completion -> abandonment -> arrival -> timer, the same inside one call and across calls.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from sim.outcomes import KERNEL_REASONS, Reason

# Scheduling disciplines (see sim/scheduler.py for the names).
STRICT, FIFO, EDF, DRR = 0, 1, 2, 3
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


@njit(cache=True, inline="always")
def shed_decision(util, depth, thr_util, thr_depth):
    """True when a tier with these thresholds is shed at this utilisation and queue depth."""
    return util >= thr_util or depth >= thr_depth


# ---- completion heap (min-heap of batch end times) ----


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
def _exp1(ep):
    """An exponential(1) draw from a counter-based stream (splitmix64 of key + counter):
    the empty epochs of cycling workers, with no process-global random state."""
    z = np.uint64(ep[0]) + np.uint64(ep[1]) * np.uint64(0x9E3779B97F4A7C15)
    ep[1] += 1
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return -math.log((float(z >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0))


@njit(cache=True, inline="always")
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
    w = hw[0]
    n = hn[0] - 1
    hn[0] = n
    ht[0] = ht[n]
    hw[0] = hw[n]
    i = 0
    while True:
        a = 2 * i + 1
        if a >= n:
            break
        b = a + 1
        c = a
        if b < n and (ht[b] < ht[a] or (ht[b] == ht[a] and hw[b] < hw[a])):
            c = b
        if ht[i] < ht[c] or (ht[i] == ht[c] and hw[i] <= hw[c]):
            break
        ht[c], ht[i] = ht[i], ht[c]
        hw[c], hw[i] = hw[i], hw[c]
        i = c
    return w


# ---- the loop ----
# One function with the state unpacked into locals: numba then keeps array references out
# of the per-event path (attribute access on the state tuple costs atomic refcounts).


@njit(cache=True, nogil=True)  # nogil: the demand thread (Run(threads=True)) runs beside it
def advance(S, at, aid, atier, auser, asteps, anoise, az, afate, i0, until, hold, cont):
    """Run the fleet through the admitted arrivals at[i0:] (all <= until) and on to `until`.

    hold: more arrivals at exactly `until` follow in the next call (a caller feeding arrivals
    in pieces): events at `until` other than these arrivals wait for that call. cont: this
    call is that next one (nothing changed the fleet in between), so it starts with the
    events at its clock in their usual order (batch ends and timeouts, then arrivals, then
    the batch-wait timer) instead of a dispatch: the pieces give what one call would have.

    aid holds the arrivals' request ids (kept in queue and batch slots, written to the
    outbox). asteps is each request's step cap (inf: its pool's own steps; brownout lowers
    it). afate[i] is set to 0 (queued) or 1 + reason (rejected inside the fleet). Returns
    (code, i): GROW means tier queue storage is full at arrival i, OUTBOX that the outbox may
    not hold the next event; grow (or drain) and call again from i.
    """
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
    q_t, q_steps, q_noise, q_z, q_user, q_head, q_size, q_id = (
        S.q_t, S.q_steps, S.q_noise, S.q_z, S.q_user, S.q_head, S.q_size, S.q_id)
    w_bid, w_steps = S.w_bid, S.w_steps
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
    P = idle_n.shape[0]
    nI = ser_busy.shape[0]
    cap = q_t.shape[1]
    nU = user_inflight.shape[0]
    lg = math.log(HIST_GAMMA)
    lgs = math.log(SERIES_GAMMA)
    n = at.shape[0]
    i = i0
    total = 0  # requests queued, all tiers
    for k in range(nK):
        total += q_size[k]
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
            tb = np.inf  # abandonment: the oldest of a tier is always at its front
            for k in range(nK):
                if q_size[k] > 0 and patience[k] < np.inf:
                    v = q_t[k, q_head[k]] + patience[k]
                    if v < tb:
                        tb = v
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
                    ix = int(s / dts)
                    if (ix + 1) * dts <= s:  # s sits on a boundary that rounding put below it
                        ix += 1
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
            iv = min(int(now / dts), nI - 1)
            if tc == t:
                # -- a batch completes --
                w = _heap_pop(h_t, h_w, h_n)
                for j in range(w_bn[w]):
                    k = w_bk[w, j]
                    ta0 = w_bt[w, j]
                    n_sys[k] -= 1
                    completed[k] += 1
                    ser_completed[iv, k] += 1
                    lat = now - ta0
                    u = w_bu[w, j]
                    if u >= 0 and u < nU:
                        user_inflight[u] -= 1
                    if obon:
                        _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, COMPLETED, w_bid[w, j], now, w)
                    ser_lat_hist[iv, k, hist_bin(lat, SERIES_MIN, lgs, SERIES_BINS)] += 1
                    if lat <= slo[k]:
                        ser_good[iv, k] += 1
                    if ta0 >= warm:
                        done_stats[k] += 1
                        sum_lat[k] += lat
                        sum_sys[k] += lat
                        lat_hist[k, hist_bin(lat, HIST_MIN, lg, HIST_BINS)] += 1
                        if lat <= slo[k]:
                            good[k] += 1
                w_bn[w] = 0
                n_busy[0] -= 1
                if w_state[w] == RETIRING:
                    w_state[w] = OFF
                    n_active[0] -= 1
                else:
                    p = w_pool[w]
                    w_state[w] = IDLE
                    idle[p, idle_n[p]] = w
                    idle_n[p] += 1
            elif tb == t:
                # -- waiting requests whose patience ran out leave --
                for k in range(nK):
                    while q_size[k] > 0:
                        idx = q_head[k]
                        ta0 = q_t[k, idx]
                        if ta0 + patience[k] > now:
                            break
                        q_head[k] = (idx + 1) % cap
                        q_size[k] -= 1
                        total -= 1
                        abandoned[k] += 1
                        if obon:
                            _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, DROPPED, q_id[k, idx], now,
                                 R_TIMEOUT)
                        _leave_as_timeout(k, q_user[k, idx], ta0, now, iv, warm, nU, n_sys,
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
                    j = (q_head[k] + q_size[k]) % cap
                    q_t[k, j] = t
                    st = asteps[i]
                    if deg[k, 2] < np.inf:
                        # brownout: fewer steps for this tier at this utilisation or depth
                        deg_stats[k, 0] += 1
                        if shed_decision(util, total, deg[k, 0], deg[k, 1]) and deg[k, 2] < st:
                            st = deg[k, 2]
                        if st < nominal:
                            deg_stats[k, 1] += 1
                        deg_stats[k, 2] += min(st, nominal)
                    q_steps[k, j] = st
                    q_noise[k, j] = anoise[i]
                    q_z[k, j] = az[i]
                    q_user[k, j] = u
                    if obon:
                        q_id[k, j] = aid[i]
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
        iv = min(int(now / dts), nI - 1)
        for p in range(P):
            while idle_n[p] > 0:
                if not pool_cycle[p]:
                    if total == 0:
                        break
                    oldest = np.inf
                    for k in range(nK):
                        if q_size[k] > 0 and q_t[k, q_head[k]] < oldest:
                            oldest = q_t[k, q_head[k]]
                    if total < pool_maxb[p] and now < oldest + pool_maxw[p]:
                        if oldest + pool_maxw[p] < timer:
                            timer = oldest + pool_maxw[p]
                        break
                idle_n[p] -= 1
                w = idle[p, idle_n[p]]
                b = min(total, pool_maxb[p])
                psteps = pool_steps[p]
                maxsteps = 0.0
                noise = 1.0
                j = 0
                while j < b and total > 0:
                    # which tier gives the next request
                    kk = -1
                    if disc == STRICT:
                        for jj in range(nK):
                            if q_size[prio_order[jj]] > 0:
                                kk = prio_order[jj]
                                break
                    elif disc == FIFO or disc == EDF:
                        bv = np.inf
                        for k in range(nK):
                            if q_size[k] > 0:
                                v = q_t[k, q_head[k]] + (deadline[k] if disc == EDF else 0.0)
                                if v < bv:
                                    bv = v
                                    kk = k
                    else:
                        # DRR: a tier gets its quantum once per visit and serves while its
                        # deficit covers the next request's cost (GPU-seconds at batch 1).
                        while kk < 0:
                            k = drr_ptr[0]
                            if q_size[k] == 0:
                                drr_deficit[k] = 0.0
                                drr_ptr[0] = (k + 1) % nK
                                drr_ptr[1] = 0
                                continue
                            if drr_ptr[1] == 0:
                                drr_deficit[k] += drr_quantum[k]
                                drr_ptr[1] = 1
                            jx = (q_head[k] + q_size[k] - 1) % cap if lifo[k] else q_head[k]
                            # the request's GPU-seconds on the pool that is picking
                            c = cost_fixed[p, 1] + min(q_steps[k, jx], pool_steps[p]) * cost_step[p, 1]
                            if drr_deficit[k] >= c:
                                drr_deficit[k] -= c
                                kk = k
                            else:
                                drr_ptr[0] = (k + 1) % nK
                                drr_ptr[1] = 0
                    k = kk
                    if lifo[k]:
                        idx = (q_head[k] + q_size[k] - 1) % cap
                    else:
                        idx = q_head[k]
                        q_head[k] = (idx + 1) % cap
                    q_size[k] -= 1
                    total -= 1
                    ta0 = q_t[k, idx]
                    if now - ta0 > codel[k, 0] and now - codel[k, 2] > codel[k, 1]:
                        # CoDel (server-queue form): the tier's queue has not been empty for
                        # an interval, so a request that waited over the target is dropped
                        kernel_rej[k, R_TIMEOUT] += 1
                        if obon:
                            _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, DROPPED, q_id[k, idx], now,
                                 R_TIMEOUT)
                        _leave_as_timeout(k, q_user[k, idx], ta0, now, iv, warm, nU, n_sys,
                                          ser_rej, user_inflight, sum_sys, aband_stats)
                        continue
                    if j == 0:
                        # the batch's service noise comes from its first request (common
                        # random numbers across policy variants)
                        if pool_dist[p] == 1:
                            noise = q_noise[k, idx]
                        elif pool_dist[p] == 2:
                            sg = pool_sigma[p]
                            noise = math.exp(sg * q_z[k, idx] - sg * sg / 2)
                    st = q_steps[k, idx]  # the pool's steps unless degraded (a cap)
                    if st > psteps:
                        st = psteps
                    if st > maxsteps:
                        maxsteps = st
                    w_bt[w, j] = ta0
                    w_bk[w, j] = k
                    w_bu[w, j] = q_user[k, idx]
                    if obon:
                        w_bid[w, j] = q_id[k, idx]
                        _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, STARTED, q_id[k, idx], now, w)
                    ser_started[iv, k] += 1
                    if ta0 >= warm:
                        wt = now - ta0
                        sum_wait[k] += wt
                        wait_hist[k, hist_bin(wt, HIST_MIN, lg, HIST_BINS)] += 1
                    j += 1
                if j == 0 and b > 0 and not pool_cycle[p]:  # CoDel dropped all that was queued
                    idle[p, idle_n[p]] = w
                    idle_n[p] += 1
                    break
                b = j
                if b == 0:
                    # an empty epoch of a cycling worker; cost_fixed[p, 0] is its mean length
                    noise = _exp1(ep) if pool_dist[p] == 1 else 1.0
                    dur = cost_fixed[p, 0] * noise * w_speed[w]
                else:
                    dur = (cost_fixed[p, b] + maxsteps * cost_step[p, b]) * noise * w_speed[w]
                    batches[0] += 1
                    batches[1] += b
                w_bn[w] = b
                w_bstart[w] = now
                w_steps[w] = maxsteps
                w_state[w] = BUSY
                n_busy[0] += 1
                if obon and b > 0:
                    _out(ob_kind, ob_id, ob_t, ob_aux, ob_n, BATCH, w, now, b)
                if obon and b > 0 and pool_ext[p]:
                    # the batch runs outside (a real denoiser): `complete` reports its end
                    w_until[w] = np.inf
                else:
                    w_until[w] = now + dur
                    _heap_push(h_t, h_w, h_n, now + dur, w)
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
            ix = int(s / dts)
            if (ix + 1) * dts <= s:  # s sits on a boundary that rounding put below it
                ix += 1
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

