"""Everything `floodgate run` writes for one scenario run."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from sim.jsonout import finite
from sim.metrics.summary import summarize, timeseries, with_calendar_time
from sim.outcomes import REASONS
from sim.report import figures
from sim.report.findings import findings
from sim.report.html import img_tag, page, table
from sim.report.write import dump_json, write_dir


def write_run(run, out: Path, extra: dict | None = None) -> dict:
    """summary.json, timeseries.csv, figures/*.png and report.html, atomically into `out`."""
    summary = summarize(run)
    if extra:
        summary.update(extra)
    ts = timeseries(run)

    def fill(d: Path) -> None:
        (d / "summary.json").write_text(dump_json(finite(summary)))
        ts.to_csv(d / "timeseries.csv", index=False, float_format="%.6g")
        figs = []
        if run.sc.outputs.figures:
            figs = make_figures(run, ts, d / "figures")
        if run.sc.outputs.report:
            found = findings(summary, with_calendar_time(ts, run.sc),
                             [q.policy for q in run.sc.policies])
            (d / "report.html").write_text(render(run, summary, figs, found))

    write_dir(out, fill, kind="run")
    return summary


def capacity_per_s(run, ts) -> np.ndarray:
    """Images/s the live fleet can serve in each interval (at each pool's largest batch)."""
    ips = np.array([p.cost.images_per_s(p.max_batch) for p in run.pools])
    w = np.array([max(p.gpus, 1) for p in run.pools], float)
    return ts["gpus_active"].to_numpy() * float((ips * w).sum() / w.sum())


def run_figures(run, ts) -> dict:
    """The run's figures by file stem: (title, a function drawing that Figure), so a caller
    asking for one draws only that one. `ts` may carry a calendar `time` column."""
    names = [t.name for t in run.sc.tiers]
    per_region = {}
    if getattr(run, "regions", None) is not None:
        per_region["regions"] = ("Per users' region", lambda: figures.regions(ts, run.regions.users))
    return {
        "demand_vs_capacity": ("Demand vs capacity", lambda: figures.demand_vs_capacity(
            ts, names, capacity_per_s(run, ts))),
        "latency": ("Latency per tier", lambda: figures.latency(
            ts, names, [t.slo_s for t in run.sc.tiers])),
        "rejections": ("Rejections by reason", lambda: figures.rejections(ts, names)),
        "utilization": ("Utilisation", lambda: figures.utilization(ts)),
        **per_region,
    }


def make_figures(run, ts, fdir: Path) -> list[tuple[str, Path]]:
    fdir.mkdir()
    ts = with_calendar_time(ts, run.sc)
    return [(title, figures.save(draw(), fdir / f"{stem}.png"))
            for stem, (title, draw) in run_figures(run, ts).items()]


def _words(v) -> str:
    """A policy figure in words: mappings as 'key value' pairs, numbers with separators."""
    if isinstance(v, dict):
        return ", ".join(f"{k} {_words(x)}" for k, x in v.items()) or "none"
    if isinstance(v, list | tuple):
        return ", ".join(_words(x) for x in v) or "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def render(run, s: dict, figs: list[tuple[str, Path]], found: list[str] | None = None) -> str:
    sc = run.sc
    rows, klass = [], []
    for name, t in s["tiers"].items():
        rej = sum(t["rejected"].values())
        rows.append([name, t["offered"], t["admitted"], t["completed"], rej,
                     t["latency_s"]["p50"], t["latency_s"]["p95"], t["latency_s"]["p99"],
                     t["slo_s"], t["goodput"], t["revenue"]])
        klass.append([""] * 8 + ["ok" if t["slo_met"] else "bad"] + [""] * 2)
    tier_tab = table(["tier", "offered", "admitted", "completed", "rejected", "p50 s", "p95 s",
                      "p99 s", "SLO s", "goodput", "revenue $"], rows, klass)
    rej_rows = [[name] + [t["rejected"][r] for r in REASONS] for name, t in s["tiers"].items()]
    rej_tab = table(["tier", *REASONS], rej_rows)
    f, m = s["fleet"], s["money"]
    by = m.get("gpu_cost_by_option", {})
    fleet_tab = table(["GPU-hours", "utilisation", "batches", "mean batch", "revenue $", "GPU cost $",
                       "GPU cost $/day", "reserved $", "on demand $", "spot $", "cost / image $"],
                      [[f["gpu_hours"], f["utilization_mean"], f["batches"], f["mean_batch_size"],
                        m["revenue"], m["gpu_cost"], m.get("gpu_cost_per_day"), by.get("reserved"),
                        by.get("on_demand"), by.get("spot"), m["cost_per_image"]]])
    if f.get("spot"):
        fleet_tab += table(["pool", "spot preemptions", "left", "restored", "spot GPU-hours", "rate / GPU-day"],
                           [[n, v["preemptions"], v["left"], v["restored"], v["spot_gpu_hours"],
                             v["rate_per_gpu_day"]] for n, v in f["spot"].items()])
    pools = table(["pool", "GPUs at end", "cost model", "images/s/GPU at max batch"],
                  [[n, p["gpus_end"], p["cost_model"], p["images_per_s_per_gpu_at_max_batch"]]
                   for n, p in f["pools"].items()])
    pol_rows = [[name, ", ".join(p.get("tiers", [])),
                 "; ".join(f"{k.replace('_', ' ')}: {_words(v)}" for k, v in p.items()
                           if k not in ("tiers", "enabled_at_end", "fired"))]
                for name, p in s.get("policies", {}).items()]
    policies = table(["policy", "tiers", "what it did"], pol_rows) if pol_rows else "<p>No policies.</p>"
    classes = []
    if "classes" in s:  # request classes: batch fill per class, model swaps per pool
        cs = s["classes"]
        classes = ["<h2>Request classes</h2>", table(
            ["class", "batch group", "started", "mean batch", "batch fill", "completed",
             "mean latency s", "goodput"],
            [[n, c["group"], c["started"], c["mean_batch_size"], c["batch_fill"], c["completed"],
              c["latency_mean_s"], c["goodput"]] for n, c in cs["per_class"].items()]),
            table(["pool", "model swaps"], [[n, v] for n, v in cs["model_swaps"].items()])]
    regions = []
    if "regions" in s:  # fleet regions: latency and rejections per users' region
        rg = s["regions"]
        regions = ["<h2>Regions</h2>", table(
            ["users' region", "home", "offered", "completed", "rejected", "timeouts", "spilled",
             "p50 s", "p95 s", "network s (mean)", "served by"],
            [[n, u["home"], u["offered"], u["completed"], sum(u["rejected"].values()),
              u["rejected"]["timeout"], u["spilled"], u["latency_s"]["p50"], u["latency_s"]["p95"],
              u["network_latency_mean_s"], _words(u["served_by"])] for n, u in rg["users"].items()]),
            table(["fleet region", "pools", "GPUs at end", "completed", "out at end"],
                  [[n, ", ".join(f["pools"]), f["gpus_end"], f["completed"], _words(f["out_at_end"])]
                   for n, f in rg["fleet"].items()])]
    fired = [[name, f["applied_h"], f["fired_h"], f["change"], f["why"]]
             for name, p in s.get("policies", {}).items() for f in p.get("fired", [])]
    if fired:  # incident response: when each trigger fired and why
        policies += "<h3>Triggers fired</h3>" + table(
            ["policy", "applied at h", "fired at h", "change", "why"], fired)
    verdict = ("every tier met its p95 SLO" if all(t["slo_met"] for t in s["tiers"].values())
               else "SLO missed for: " + ", ".join(n for n, t in s["tiers"].items() if not t["slo_met"]))
    block = ""
    if found:
        block = ('<section class="findings" id="findings"><h2>Findings</h2><ul>'
                 + "".join(f"<li>{html.escape(f)}</li>" for f in found) + "</ul></section>")
    cell_warn = s.get("cell", {}).get("warnings", [])
    sections = [
        block,
        f"<p>{html.escape(sc.description)}</p>" if sc.description else "",
        ("<div class='bad'><strong>Cell regime:</strong><ul>"
         + "".join(f"<li>{html.escape(w)}</li>" for w in cell_warn) + "</ul></div>") if cell_warn else "",
        f"<p>Scenario <code>{html.escape(sc.name)}</code>, seed {sc.seed}, horizon "
        f"{sc.horizon / 3600:.1f} h. <strong>{html.escape(verdict)}</strong>. Latency quantiles "
        f"are within {s['quantile_relative_error'] * 100:.1f}% (streaming histograms).</p>",
        "<h2>Tiers</h2>", tier_tab, "<h2>Rejections by reason</h2>", rej_tab,
        *regions, "<h2>Fleet and money</h2>", fleet_tab, pools, *classes, "<h2>Policies</h2>", policies,
        "<h2>Figures</h2>", *[f"<h3>{html.escape(t)}</h3>" + img_tag(p, t) for t, p in figs],
    ]
    return page(f"Floodgate run: {sc.name}", sections)
