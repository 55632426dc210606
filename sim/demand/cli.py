"""`floodgate demand SCENARIO`: the demand alone, before any policy or capacity limit.

Figures are for the whole service (cell_fraction undone) and come from the model's mean
intensity, which is quick; `--sample` also generates the simulated cell's requests, chunk by
chunk with the run's random numbers, and reports what came out. The last stdout line is one
JSON object.
"""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime

import numpy as np

from sim.args import seed
from sim.jsonout import dumps

DAY = 86400.0


def window_name(seconds: float) -> str:
    """The scenario's own window as a key suffix: 8_days, 3_hours, 90_minutes, 60_seconds."""
    for unit, size in (("day", DAY), ("hour", 3600.0), ("minute", 60.0)):
        n = seconds / size
        if n >= 1 and abs(n - round(n)) < 1e-9:
            n = int(round(n))
            return f"{n}_{unit}{'s' if n != 1 else ''}"
    return f"{seconds:g}_seconds".replace(".", "_")


def expected_figures(sc) -> tuple[dict, dict, object]:
    """Headline figures of a scenario's demand over its horizon, from its mean intensity
    (whole service); keys name the window (`images_first_8_days` for the 8-day Ghibli
    scenario, `images_first_3_hours` for a 3-hour one)."""
    from sim.demand import build_demand

    span = sc.horizon
    w = window_name(span)
    model = build_demand(sc, scale=1.0, until=span)
    exp = model.expected(span, 60.0)
    rate = exp["rate"]
    t = np.arange(0.0, sc.horizon + 60.0, 60.0)
    r = rate.rate(t)
    images = rate.cumulative(span) - rate.cumulative(0.0)
    out = {
        "scenario": sc.name,
        "model": sc.demand.model,
        "window": w.replace("_", " "),
        "peak_new_users_per_hour": None,
        "peak_new_users_at": None,
        f"users_first_{w}": _num(exp["unique_users"](span)),
        f"images_first_{w}": _num(images),
        "peak_requests_per_s": round(float(r.max()), 3),
        "peak_requests_at": _when(sc, float(t[int(r.argmax())])),
        f"mean_requests_per_s_first_{w}": round(float(images / span), 3),
        "horizon_s": sc.horizon,
    }
    if exp["new_users"] is not None:
        h = np.arange(0.0, max(span - 3600.0, 0.0) + 1.0, 60.0)
        N = exp["new_users"]
        per_hour = N(h + 3600.0) - N(h)
        j = int(per_hour.argmax())
        out["peak_new_users_per_hour"] = _num(per_hour[j])
        out["peak_new_users_at"] = _when(sc, float(h[j]))
    u = out[f"users_first_{w}"]
    out[f"images_per_user_first_{w}"] = round(out[f"images_first_{w}"] / u, 3) if u else None
    if sc.demand.social is not None:
        out["social_branching"] = sc.demand.social.branching
    return out, exp, model


def sampled_figures(sc, until: float | None = None) -> dict:
    """Generate the cell's requests (the run's chunks and seeds) and count, scaled back."""
    from sim.demand import build_demand, chunk_arrivals

    until = sc.horizon if until is None else until
    model = build_demand(sc)
    c = sc.chunk_s
    n = 0
    per_min = np.zeros(int(np.ceil(until / 60.0)) + 1, np.int64)
    users = None
    k = 0
    while k * c < until:
        a = chunk_arrivals(model, sc, k, until)
        n += len(a)
        np.add.at(per_min, (a.t / 60.0).astype(np.int64), 1)
        if len(a):
            m = int(a.user.max()) + 1
            if users is None or m > len(users):
                grown = np.zeros(max(m, 2 * (0 if users is None else len(users))), bool)
                if users is not None:
                    grown[: len(users)] = users
                users = grown
            users[a.user] = True
        k += 1
    x = 1.0 / sc.cell_fraction
    out = {"until_s": until, f"images_first_{window_name(until)}": _num(n * x),
           "unique_users": _num((0 if users is None else int(users.sum())) * x),
           "peak_requests_per_s": round(float(per_min.max() / 60.0 * x), 3)}
    if hasattr(model, "first_sessions"):
        out["new_users"] = _num(model.first_sessions * x)
    return out


def _num(v) -> int:
    return int(round(float(np.asarray(v).ravel()[0] if np.ndim(v) else v)))


def _when(sc, t: float) -> str:
    return datetime.fromtimestamp(sc.epoch + t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def plot(sc, exp: dict, path) -> None:
    """PNG of the demand curve (and new users per hour) on calendar time, written atomically;
    a spike that would flatten the curve is clipped and annotated."""
    import pandas as pd
    from matplotlib.figure import Figure

    from sim.report.figures import clip_spike
    from sim.report.write import write_file

    t = np.arange(0.0, sc.horizon + 60.0, 60.0)
    x = pd.to_datetime(sc.epoch + t, unit="s", utc=True).tz_localize(None)
    r = exp["rate"].rate(t)
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    ax.plot(x, r, color="tab:blue", lw=1.0, label="requests / s")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("requests / s (whole service)")
    ax.set_title(f"Demand: {sc.name} ({sc.demand.model}, first {window_name(sc.horizon).replace('_', ' ')})")
    clip_spike(ax, x, r, [], "requests/s", lambda i: _when(sc, float(t[i])))
    if exp["new_users"] is not None:
        ax2 = ax.twinx()
        keep = t + 3600.0 <= max(t[-1], 3600.0)
        h = t[keep]
        ax2.plot(x[keep], (exp["new_users"](h + 3600.0) - exp["new_users"](h)) / 1e6,
                 color="tab:orange", lw=1.2, label="new users / hour (M)")
        ax2.set_ylabel("new users / hour (millions)")
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_file(path, buf.getvalue())


def cmd_demand(args) -> int:
    from sim.scenario import load_scenario

    over = {}
    if args.seed is not None:
        over["seed"] = args.seed
    if args.horizon is not None:
        over["horizon"] = args.horizon
    sc = load_scenario(args.scenario, over)
    out, exp, _ = expected_figures(sc)
    if args.sample:
        from sim.budget import check

        check(sc)  # generating every request is a run's worth of work: the same limits
        out["sampled"] = sampled_figures(sc)
        if sc.demand.social is not None and sc.demand.social.only_successful:
            # offspring of served images are made during a run, not by the generator
            out["sampled"]["excludes_social"] = True
    if args.plot:
        plot(sc, exp, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if not args.json:
        for k, v in out.items():
            if k != "sampled":
                print(f"{k:34s} {v:,}" if isinstance(v, int) else f"{k:34s} {v}")
        for k, v in out.get("sampled", {}).items():
            print(f"sampled.{k:26s} {v:,}" if isinstance(v, int) else f"sampled.{k:26s} {v}")
    print(dumps(out))
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("demand",)
    d.add_argument("scenario")
    d.add_argument("--json", action="store_true", help="print only the JSON line")
    d.add_argument("--plot", metavar="FILE", help="write a PNG of the demand curve")
    d.add_argument("--sample", action="store_true",
                   help="also generate the simulated cell's requests and count them")
    d.add_argument("--seed", type=seed)
    d.add_argument("--horizon", help="override the horizon, e.g. 2d")
    d.set_defaults(func=cmd_demand)
