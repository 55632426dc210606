"""Policy search: grid sweeps, optimisation and sensitivity, all on common random numbers.

Every point (a set of PATH=VALUE changes in the scenario's own terms, `sim.overrides`) runs R
replications with the seeds seed, seed+1, ..., seed+R-1 — the same seeds at every point, so two
points differ by their policies, not by luck of the draw. All runs go through the one
`sim.sweep.Executor` (process pool or Dask).

Modules: space (grid values, parameter ranges, factors; checked against the scenario),
metrics (what a run is judged by, replication intervals, objectives, constraints), evaluate
(points x replications through the executor), sweep, optimize, sensitivity, report (figures and
HTML), cli (`floodgate sweep|optimize|sensitivity`), api (`sim.grid_sweep`, `sim.optimize`,
`sim.sensitivity`).
"""
