"""Sweeps go through one executor: a local process pool by default, Dask when one machine
is not enough. Jobs are (scenario dict, seed) pairs; results are plain dicts, so any worker
that can import `sim` can run them."""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass


@dataclass
class Job:
    """One simulation: a validated-scenario dict, plus where its file was (for profiles)."""

    scenario: dict
    source: str
    start: float = 0.0  # warm start (engine Run.start)
    # first attempts made on a second thread (engine Run.threads: same results); the
    # executor sets it on a run left alone in its map's last round, where a core is idle
    threads: bool = False


def alone_last(jobs: list, workers: int) -> list:
    """The jobs with the last one threaded when it runs alone in the last round (the rounds
    of `workers` leave one job over, or there is one job): that round's idle core makes its
    first attempts (~20% of a whole-service run) instead of waiting."""
    if (workers >= 2 and jobs and isinstance(jobs[-1], Job)
            and (len(jobs) == 1 or len(jobs) % workers == 1)):
        jobs = [*jobs[:-1], dataclasses.replace(jobs[-1], threads=True)]
    return jobs


def run_job(job: Job) -> dict:
    """Run one scenario and return its summary (executed in a worker)."""
    from sim.engine import simulate
    from sim.metrics.summary import summarize
    from sim.scenario import parse_scenario

    sc = parse_scenario(job.scenario, job.source)
    run = simulate(sc, start=job.start, threads=job.threads)
    out = summarize(run)
    # a run sits in reference cycles (its hooks and policies hold it): freed here, not at
    # the collector's next full pass, which came after 2-5 more runs in a plan's worker
    # (~1 GB each at full scale: a worker's RSS grew to 6.7 GB)
    del run
    gc.collect()
    return out


class Executor:
    """map(fn, jobs) in order; `jobs=1` runs in this process (no pool start-up)."""

    def __init__(self, jobs: int | None = None, cluster: str | None = None, progress: bool = False):
        self.jobs = jobs or os.cpu_count() or 1
        self._jobs_given = jobs is not None
        self.cluster = cluster
        self.progress = progress
        self._client = None
        self._local_cluster = None
        self._pool = None  # one process pool for the executor's life: workers load the
        # compiled loop once, not once per batch of jobs

    def __enter__(self) -> Executor:
        if self.cluster:
            from dask.distributed import Client, LocalCluster

            if self.cluster == "local":
                self._local_cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1,
                                                   processes=True, dashboard_address=None)
                self._client = Client(self._local_cluster)
            else:
                self._client = Client(self.cluster)
                if not self._jobs_given:  # a round is the cluster's worker threads, not ours
                    self.jobs = max(1, sum(self._client.nthreads().values()))
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._client is not None:
            self._client.close()
        if self._local_cluster is not None:
            self._local_cluster.close()

    def map(self, fn: Callable, items: Iterable, desc: str = "runs") -> list:
        items = alone_last(list(items), int(self.jobs))
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(items), desc=desc, file=sys.stderr, delay=2.0)
        try:
            if self._client is not None:
                from dask.distributed import as_completed

                futs = self._client.map(fn, items, pure=False)
                for _ in as_completed(futs):
                    if bar is not None:
                        bar.update(1)
                return self._client.gather(futs)
            if self.jobs == 1 or len(items) <= 1:
                out = []
                for it in items:
                    out.append(fn(it))
                    if bar is not None:
                        bar.update(1)
                return out
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=self.jobs)
            out = []
            for r in self._pool.map(fn, items):
                out.append(r)
                if bar is not None:
                    bar.update(1)
            return out
        finally:
            if bar is not None:
                bar.close()
