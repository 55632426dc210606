"""Nowcasting a surge: fit the scenario's demand model to the counts observed so far, and
forecast what is coming with honest uncertainty.

* observed.py: the OBSERVED file (counts per interval, cumulative milestones) -> Observed;
* model.py: the fitted parameters (paths into the demand section) and the forward model, the
  expected counts per interval from sim/demand/viral.py's own mean intensity;
* likelihood.py: Poisson and negative-binomial log-likelihoods of the counts;
* fit.py: maximum likelihood (multi-start), what the data identify, parametric bootstrap;
* forecast.py: draws of the demand to the horizon, the p10/p50/p90 fan, 8-day totals;
* report.py and cli.py: `floodgate fit` (fit.json, fitted scenario YAML, figure, report.html),
  and the `--forecast` flag of `plan` and `compare`;
* draws.py: a fit's point estimate and stratified bootstrap draws as scenarios;
* hawkes.py: self-excitation and diurnal amplitude fitted on a trace of arrival times;
* synth.py: a scenario's realised demand counted per interval (the truth of tests and backtest).
"""
