"""Live twin: a real HTTP gateway running the simulator's own policy objects, a Locust load
generator replaying a schedule open-loop, and the comparison of live against simulated runs.

Modules: `keys` (API key table), `gateway` (FastAPI app: admission, tier queues, batching GPU
workers), `serve` (`floodgate serve`), `schedule` (the request schedule shared by Locust and
the simulator), `locustfile`, `validate` (`floodgate validate`).
"""
