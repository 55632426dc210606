"""floodgate fit: the likelihood against brute force, parameter recovery on the model's own
realised demand, intervals that shrink with more data, and bad OBSERVED files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from scipy import integrate, stats

from sim.cli import main
from sim.fit import likelihood as lk
from sim.fit.fit import Problem, fit
from sim.fit.model import Forward, catalogue
from sim.fit.observed import Observed, Series, read_observed
from sim.fit.synth import realised_counts
from sim.scenario import load_scenario, parse_scenario

DAY = 86400.0


def small(**demand) -> dict:
    """One Bass wave, repeat sessions with novelty decay, a diurnal cycle."""
    d = {"model": "viral", "grid_s": 300,
         "waves": [{"name": "launch", "start": 3600, "market": 2.0e6, "p": 0.2, "q": 1.5}],
         "sessions": {"repeat": 1.5, "novelty_s": 86400, "images": 2.0, "think_s": 20},
         "seasonality": {"diurnal_amplitude": 0.4, "peak_hour": 20}}
    d.update(demand)
    return {"name": "fit_small", "seed": 7, "horizon": 4 * DAY, "chunk_s": 300, "demand": d,
            "tiers": [{"name": "free", "share": 1, "priority": 0, "price_per_image": 0, "slo_s": 60}],
            "fleet": {"pools": [{"name": "g", "gpus": 1, "service_time_s": 1.0}]}}


# -- the likelihood --

@pytest.mark.parametrize("family,disp", [("poisson", 0.0), ("nb1", 3.0), ("nb2", 0.02)])
def test_loglik_equals_scipy_pmf(family, disp):
    y = np.array([0, 1, 3, 17, 250])
    mu = np.array([0.4, 2.0, 2.5, 20.0, 230.0])
    if family == "poisson":
        ref = stats.poisson.logpmf(y, mu)
    elif family == "nb2":  # size 1/a, success probability size / (size + mu)
        r = 1 / disp
        ref = stats.nbinom.logpmf(y, r, r / (r + mu))
    else:  # size mu / d, success probability 1 / (1 + d)
        ref = stats.nbinom.logpmf(y, mu / disp, 1 / (1 + disp))
    assert np.allclose(lk.loglik(y, mu, family, disp), ref, rtol=0, atol=1e-9)
    # the sup over mu used by the residuals really is the largest value
    grid = np.exp(np.linspace(np.log(1e-9), np.log(1000.0), 40001))
    best = np.array([lk.loglik(np.full(len(grid), v), grid, family, disp).max() for v in y])
    up = lk.upper(y, family, disp)
    assert np.all(up >= best - 1e-9) and np.allclose(up, best, atol=1e-4)
    r = lk.residuals(y, mu, family, disp)
    assert np.allclose(np.sum(r ** 2), 2 * np.sum(up - lk.loglik(y, mu, family, disp)))


def _brute_means(sc, a, b):
    """Expected new users and requests on [a, b) by direct integration of the model's
    definition: N(t) = m F(t - start) (Bass closed form), session rate dN/dt +
    R (dN * k)(t) S(t), k exponential novelty, images per session, no social feedback."""
    d = sc.demand
    w = d.waves[0]
    P, Q, m = w.p / DAY, w.q / DAY, w.market

    def N(t):
        x = max(t - w.start, 0.0)
        e = np.exp(-(P + Q) * x)
        return m * (1 - e) / (1 + Q / P * e)

    def dN(t):
        h = 1e-3
        return (N(t + h) - N(t - h)) / (2 * h) if t > w.start + h else 0.0

    tau, R, amp = d.sessions.novelty_s, d.sessions.repeat, d.seasonality.diurnal_amplitude

    def S(t):
        hour = ((sc.epoch + t) / 3600.0) % 24.0
        return 1 + amp * np.cos(2 * np.pi * (hour - d.seasonality.peak_hour) / 24)

    def rep(t):
        if t <= w.start:
            return 0.0
        v = integrate.quad(lambda s: dN(s) * np.exp(-(t - s) / tau) / tau, w.start, t, limit=200)[0]
        return R * v * S(t)

    new = np.array([N(y) - N(x) for x, y in zip(a, b, strict=True)])
    req = np.array([d.sessions.images * (N(y) - N(x) + integrate.quad(rep, x, y, limit=200)[0])
                    for x, y in zip(a, b, strict=True)])
    return new, req


def test_likelihood_equals_brute_force_small_case():
    sc = parse_scenario(small(grid_s=60))
    a = np.array([0.0, 7200.0, 18000.0, 36000.0])
    b = a + np.array([3000.0, 3600.0, 3600.0, 3600.0])  # the first ends a grid cell before the wave
    rng = np.random.default_rng(3)
    new_bf, req_bf = _brute_means(sc, a, b)
    y_new, y_req = rng.poisson(new_bf).astype(float), rng.poisson(req_bf).astype(float)
    obs = Observed("<test>", {"new_users": Series(a, b, y_new), "requests": Series(a, b, y_req)},
                   Series(np.array([40000.0]), np.array([40000.0]), np.array([3.0e5])))
    params = catalogue(sc)
    fw = Forward(sc, params)
    fams = {"new_users": ("poisson", 0.0), "requests": ("nb1", 2.0)}
    pr = Problem(fw, obs, params, {}, fams)
    x = np.array([p.to_x(p.value) for p in params])
    mu = pr.means(x)
    # the forward model against direct integration (its 60 s grid: well within 0.5%)
    assert np.allclose(mu["new_users"], new_bf, rtol=1e-6)
    assert np.allclose(mu["requests"][1:], req_bf[1:], rtol=5e-3)
    assert mu["requests"][0] == pytest.approx(0.0, abs=1e-6) and req_bf[0] == 0
    # the log-likelihood against scipy's pmfs at the brute-force means
    ll = (stats.poisson.logpmf(y_new, new_bf).sum()
          + stats.nbinom.logpmf(y_req[1:], req_bf[1:] / 2.0, 1 / 3.0).sum()
          + stats.norm.logpdf(np.log(3.0e5), np.log(mu["cumulative_users"][0]), lk.MILESTONE_SD)
          - np.log(3.0e5))
    got = pr.loglik(x)
    assert got == pytest.approx(ll, abs=0.05 * abs(ll) / 100 + 0.5)
    # and -2 log-likelihood is the residuals' sum of squares up to a constant
    r = pr.resid(x)
    const = sum(np.sum(u) for u in pr.up.values()) + np.sum(
        lk.milestone_loglik(obs.milestones.y, obs.milestones.y))
    assert np.sum(r ** 2) == pytest.approx(2 * (const - got), rel=1e-9)


# -- recovery on the model's own realised demand --

@pytest.fixture(scope="module")
def realised(tmp_path_factory):
    sc = parse_scenario(small())
    df = realised_counts(sc, 0.05, 4 * DAY)
    p = tmp_path_factory.mktemp("fit") / "observed.csv"
    df.to_csv(p, index=False)
    return sc, read_observed(p)


@pytest.fixture(scope="module")
def fits(realised):
    sc, obs = realised
    return {h: fit(sc, obs, h * 3600.0, starts=2, boot=40, seed=1) for h in (24, 72)}


def test_parameters_recovered_within_their_intervals():
    """Four realisations (fixed seeds) fitted 72 h in: the truth inside the 90% bootstrap
    intervals in at least 75% of the parameter-realisation pairs (28 pairs: a truly 90%
    interval falls below 75% with probability ~1.5%), and never beyond 3.5 standard errors."""
    covered = []
    for seed in (11, 12, 13, 14):
        d = small()
        d["seed"] = seed
        sc = parse_scenario(d)
        df = realised_counts(sc, 0.05, 4 * DAY)
        t = df["t"].to_numpy()
        obs = Observed("<realised>", {k: Series(t, t + 3600.0, df[k].to_numpy())
                                      for k in ("new_users", "requests")},
                       Series(np.zeros(0), np.zeros(0), np.zeros(0)))
        f = fit(sc, obs, 72 * 3600.0, starts=1, boot=40, seed=seed)
        assert {"waves[0].market", "waves[0].p", "waves[0].q", "sessions.repeat",
                "sessions.novelty_s", "sessions.images"} <= set(f.free)
        assert f.families["requests"][0] != "poisson"  # sessions of many images: overdispersed
        for p in f.params:
            if p.path not in f.free:
                continue
            lo, hi = f.interval(p.path)
            assert lo <= f.estimate[p.path] <= hi, p.path
            covered.append(lo <= p.value <= hi)
            z = (p.to_x(p.value) - p.to_x(f.estimate[p.path])) / f.se[p.path]
            assert abs(z) < 3.5, (seed, p.path, z)
    assert np.mean(covered) >= 0.75, covered


def test_intervals_shrink_as_the_window_grows(fits):
    for path in ("waves[0].market", "waves[0].q", "sessions.repeat"):
        w = [(lambda iv: (iv[1] - iv[0]) / fits[h].estimate[path])(fits[h].interval(path))
             for h in (24, 72)]
        assert w[1] < 0.7 * w[0], (path, w)


def test_unobserved_wave_is_held_and_early_wave_warned(realised):
    sc0, obs = realised
    d = small()
    d["demand"]["waves"].append({"name": "later", "start": 2 * DAY, "market": 1e6, "p": 0.1, "q": 1.0})
    sc = parse_scenario(d)
    f = fit(sc, obs, 6 * 3600.0, starts=0, boot=0)
    assert all(f.estimate[f"waves[1].{k}"] == sc.demand.waves[1].model_dump()[k]
               for k in ("market", "p", "q"))
    assert "after the data end" in f.held["waves[1].market"]
    assert any("before its inflection point" in w for w in f.warnings)


@pytest.mark.slow
def test_prior_on_a_held_parameter_carries_its_uncertainty(tmp_path):
    """A second wave starts after the data end, four times larger than the scenario says: held
    at the scenario's value, the 90% interval of the 8-day images misses the truth; drawn from a
    prior range in the bootstrap (estimate unchanged), the interval covers it and the draws
    spread over the range."""
    from sim.fit.fit import Prior
    from sim.fit.forecast import WINDOW, forecast

    def two(market):
        d = small()
        d["demand"]["waves"].append({"name": "later", "start": 2 * DAY, "market": market,
                                     "p": 0.1, "q": 1.0})
        d["horizon"] = 8 * DAY
        return parse_scenario(d)

    truth, sc = two(4.0e6), two(1.0e6)
    df = realised_counts(truth, 0.05, DAY)
    t = df["t"].to_numpy()
    obs = Observed("<realised>", {k: Series(t, t + 3600.0, df[k].to_numpy())
                                  for k in ("new_users", "requests")},
                   Series(np.zeros(0), np.zeros(0), np.zeros(0)))
    params = catalogue(truth)
    fw = Forward(truth, params)
    whole = Observed("<8 days>", {"requests": Series(np.array([0.0]), np.array([WINDOW]), np.zeros(1))},
                     Series(np.zeros(0), np.zeros(0), np.zeros(0)))
    images = float(fw.expected({p.path: p.value for p in params}, whole)["requests"][0])
    prior = {"waves[1].market": Prior(5e5, 8e6, log=True)}
    tot, fits = {}, {}
    for name, pr in (("held", None), ("prior", prior)):
        fits[name] = f = fit(sc, obs, DAY, starts=0, boot=12, seed=3, prior=pr)
        assert "after the data end" in f.held["waves[1].market"]
        tot[name] = forecast(f, seed=3)["totals"]["images_8d"]
    assert fits["prior"].estimate == fits["held"].estimate
    assert tot["held"]["p95"] < images, (tot["held"], images)
    assert tot["prior"]["p5"] <= images <= tot["prior"]["p95"], (tot["prior"], images)
    m = [d["waves[1].market"] for d in fits["prior"].draws]
    assert all(5e5 <= v <= 8e6 for v in m) and max(m) / min(m) > 3
    assert "waves[1].market" not in fits["held"].draws[0]


@pytest.mark.parametrize("text", ["sessions.repeat", "sessions.repeat=2:1", "sessions.repeat=a:b",
                                  "sessions.repeat=0:2:log", "sessions.repeat=1:2:sqrt",
                                  "sessions.nope=1:2"])
def test_bad_prior_exits_2_with_one_line(realised, tmp_path, capsys, text):
    sc, obs = realised
    scp = tmp_path / "s.yaml"
    scp.write_text(yaml.safe_dump(small()))
    out = tmp_path / "out"
    assert main(["fit", obs.source, "--scenario", str(scp), "--prior", text, "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --prior: "), err
    assert not out.exists()


# -- the command --

def test_fit_command_writes_everything(realised, tmp_path):
    sc, obs = realised
    scp = tmp_path / "s.yaml"
    scp.write_text(yaml.safe_dump(small()))
    out = tmp_path / "fit"
    assert main(["fit", obs.source, "--scenario", str(scp), "--until", "36h", "--out", str(out),
                 "--boot", "8", "--starts", "1", "--quiet", "--json"]) == 0
    res = json.loads((out / "fit.json").read_text())
    assert res["window_s"] == [0.0, 36 * 3600.0]
    assert len(res["draws"]) == 8 and res["forecast"]["draws"] == 8
    p = res["parameters"]["waves[0].market"]
    assert p["status"] == "estimated" and p["low_90"] <= p["estimate"] <= p["high_90"]
    fc = res["forecast"]["new_users_per_hour"]
    assert all(a <= b <= c for a, b, c in zip(fc["p10"], fc["p50"], fc["p90"], strict=True))
    fitted = load_scenario(out / "fitted.yaml")
    assert fitted.demand.waves[0].market == pytest.approx(p["estimate"])
    assert (out / "forecast.png").stat().st_size > 10000 and (out / "report.html").exists()


GOOD = "t,new_users,requests\n0,10,20\n3600,12,25\n"


@pytest.mark.parametrize("text,field", [
    ("x,new_users\n0,1\n", "t"),
    ("t,foo\n0,1\n", "foo"),
    ("t\n0\n1\n", "(columns)"),
    ("t,new_users\n0,1\nlater,2\n", "t"),
    ("t,new_users\n0,1\n3600,many\n", "new_users"),
    ("t,new_users\n0,1\n3600,-4\n", "new_users"),
    ("t,new_users,t_end\n0,1,7200\n3600,2,7200\n", "new_users"),
    ("t,new_users,t_end\n0,1,0\n", "t_end"),
    ("t,cumulative_users\n0,100\n3600,50\n", "cumulative_users"),
    ("t,requests_vip\n0,1\n", "requests_vip"),
    ("t,new_users\n-3600,1\n0,2\n", "t"),
    ("", "(file)"),
    ('t,new_users\n0,"1\n', "(file)"),
    ("timestamp,new_users\nyesterday,1\n", "timestamp"),
])
def test_malformed_observed_exits_2_with_one_line(tmp_path, capsys, text, field):
    scp = tmp_path / "s.yaml"
    scp.write_text(yaml.safe_dump(small()))
    bad = tmp_path / "obs.csv"
    bad.write_text(text)
    out = tmp_path / "out"
    assert main(["fit", str(bad), "--scenario", str(scp), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: {field}: "), err
    assert not out.exists()


def test_missing_and_irregular_intervals(tmp_path):
    p = tmp_path / "o.csv"
    p.write_text("t,new_users,requests,cumulative_users\n0,1,2,\n3600,3,4,\n10800,5,6,\n"
                 "5h,,,9\n")
    o = read_observed(p)
    s = o.series["new_users"]
    assert list(s.b - s.a) == [3600.0] * 3  # the missing 2 h row stays missing
    assert list(o.milestones.a) == [18000.0]
    p.write_text("t,t_end,requests_free\n0,600,5\n600,3600,7\n")
    o = read_observed(p, ["free"])
    assert list(o.series["requests"].b) == [600.0, 3600.0] and o.tiers == {"free": 1.0}
    assert GOOD  # the header of a good file, for reference


# -- planning on the forecast --

WARM = 2 * 3600.0  # the plans' runs start 2 h before their window (as `make plan`'s)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A small service fitted 12 h in, and its plan on the forecast."""
    d = small()
    d.update(horizon=2 * DAY, cell_fraction=0.1)
    d["tiers"][0]["slo_s"] = 20
    d["fleet"]["pools"][0].update(service_time_s=2.0, gpus=100)
    tmp = tmp_path_factory.mktemp("plan")
    scp = tmp / "s.yaml"
    scp.write_text(yaml.safe_dump(d))
    realised_counts(parse_scenario(d), 0.05, 2 * DAY).to_csv(tmp / "obs.csv", index=False)
    assert main(["fit", str(tmp / "obs.csv"), "--scenario", str(scp), "--until", "12h",
                 "--out", str(tmp / "fit"), "--boot", "20", "--quiet", "--json"]) == 0
    assert main(["plan", str(scp), "--forecast", str(tmp / "fit"), "--draws", "4", "--reps", "2",
                 "--jobs", "1", "--window", "24h:36h", "--warm", "2h", "--out", str(tmp / "plan"),
                 "--quiet"]) == 0
    return tmp, scp, json.loads((tmp / "plan" / "plan.json").read_text())


