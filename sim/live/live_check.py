"""Every shipped policy serves live: for each scenario in scenarios/policies/, `floodgate
serve` starts and a short open-loop Locust replay of the scenario's own demand runs against
it (the validation's live side, sim/live/validate.py:run_live, a few wall seconds each);
then the answers and the gateway's request log are checked. Prints a table, a JSON line last;
exit 1 if any policy failed.

A policy passes when Locust exits cleanly, every attempt got an answer of the contract (200,
403, 429 or 503; none unanswered, none failed), some were served, the gateway logged exactly
the attempts Locust sent with the same status, and it wrote gpus.json. The time scale is
chosen per scenario so that the replay holds about `--requests` first attempts.

    python -m sim.live.live_check [--requests 800] [--duration 4] [scenarios...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from sim.errors import InputError
from sim.jsonout import dumps
from sim.live import schedule
from sim.live.validate import LiveError, Setup, _jsonl, run_live
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "scenarios" / "policies"
ANSWERS = {200, 403, 429, 503}


def horizon_for(sc, n: float) -> float:
    """The simulated span from t = 0 holding about n first attempts (at most the horizon)."""
    if schedule.expected_count(sc, sc.horizon) <= n:
        return float(sc.horizon)
    lo, hi = 0.0, float(sc.horizon)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if schedule.expected_count(sc, mid) < n else (lo, mid)
    return hi


def check_one(path: Path, work: Path, requests: int, duration: float, drain: float) -> dict:
    """Serve one scenario under a short replay; the row of the table."""
    sc = load_scenario(path)
    row = {"policy": path.stem, "ok": False}
    t0 = time.monotonic()
    try:
        schedule.check_supported(sc)
        H = horizon_for(sc, requests)
        X = H / duration
        st = Setup(sc, path, duration, X, drain, 1, "model")
        sched = schedule.generate(sc, H)
        d = work / path.stem
        d.mkdir()
        schedule.write(sched, d / "schedule.csv")
        schedule.write_keys(sched, d / "keys.csv")
        row.update(time_scale=round(X, 3), sim_s=round(H, 1), scheduled=len(sched))
        paths = run_live(st, d, log=open("/dev/null", "w"))  # noqa: SIM115 (quiet)
        cl, gw = _jsonl(paths["client"]), _jsonl(paths["gateway"])
    except (LiveError, InputError) as e:
        row.update(problem=f"live run failed: {str(e).strip().splitlines()[-1]}")
        return row
    finally:
        row["wall_s"] = round(time.monotonic() - t0, 1)
    row.update(row_figures(cl, gw), locust_rc=paths["locust_rc"])
    g = Path(paths["gpus"])
    if g.is_file():  # GPUs brought up, retired, failed or repaired during the replay
        row["gpu_changes"] = len(json.loads(g.read_text())) - len(sc.fleet.pools)
    problems = problems_of(row, cl, gw, Path(paths["gpus"]))
    row["ok"] = not problems
    if problems:
        row["problem"] = "; ".join(problems)
    return row


def row_figures(cl: pd.DataFrame, gw: pd.DataFrame) -> dict:
    st = cl["status"]
    reasons = gw["reason"].dropna().value_counts().to_dict() if "reason" in gw else {}
    return {"attempts": len(cl), "served": int((st == 200).sum()),
            "unanswered": int(st.isna().sum()),
            "reasons": {str(k): int(v) for k, v in sorted(reasons.items())}}


def problems_of(row: dict, cl: pd.DataFrame, gw: pd.DataFrame, gpus: Path) -> list[str]:
    """What is wrong with one live run (empty: nothing)."""
    out = []
    st = cl["status"]
    if row["locust_rc"] != 0:
        out.append(f"Locust exit code {row['locust_rc']}")
    if row["unanswered"]:
        out.append(f"{row['unanswered']} unanswered")
    bad = sorted({int(x) for x in st.dropna() if int(x) not in ANSWERS})
    if bad:
        out.append(f"statuses outside the contract: {bad}")
    if row["served"] == 0:
        out.append("nothing served")
    # the gateway's log: one record per attempt sent, with the status the client got
    key = ["id", "attempt"]
    if gw.duplicated(key).any():
        out.append(f"{int(gw.duplicated(key).sum())} attempts logged twice")
    j = cl.merge(gw[key + ["status"]], on=key, how="outer", suffixes=("", "_gw"), indicator=True)
    if (j["_merge"] != "both").any():
        out.append(f"{int((j['_merge'] != 'both').sum())} attempts in one log only")
    both = j[j["_merge"] == "both"]
    differ = both["status"].notna() & (both["status"] != both["status_gw"])
    if differ.any():
        out.append(f"{int(differ.sum())} statuses differ between client and gateway")
    if not gpus.is_file() or not json.loads(gpus.read_text()):
        out.append("no gpus.json")
    return out


def table(rows: list[dict]) -> str:
    head = ["policy", "ok", "scheduled", "attempts", "served", "outcomes", "GPU changes", "X",
            "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out = ", ".join(f"{k} {v}" for k, v in r.get("reasons", {}).items()) or "-"
        if not r["ok"]:
            out = f"**{r.get('problem', 'failed')}**"
        lines.append("| " + " | ".join(str(x) for x in (
            r["policy"], "yes" if r["ok"] else "NO", r.get("scheduled", "-"), r.get("attempts", "-"),
            r.get("served", "-"), out, r.get("gpu_changes", "-"), r.get("time_scale", "-"),
            r["wall_s"])) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="live_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="*", type=Path, help="default: scenarios/policies/*.yaml")
    ap.add_argument("--requests", type=int, default=800, help="first attempts per replay (about)")
    ap.add_argument("--duration", type=float, default=4.0, help="wall seconds of replay each")
    ap.add_argument("--drain", type=float, default=10.0, help="wall seconds for the last answers")
    args = ap.parse_args(argv)
    paths = args.scenarios or sorted(POLICIES.glob("*.yaml"))
    t0 = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="floodgate-live-check-") as tmp:
        for i, p in enumerate(paths, 1):
            r = check_one(p, Path(tmp), args.requests, args.duration, args.drain)
            rows.append(r)
            print(f"[{i}/{len(paths)}] {r['policy']}: {'ok' if r['ok'] else r.get('problem')} "
                  f"({r['wall_s']} s)", file=sys.stderr, flush=True)
    print(table(rows))
    failed = [r["policy"] for r in rows if not r["ok"]]
    print(dumps({"policies": len(rows), "ok": len(rows) - len(failed), "failed": failed,
                 "attempts": sum(r.get("attempts", 0) for r in rows),
                 "wall_s": round(time.monotonic() - t0, 1)}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
