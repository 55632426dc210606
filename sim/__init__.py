"""Floodgate: capacity and rate-limit simulation of GPU fleets under viral demand.

Data flows one way: scenario -> demand -> policies (admission) -> scheduler and tier queues
-> fleet (batching GPU workers, cost model from a calibration profile) -> metrics -> report.
"""

__version__ = "0.1.0"