def test_plan_on_forecast_reports_quantile_beside_point(planned):
    tmp, scp, res = planned
    f = res["forecast"]
    assert f["draws"] == 4 and len(f["per_draw"]) == 4 and f["quantile"] == 0.9
    assert f["min_gpus"] == int(np.quantile(f["per_draw"], 0.9, method="inverted_cdf"))
    assert f["band"] == [min(f["per_draw"]), int(np.median(f["per_draw"])), max(f["per_draw"])]
    assert f["min_gpus"] >= res["min_gpus"] - 10  # the upper draws need at least about as much
    assert f["fit_window_s"] == [0.0, 12 * 3600.0]
    assert "On the forecast" in (tmp / "plan" / "plan.md").read_text()


def test_draws_are_stratified_and_plan_over_draws_is_the_plan(planned):
    from sim.fit.draws import _peak, load_fit, point, stratified
    from sim.planner import Slo, plan_over_draws, run_plan
    from sim.sweep import Executor

    tmp, scp, res = planned
    sc = load_scenario(scp)
    fres = load_fit(tmp / "fit", sc)
    draws = stratified(sc, fres, 4, (24 * 3600.0, 36 * 3600.0))
    peaks = [_peak(s, (24 * 3600.0, 36 * 3600.0)) for s in draws]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]
    # one "draw" that is the point estimate: the same answer as the ordinary plan (same seeds)
    slos = [Slo("free", "p95", 20.0)]
    with Executor(1) as ex:
        p = point(sc, fres)
        one = plan_over_draws([p], slos, 2, ex, 0.9, (24 * 3600.0, 36 * 3600.0), warm_s=WARM)
        _, direct = run_plan(p, slos, 2, ex, (24 * 3600.0, 36 * 3600.0), warm_s=WARM)
    assert one["min_gpus"] == direct["min_gpus"] == res["min_gpus"]


