"""Live twin: a real HTTP gateway running the simulator's own policy objects and fleet loop,
a Locust load generator replaying a schedule open-loop, and the comparison of live against
simulated runs.

Modules: `keys` (API key table), `admission` (the scenario's policies, live), `workers` (the
simulator's fleet loop driven on the wall clock, and the real-denoiser runs), `metrics` (JSONL log, Prometheus text), `gateway`
(the FastAPI app and its drain), `denoiser` (`--kernel torch`), `serve` (`floodgate serve`),
`schedule` (the request schedule shared by Locust and the simulator), `locustfile`,
`fidelity` (simulated vs live statistics), `validate` (`floodgate validate`), `store` (the
limiter store interface: state in process or, `redis_store`, shared in Redis by replicas),
`redis_server` (a throwaway redis-server for tests, benchmarks and fault scenarios),
`gpu_worker` (GPU worker processes: the fleet's batches run there, `--gpu-procs K`),
`replica` (a gateway replica: admission against a limiter store, then the fleet process;
`reconcile`), `deploy` (`floodgate serve --replicas N`), `chaos` (`make chaos`: faults).
"""
