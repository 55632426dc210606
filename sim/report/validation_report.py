"""The report of `floodgate validate`: validation.md, validation.json and figures/*.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from sim.jsonout import finite

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sim.report.figures import save as _save  # noqa: E402
from sim.report.write import dump_json  # noqa: E402

PHASES = ("all", "below", "above")
METRICS = (("p50_rel_err", "p50 latency", "rel"), ("p95_rel_err", "p95 latency", "rel"),
           ("p99_rel_err", "p99 latency", "rel"), ("rejection_abs_err_pp", "rejection rate", "pp"),
           ("throughput_rel_err", "throughput", "rel"))


def write_report(d: Path, res: dict, ser: dict, tiers: list[str]) -> None:
    """Everything into the folder `d` (the caller writes it atomically)."""
    fdir = d / "figures"
    fdir.mkdir()
    figs = [("Latency percentiles per tier", latency_figure(res, tiers, fdir / "latency.png")),
            ("Completions per 10 s window", throughput_figure(res, ser, tiers, fdir / "throughput.png")),
            ("Queue depth", queue_figure(res, ser, tiers, fdir / "queue_depth.png")),
            ("Rejection rate by reason", rejection_figure(res, tiers, fdir / "rejections.png"))]
    (d / "validation.json").write_text(dump_json(finite({**res, "series": ser})))
    (d / "validation.md").write_text(markdown(res, tiers, [(t, p.relative_to(d)) for t, p in figs]))


def _fmt(x, kind: str = "s") -> str:
    if x is None:
        return "–"
    if kind == "rel":
        return f"{100 * x:+.1f}%"
    if kind == "rel0":  # a share
        return f"{100 * x:.1f}%"
    if kind == "pp":
        return f"{x:.2f} pp"
    if kind == "pct":
        return f"{x:.2f}%"
    return f"{x:.3f}"


def _ci(v, kind: str = "s") -> str:
    return "–" if not v else f"[{_fmt(v[0], kind)}, {_fmt(v[1], kind)}]"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _head(v, kind: str) -> str:
    return "–" if v is None else (f"{100 * v:.1f}%" if kind == "rel" else f"{v:.2f} pp")


def _sample(w: dict | None, kind: str) -> str:
    """The worst tier's sample and the error's interval, e.g. `free n 1991 (100 beyond),
    CI -3.5..+1.2%` (fidelity.worst_detail)."""
    if not w:
        return ""
    s = f"{w['tier']} n {w['n']}" + (f" ({w['beyond']} beyond)" if "beyond" in w else "")
    ci = w.get("ci")
    if ci:
        s += (f", CI {100 * ci[0]:+.1f}..{100 * ci[1]:+.1f}%" if kind == "rel"
              else f", CI {ci[0]:+.2f}..{ci[1]:+.2f} pp")
    return f" [{s}]"


def summary_lines(res: dict) -> list[str]:
    """Headline per phase against the targets (printed by the command), each with its worst
    tier's sample and the error's 95% interval."""
    lines = []
    for key, name, kind in METRICS:
        tgt = res["targets"].get(key)
        vals = [f"{ph} {_head(res['phases'][ph]['headline'][key], kind)}"
                + _sample(res["phases"][ph].get("worst", {}).get(key), kind)
                for ph in PHASES if ph in res["phases"]]
        t = "" if tgt is None else f" (target {_head(tgt, kind)})"
        lines.append(f"{name:15s} worst tier: " + ", ".join(vals) + t)
    c, m = res.get("client") or {}, res.get("machine") or {}
    if c:
        ms = [("–" if c.get(k) is None else f"{1e3 * c[k]:.1f} ms")
              for k in ("lag_p50_s", "lag_p99_s", "lag_max_s", "start_lag_s",
                        "arrival_lag_p50_s", "arrival_lag_p99_s", "arrival_lag_max_s")]
        la = m.get("loadavg_start"), m.get("loadavg_end")
        lines.append(f"{'live send lag':15s} p50 {ms[0]}, p99 {ms[1]}, max {ms[2]}, first request {ms[3]}; "
                     f"at the gateway p50 {ms[4]}, p99 {ms[5]}, max {ms[6]}"
                     + (f"; load average {la[0][0]:.1f} -> {la[1][0]:.1f} (1 min) on {m.get('cpus')} cores"
                        if all(la) else ""))
    return lines


def markdown(res: dict, tiers: list[str], figs: list[tuple[str, Path]]) -> str:
    c = res.get("client", {})
    sat = res["saturation_s"]
    L = [f"# Validation: `{res['scenario']}`, simulated vs live", "",
         f"{res['scheduled']} scheduled requests over {res['duration_s']:g} wall s "
         f"(time scale {res['time_scale']:g}: {res['horizon_sim_s']:g} simulated s), gateway "
         f"kernel `{res['kernel']}`. Fleet capacity {res['capacity_images_per_s']:g} images/s; "
         + (f"demand reaches it at {sat:g} simulated s (phases: below before, above after)."
            if sat is not None else "demand stays on one side of it (no phase split).")
         + f" Simulator: {res['replications']} replications on the same schedule; the first on "
         "the scenario's seed, with the service noise and retry draws the gateway used (the "
         "figures compared), the others on other seeds (the band sampling alone makes); live: "
         f"local block bootstrap ({res['bootstrap']} resamples; each {res['block_s']:g} wall s "
         "block of scheduled time replaced by itself or a neighbour); an error's interval "
         "(paired) resamples the same blocks of live and of the same-noise replication, so "
         "what they share moves both. Intervals are 95%.", "",
         "## Against the targets (worst tier; |simulated / live - 1|, rejection in "
         "percentage points)", ""]
    rows = []
    for key, name, kind in METRICS:
        tgt = res["targets"].get(key)
        row = [name, "–" if tgt is None else f"≤ {_head(tgt, kind)}"]
        for ph in PHASES:
            if ph not in res["phases"]:
                row.append("–")
                continue
            v = res["phases"][ph]["headline"][key]
            ok = "" if tgt is None or v is None else (" ✓" if v <= tgt else " ✗")
            row.append(_head(v, kind) + ("" if v is None else ok)
                       + _sample(res["phases"][ph].get("worst", {}).get(key), kind))
        rows.append(row)
    L += _table(["figure", "target", "whole run", "below saturation", "above saturation"], rows)
    L += ["", "Beside each figure: its tier, the sample (served requests, and how many lie beyond "
          "the quantile; attempts for a rejection rate; completions for throughput) and the 95% "
          "interval of the error (paired bootstrap). A tail figure that a handful of requests "
          "set, or whose interval is wider than its target, says more about the sample than the "
          "simulator."]
    for ph in PHASES:
        if ph not in res["phases"]:
            continue
        P = res["phases"][ph]
        a, b = P["span_s"]
        L += ["", f"## {ph.capitalize()}: scheduled time [{a:g}, {b:g}) simulated s", "",
              "Latency (s) of served requests, end to end at the gateway (arrival to done):", ""]
        rows = []
        for t in tiers:
            T = P["tiers"][t]
            for q in ("p50", "p95", "p99"):
                x = T["latency_s"][q]
                rows.append([t, q, _fmt(x["live"]), _ci(x["live_ci"]), _fmt(x["sim"]),
                             _ci(x["sim_band"]), _fmt(x["rel_err"], "rel"),
                             _ci(x.get("rel_err_ci_paired"), "rel"), _ci(x["rel_err_band"], "rel"),
                             _fmt(x["level_err_pp"], "pp")])
        L += _table(["tier", "", "live", "live 95% CI", "sim", "other seeds", "error",
                     "error 95% CI (paired)", "error, other seeds", "error in level"], rows)
        L += ["", "Attempts, served, rejection rate by reason (share of attempts):", ""]
        rows = []
        for t in tiers:
            T = P["tiers"][t]
            rows.append([t, "attempts / served", f"{T['attempts']['live']} / {T['served']['live']}",
                         "", f"{T['attempts']['sim']} / {T['served']['sim']}", "", "", ""])
            for r, x in T["rejection"].items():
                rows.append([t, r, _fmt(x["live_pct"], "pct"), _ci(x["live_ci"], "pct"),
                             _fmt(x["sim_pct"], "pct"), _fmt(x["abs_err_pp"], "pp"),
                             _ci(x.get("err_pp_ci_paired"), "pp"), _ci(x["abs_err_band"], "pp")])
        L += _table(["tier", "", "live", "live 95% CI", "sim", "|error|", "sim - live 95% CI (paired)",
                     "|error|, other seeds"], rows)
        L += ["", "Throughput (completions per second over the phase; worst: the largest error "
              "of a whole 10 s window inside it) and mean queue depth (requests waiting):", ""]
        rows = []
        for t in tiers:
            th, qd = P["tiers"][t]["throughput"], P["tiers"][t]["queue_depth"]
            if "live_per_s" in th:
                rows.append([t, th["windows"], _fmt(th["live_per_s"]), _fmt(th["sim_per_s"]),
                             _fmt(th["rel_err"], "rel"), _fmt(th["window_abs_rel_err_max"], "rel"),
                             _fmt(qd["live_mean"]), _fmt(qd["sim_mean"])])
            else:
                rows.append([t, 0, "–", "–", "–", "–", _fmt(qd["live_mean"]), _fmt(qd["sim_mean"])])
        L += _table(["tier", "windows", "live /s", "sim /s", "error", "worst window",
                     "queue live", "queue sim"], rows)
    L += ["", "## The client", "",
          f"Locust exit code {res['locust_exit_code']}; {c.get('attempts', 0)} attempts sent "
          f"(first tries and retries), {c.get('failed', 0)} failed, {c.get('unanswered', 0)} "
          f"unanswered. Send lag (send - scheduled, wall s): p50 {_fmt(c.get('lag_p50_s'))}, "
          f"p99 {_fmt(c.get('lag_p99_s'))}, max {_fmt(c.get('lag_max_s'))}. Client overhead "
          f"(client latency - gateway latency, median): {_fmt(c.get('overhead_p50_s'))} s. "
          f"Peak in flight {c.get('peak_in_flight')} against a pool of {c.get('concurrency')} "
          f"connections. Gateway clock offset {res['gateway_offset_s']:g} s.", ""]
    if res.get("live_only_outcomes"):
        L += ["Outcomes only the gateway has: " + ", ".join(
            f"{k} {v}" for k, v in res["live_only_outcomes"].items()), ""]
    if res.get("pairs"):
        L += ["## Request by request", "",
              "Each attempt live against the same attempt (schedule id, try) in the replication "
              "with the same noise: attempts only one side made (retries follow answers), the "
              "share with the same outcome, and for those both served, the latency difference "
              "(simulated - live, s).", ""]
        rows = [[t, p["attempts_both"], p["live_only"], p["sim_only"], _fmt(p["same_outcome"], "rel0"),
                 p["served_both"], _fmt(p["latency_within_10ms"], "rel0"), _fmt(p["latency_diff_p50_s"]),
                 _fmt(p["latency_absdiff_p95_s"]), _fmt(p["latency_absdiff_max_s"])]
                for t, p in res["pairs"].items()]
        L += _table(["tier", "both", "live only", "sim only", "same outcome", "served both",
                     "within 10 ms", "diff p50", "abs diff p95", "abs diff max"], rows) + [""]
    if res.get("refeed"):
        a, s = res["refeed"]["from_arrivals"], res["refeed"]["from_schedule"]
        L += ["The live attempts fed again to the gateway on a fake clock (sim/live/refeed.py): at "
              f"their recorded arrival instants, {a['same_outcome']} of {a['attempts']} got their "
              f"live outcome and {a['same_latency_2us']} of {a['served_both']} served their live "
              "latency; at their scheduled instants (no send lag), latency percentiles "
              + "; ".join(f"{t} " + ", ".join(f"{q} {_fmt(v)}" for q, v in x.items())
                          for t, x in s.items()) + " s.", ""]
    L += ["## How it is measured", "",
          "- Live latency is the gateway's (arrival to done, exact per request); the "
          "simulator's quantiles come from its histograms (within 0.5%). Both are nearest-rank "
          "percentiles over the requests served by the end of the drain.",
          "- Phases split attempts by scheduled time. Simulated latencies per phase come from "
          "a second run per seed with its warm-up at the saturation time (arrival-time split).",
          "- Retries: both sides back off with the scenario's retry model and honour the "
          "Retry-After of admission policies; neither sends an attempt at or after the horizon.",
          "- Rejection rates are shares of attempts (retries included). Throughput windows "
          "are counted over each phase by completion time (1 s intervals); the worst 10 s window "
          "is among those wholly inside the phase.",
          f"- Wall time {res['wall_s']:g} s (live part {res['live_wall_s']:g} s).", "",
          "## Figures", ""]
    L += [f"### {t}\n\n![{t}]({p})\n" for t, p in figs]
    return "\n".join(L) + "\n"


# ---- figures ----


def _vlines(ax, res: dict, scale: float) -> None:
    if res["saturation_s"] is not None:
        ax.axvline(res["saturation_s"] / scale, color="crimson", ls="--", lw=1, label="saturation")
    ax.axvline(res["horizon_sim_s"] / scale, color="gray", ls=":", lw=1, label="end of schedule")


def latency_figure(res: dict, tiers: list[str], path: Path) -> Path:
    phases = [p for p in PHASES if p in res["phases"]]
    fig, axes = plt.subplots(1, len(tiers), figsize=(5 * len(tiers), 4), squeeze=False)
    for ax, t in zip(axes[0], tiers, strict=True):
        labels, x = [], 0
        for ph in phases:
            for q in ("p50", "p95", "p99"):
                v = res["phases"][ph]["tiers"][t]["latency_s"][q]
                for j, (val, rng, col) in enumerate(((v["live"], v["live_ci"], "tab:blue"),
                                                     (v["sim"], v["sim_band"], "tab:orange"))):
                    if val is None:
                        continue
                    err = None if not rng else [[max(0, val - rng[0])], [max(0, rng[1] - val)]]
                    ax.bar(x + (j - 0.5) * 0.4, val, 0.4, color=col, yerr=err, capsize=2,
                           label=("live (95% CI)", "simulated, same noise (other seeds)")[j]
                           if x == 0 else None)
                labels.append(f"{ph}\n{q}")
                x += 1
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel("latency (simulated s)")
        ax.set_title(t)
        ax.legend(fontsize=8)
    return _save(fig, path)


def throughput_figure(res: dict, ser: dict, tiers: list[str], path: Path) -> Path:
    X = res["time_scale"]
    e = np.asarray(ser["window_edges_s"])
    w = e[1:] - e[:-1]
    fig, ax = plt.subplots(figsize=(9, 4))
    for t in tiers:
        s = ser["tiers"][t]
        live = np.asarray(s["live_completed"]) / (w / X)
        sims = np.asarray(s["sim_completed"]) / (w / X)
        def ext(v):  # repeat the last value so the last window is drawn to its end
            return np.append(v, v[-1])

        line = ax.step(e / X, ext(live), where="post", lw=1.6, label=f"{t} live")[0]
        ax.step(e / X, ext(sims[0]), where="post", lw=1.2, ls="--",
                color=line.get_color(), label=f"{t} simulated (same noise)")
        ax.fill_between(e / X, ext(sims.min(axis=0)), ext(sims.max(axis=0)), step="post",
                        color=line.get_color(), alpha=0.15)
    _vlines(ax, res, X)
    ax.set_xlabel("wall time from the schedule's start (s)")
    ax.set_ylabel("completions per wall second")
    ax.set_title("Throughput per 10 s window (band: simulated seeds)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def queue_figure(res: dict, ser: dict, tiers: list[str], path: Path) -> Path:
    X = res["time_scale"]
    e = np.asarray(ser["queue_edges_s"])
    fig, ax = plt.subplots(figsize=(9, 4))
    for t in tiers:
        s = ser["tiers"][t]
        live = np.asarray(s["live_queue"])
        sims = np.asarray(s["sim_queue"])
        n = min(len(live), sims.shape[1], len(e) - 1)
        line = ax.plot(e[:n] / X, live[:n], lw=1.5, label=f"{t} live")[0]
        ax.plot(e[:n] / X, sims[0, :n], lw=1.2, ls="--",
                color=line.get_color(), label=f"{t} simulated (same noise)")
    _vlines(ax, res, X)
    ax.set_xlabel("wall time from the schedule's start (s)")
    ax.set_ylabel("requests waiting (1 s mean)")
    ax.set_title("Queue depth per tier")
    ax.legend(fontsize=8)
    return _save(fig, path)


def rejection_figure(res: dict, tiers: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    labels, x = [], 0
    for t in tiers:
        for r, v in res["phases"]["all"]["tiers"][t]["rejection"].items():
            ci = v["live_ci"]
            err = None if not ci else [[max(0, v["live_pct"] - ci[0])], [max(0, ci[1] - v["live_pct"])]]
            ax.bar(x - 0.2, v["live_pct"] or 0, 0.4, color="tab:blue", yerr=err, capsize=2,
                   label="live (95% CI)" if not labels else None)
            ax.bar(x + 0.2, v["sim_pct"] or 0, 0.4, color="tab:orange",
                   label="simulated" if not labels else None)
            labels.append(f"{t}\n{r}")
            x += 1
    if not labels:
        ax.text(0.5, 0.5, "no rejections", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.legend(fontsize=8)
    ax.set_ylabel("% of attempts")
    ax.set_title("Rejection rate by reason, whole run")
    return _save(fig, path)