def test_compare_on_forecast_uses_fitted_demand(planned):
    from sim.fit.cli import forecast_scenario

    tmp, scp, _ = planned
    sc = load_scenario(scp)
    est = json.loads((tmp / "fit" / "fit.json").read_text())["parameters"]["waves[0].market"]["estimate"]
    assert forecast_scenario(sc, tmp / "fit", None).demand.waves[0].market == pytest.approx(est)
    hi = forecast_scenario(sc, tmp / "fit", 0.95)
    lo = forecast_scenario(sc, tmp / "fit", 0.05)
    from sim.fit.draws import _peak
    assert _peak(hi, None) > _peak(lo, None)


@pytest.mark.parametrize("extra,field", [
    (["--quantile", "1.5"], "--quantile"),
    (["--draws", "0"], "--draws"),
])
def test_plan_forecast_bad_flags(planned, capsys, extra, field):
    tmp, scp, _ = planned
    assert main(["plan", str(scp), "--forecast", str(tmp / "fit"), *extra, "--jobs", "1",
                 "--out", str(tmp / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {field}: ")


def test_plan_forecast_needs_a_fit_of_this_scenario(planned, capsys, tmp_path):
    tmp, scp, _ = planned
    assert main(["plan", str(scp), "--forecast", str(tmp_path), "--jobs", "1",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no fit.json" in capsys.readouterr().err
    other = yaml.safe_load(scp.read_text())
    other["name"] = "other"
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(other))
    (tmp_path / "v.yaml").write_text("fleet: {pools: [{name: g, gpus: 6, service_time_s: 1.0}]}\n")
    assert main(["compare", str(tmp_path / "o.yaml"), "--forecast", str(tmp / "fit"),
                 "--variant", f"x={tmp_path / 'v.yaml'}", "--out", str(tmp_path / "c"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fitted for 'fit_small'" in err[0]


def test_fit_report_renders_in_chromium(realised, tmp_path):
    from browser import inspect_page

    sc, obs = realised
    scp = tmp_path / "s.yaml"
    scp.write_text(yaml.safe_dump(small()))
    assert main(["fit", obs.source, "--scenario", str(scp), "--until", "30h", "--out",
                 str(tmp_path / "fit"), "--boot", "6", "--starts", "0", "--quiet", "--json"]) == 0
    page = inspect_page(tmp_path / "fit" / "report.html")
    assert page["title"] == "Floodgate fit: fit_small"
    assert len(page["images"]) == 1
    img = page["images"][0]
    assert img["complete"] and img["w"] > 500 and img["h"] > 400
    assert page["errors"] == []


# -- self-excitation from arrival times --

def _hawkes(mu, n, tau, T, rng):
    """Arrivals of a Hawkes process by its cluster construction (exponential kernel)."""
    gen = np.sort(rng.uniform(0, T, rng.poisson(mu * T)))
    out = [gen]
    while len(gen):
        kids = np.repeat(gen, rng.poisson(n, len(gen)))
        kids = kids + rng.exponential(tau, len(kids))
        gen = kids[kids < T]
        out.append(gen)
    return np.sort(np.concatenate(out))


def test_hawkes_loglik_equals_brute_force():
    from sim.fit.hawkes import Trace, loglik

    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(0, 600, 40))
    t -= t[0]
    tr = Trace(t, 13.5, "<test>")
    mu, n, tau, a, peak = 0.05, 0.4, 30.0, 0.3, 20.0

    def lam(x):
        h = (13.5 + x / 3600.0) % 24
        past = t[t < x]
        return mu * (1 + a * np.cos(2 * np.pi * (h - peak) / 24)) + n * np.sum(np.exp(-(x - past) / tau)) / tau

    ll = sum(np.log(lam(x)) for x in t)
    pts = np.concatenate([t, [t[-1]]])
    comp = sum(integrate.quad(lam, a0, b0, limit=200)[0] for a0, b0 in zip(pts[:-1], pts[1:], strict=True))
    assert loglik(tr, mu, n, tau, a, peak) == pytest.approx(ll - comp, abs=1e-7)


def test_arrivals_fit_recovers_self_excitation(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(21)
    t = _hawkes(2.0, 0.5, 20.0, 3600.0, rng)
    stamps = pd.Timestamp("2023-11-16 18:00:00") + pd.to_timedelta(t, unit="s")
    p = tmp_path / "trace.csv"
    pd.DataFrame({"TIMESTAMP": stamps.strftime("%Y-%m-%d %H:%M:%S.%f")}).to_csv(p, index=False)
    scp = tmp_path / "s.yaml"
    scp.write_text(yaml.safe_dump(small(social={"branching": 0.2, "scale_s": 300})))
    out = tmp_path / "fit"
    assert main(["fit", str(p), "--scenario", str(scp), "--arrivals", "--out", str(out),
                 "--starts", "1", "--quiet", "--json"]) == 0
    res = json.loads((out / "fit.json").read_text())["parameters"]
    for path, truth in (("social.branching", 0.5), ("social.scale_s", 20.0)):
        assert res[path]["status"] == "estimated"
        assert res[path]["low_90"] <= truth <= res[path]["high_90"], (path, res[path])
    assert res["seasonality.diurnal_amplitude"]["status"] == "held"  # one hour of a day
    fitted = load_scenario(out / "fitted.yaml")
    assert fitted.demand.social.branching == pytest.approx(res["social.branching"]["estimate"])


def test_arrivals_fit_on_the_shipped_azure_trace(root, tmp_path):
    trace = root / "sim" / "data" / "traces" / "azure_llm_2023_conv.csv"
    out = tmp_path / "azure"
    assert main(["fit", str(trace), "--scenario", str(root / "scenarios" / "ghibli_2025.yaml"),
                 "--arrivals", "--out", str(out), "--starts", "0", "--quiet", "--json"]) == 0
    res = json.loads((out / "fit.json").read_text())
    assert res["events"] == 19366
    b = res["parameters"]["social.branching"]
    # conversation turns arrive in bursts: clearly self-exciting, on a time scale of seconds
    assert b["status"] == "estimated" and 0.5 < b["low_90"] < b["estimate"] < b["high_90"] < 1
    s = res["parameters"]["social.scale_s"]
    assert s["status"] == "estimated" and 1 < s["low_90"] < s["high_90"] < 120
    assert res["parameters"]["seasonality.diurnal_amplitude"]["status"] == "held"
    assert (out / "fit.png").stat().st_size > 10000


@pytest.mark.slow
def test_plan_on_forecast_sizes_each_pool_when_pools_serve_different_models(planned, tmp_path):
    # the fitted service with two pools holding different models (1 s and 3 s images, half
    # the requests each): each draw is sized per pool, and the answer per pool is the
    # fewest GPUs covering the quantile's share of the draws (brute force over the draws'
    # own per-pool answers: more GPUs in a pool never hurt)
    from itertools import product

    from sim.engine import simulate
    from sim.fit.draws import load_fit, stratified
    from sim.metrics.summary import summarize
    from sim.planner import Evaluation, Plan, Slo

    def _p95(d: dict) -> float:  # inf where users gave up (a plan's served share)
        t = summarize(simulate(parse_scenario(d)))["tiers"]["free"]
        served = t["completed"] >= 0.99 * (t["completed"] + t["abandoned"])
        return t["latency_s"]["p95"] if served else np.inf

    tmp, scp, _ = planned
    d = yaml.safe_load(scp.read_text())
    d["fleet"]["pools"] = [{"name": "pa", "gpus": 20, "models": ["ma"], "service_time_s": 1.0},
                           {"name": "pb", "gpus": 60, "models": ["mb"], "service_time_s": 3.0}]
    d["request_classes"] = {"classes": [{"name": "a-img", "model": "ma", "service_time_s": 1.0},
                                        {"name": "b-img", "model": "mb", "service_time_s": 3.0}],
                            "mix": {"free": {"a-img": 0.5, "b-img": 0.5}}}
    p = tmp_path / "two.yaml"
    p.write_text(yaml.safe_dump(d))
    out = tmp_path / "plan"
    args = ["--forecast", str(tmp / "fit"), "--draws", "3", "--quantile", "0.6", "--reps", "1",
            "--jobs", "1", "--window", "24h:36h", "--warm", "2h", "--slo", "free:p95<=20s"]
    assert main(["plan", str(p), *args, "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "plan.json").read_text())
    f = res["forecast"]
    assert res["per_pool"] and f["per_pool"] and f["draws"] == 3
    direct = f["per_draw_pools"]
    assert all(x["pb"] > x["pa"] for x in direct)  # 3x the work per image in pb
    # the fewest GPUs in all whose pools each hold at least the answers of 2 of the 3 draws
    cands = product(*[sorted({x[m] for x in direct}) for m in ("pa", "pb")])
    best = min(sum(c) for c in cands
               if sum(all(c[j] >= x[m] for j, m in enumerate(("pa", "pb"))) for x in direct) >= 2)
    assert f["min_gpus"] == best == sum(f["pools"].values()) and f["covered"] >= 2
    assert "pa " in (out / "plan.md").read_text()
    # the answer as a fixed fleet meets the SLO on at least 2 of the 3 draws (same seed)
    sc = load_scenario(p)
    window = (24 * 3600.0, 36 * 3600.0)
    slo = Slo("free", "p95", 20.0)
    met = 0
    for s in stratified(sc, load_fit(tmp / "fit", sc), 3, window):
        fixed = Plan(s, [slo], 1, None, window, (), WARM).fixed(list(f["pools"].values()), s.seed)
        met += Evaluation(0, {"free": np.array([_p95(fixed)])}, {"free": 1.0}).meets([slo])
    assert met >= 2
