"""What `floodgate plan` writes: plan.json, plan.md, the capacity-vs-SLO curve, report.html."""

from __future__ import annotations

import html
from pathlib import Path

from matplotlib.figure import Figure

from sim.jsonout import finite
from sim.report.html import img_tag, page, table
from sim.report.write import dump_json, write_dir


def markdown(res: dict) -> str:
    keys = [k for k in res["curve"][0] if k not in ("gpus", "pools", "meets")] if res["curve"] else []
    lines = [f"# Capacity plan: {res['scenario']}", "",
             f"Smallest fleet meeting {', '.join(res['slos'])}: **{res['min_gpus']} GPUs** "
             f"(95% bracket {res['ci_low']}-{res['ci_high']}), {res['replications']} replications "
             f"per size, {res['evaluations']} sizes evaluated; GPU cost ${res['gpu_cost_per_day']:,.0f}/day.",
             *_forecast_lines(res), *_per_pool_lines(res),
             "", f"| GPUs{' (' + ' + '.join(res['pools']) + ')' if res.get('per_pool') else ''} | "
             + " | ".join(f"{k} (s)" for k in keys) + " | meets |",
             "|---:|" + "---:|" * len(keys) + ":---:|"]
    for row in res["curve"]:
        n = row["gpus"] if "pools" not in row else f"{row['gpus']} ({' + '.join(map(str, row['pools'].values()))})"
        lines.append(f"| {n} | " + " | ".join("–" if row[k] is None else f"{row[k]:.3g}" for k in keys)
                     + f" | {'yes' if row['meets'] else 'no'} |")
    return "\n".join(lines) + "\n"


def _per_pool_lines(res: dict) -> list[str]:
    if not res.get("per_pool"):
        return []
    return ["", "Pools serve different classes, so each is sized on its own: "
            + ", ".join(f"{n} **{g}** (bracket {lo}-{hi})"
                        for (n, g), (lo, hi) in zip(res["pools"].items(), res["pools_band"].values(),
                                                    strict=True)) + "."]


def _forecast_lines(res: dict) -> list[str]:
    f = res.get("forecast")
    if not f:
        return []
    lo, mid, hi = f["band"]
    pools = ""
    if f.get("per_pool"):
        pools = (f" ({' + '.join(f'{n} {v}' for n, v in f['pools'].items())}; it covers "
                 f"{f['covered']} of the draws)")
    return ["", f"On the forecast ({f['fit']}, data to {f['fit_window_s'][1] / 3600:g} h): "
            f"**{f['min_gpus']} GPUs**{pools} meet the SLOs in {f['quantile']:.0%} of {f['draws']} demand "
            f"draws (per-draw sizes {lo}-{hi}, median {mid}); the table is the point estimate's."]


def curve_figure(res: dict) -> Figure:
    """p95 (or the SLO's quantile) per tier against fleet size; object API, no pyplot."""
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    xs = [r["gpus"] for r in res["curve"]]
    for slo in res["slos"]:
        key, target = slo.split("<=")
        key = key.replace(":", ".")
        ys = [r[key] if r[key] is not None else float("nan") for r in res["curve"]]
        line = ax.plot(xs, ys, marker="o", label=key)[0]
        ax.axhline(float(target.rstrip("s")), color=line.get_color(), ls="--", lw=0.8)
    ax.axvline(res["min_gpus"], color="k", lw=1, label=f"plan: {res['min_gpus']} GPUs")
    ax.set_yscale("log")
    ax.set_xlabel("GPUs")
    ax.set_ylabel("latency (s)")
    ax.set_title("Capacity vs SLO (dashed: targets)")
    ax.legend(fontsize=8)
    return fig


def save_curve(res: dict, path: Path) -> Path:
    fig = curve_figure(res)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_plan(res: dict, out: Path) -> None:
    def fill(d: Path) -> None:
        (d / "plan.json").write_text(dump_json(finite(res)))
        (d / "plan.md").write_text(markdown(res))
        fig = save_curve(res, d / "capacity_vs_slo.png")
        keys = [k for k in res["curve"][0] if k not in ("gpus", "pools", "meets")]
        tab = table(["GPUs", *keys, "meets"],
                    [[r["gpus"], *[r[k] for k in keys], "yes" if r["meets"] else "no"] for r in res["curve"]])
        (d / "report.html").write_text(page(
            f"Floodgate plan: {res['scenario']}",
            [f"<p><strong>{res['min_gpus']} GPUs</strong> (95% bracket {res['ci_low']}–{res['ci_high']}) "
             f"meet {', '.join(res['slos'])}; GPU cost ${res['gpu_cost_per_day']:,.0f} per day.</p>",
             *[f"<p>{html.escape(x).replace('**', '')}</p>" for x in _forecast_lines(res) if x],
             tab, img_tag(fig, "capacity vs SLO")]))

    write_dir(out, fill, kind="plan")


def mix_markdown(res: dict) -> str:
    """plan --mix: the cheapest mix per GPU type, pool and purchase option, against one type."""
    lo, hi = res["cost_band_per_day"]
    band = f"${lo:,.0f}-{hi:,.0f}" if lo is not None and hi is not None else "open"
    single = res["single_type_cost_per_day"]
    against = ("no single GPU type serves every class" if single is None else
               f"against ${single:,.0f}/day for the best single GPU type ({res['saving']:.1%} less)")
    lines = [f"# GPU mix: {res['scenario']}", "",
             f"Cheapest fleet meeting {', '.join(res['slos'])}: **${res['cost_per_day']:,.0f}/day** "
             f"(95% band {band}) {against}; {res['replications']} replications per "
             f"candidate, {res['evaluations']} candidates judged, steps of {res['step_gpus']} GPUs.",
             "", "| GPU type | GPUs | reserved | on demand | spot | $/day | alone: GPUs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, alone in res["single_type"].items():
        t = res["types"][name]
        m = t["options"]
        lines.append(f"| {name} | {t['gpus']} | {m.get('reserved', 0)} | {m.get('on_demand', 0)} | "
                     f"{m.get('spot', 0)} | {t['cost_per_day']:,.0f} | "
                     f"{'none for less' if alone is None else alone} |")
    lines += ["", "| pool | GPU type | reserved | on demand | spot |", "|---|---|---:|---:|---:|"]
    for name, t in res["types"].items():
        for pool in t["pools"]:
            m = res["mix"].get(pool, {})
            lines.append(f"| {pool} | {name} | {m.get('reserved', 0)} | {m.get('on_demand', 0)} | "
                         f"{m.get('spot', 0)} |")
    return "\n".join(lines) + "\n"


def write_mix(res: dict, out: Path) -> None:
    def fill(d: Path) -> None:
        (d / "mix.json").write_text(dump_json(finite(res)))
        md = mix_markdown(res)
        (d / "mix.md").write_text(md)
        rows = [[n, m.get("reserved", 0), m.get("on_demand", 0), m.get("spot", 0)] for n, m in res["mix"].items()]
        (d / "report.html").write_text(page(
            f"Floodgate GPU mix: {res['scenario']}",
            [f"<p>{html.escape(md.splitlines()[2]).replace('**', '')}</p>",
             table(["pool", "reserved", "on demand", "spot"], rows)]))

    write_dir(out, fill, kind="plan")
