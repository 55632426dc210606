"""Floodgate: capacity and rate-limit simulation of GPU fleets under viral demand.

Data flows one way: scenario -> demand -> policies (admission) -> scheduler and tier queues
-> fleet (batching GPU workers, cost model from a calibration profile) -> metrics -> report.
"""

__version__ = "0.1.0"

__all__ = ["run", "plan", "compare", "grid_sweep", "optimize", "sensitivity", "__version__"]


def __getattr__(name: str):
    # `import sim` stays light (the CLI's --help imports it); the API loads on first use.
    if name in ("run", "plan", "compare"):
        from sim import api

        return getattr(api, name)
    if name in ("grid_sweep", "optimize", "sensitivity"):
        from sim.search import api as search_api

        return getattr(search_api, name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
