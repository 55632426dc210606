"""The keyed draws (sim.rng.keyed_uniform, request_noise): a pure function of (seed, id,
attempt), with the moments of the distributions the fleet loop expects. Tolerances are 4
standard errors of n = 200,000 draws."""

from __future__ import annotations

import math

import numpy as np

from sim.rng import keyed_uniform, request_noise

N = 200_000
TOL = 4 / math.sqrt(N)


def test_keyed_draws_are_a_function_of_the_key():
    ids = np.arange(1000) * 13 - 400
    att = np.arange(1000) % 3
    e, z = request_noise(7, ids, att)
    e2, z2 = request_noise(7, ids[::-1], att[::-1])  # order does not matter
    assert np.array_equal(e, e2[::-1]) and np.array_equal(z, z2[::-1])
    one = request_noise(7, int(ids[5]), int(att[5]))  # the gateway's one request
    assert float(one[0]) == e[5] and float(one[1]) == z[5]
    assert not np.array_equal(e, request_noise(8, ids, att)[0])  # another seed
    assert not np.array_equal(e, request_noise(7, ids, att + 1)[0])  # another attempt
    big = request_noise(7, 10**29, 0)  # a client's id beyond 64 bits is reduced, not refused
    assert np.isfinite(big[0]) and big[0] > 0


def test_keyed_uniforms_and_noise_have_the_right_moments():
    ids = np.arange(N)
    att = np.zeros(N, np.int64)
    u = keyed_uniform(3, ids, att, "retry_backoff")
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < TOL * math.sqrt(1 / 12)
    e, z = request_noise(3, ids, att)
    assert abs(e.mean() - 1) < TOL and abs(e.var() - 1) < 4 * math.sqrt(8 / N)  # 4th central moment 9
    assert abs(z.mean()) < TOL and abs(z.var() - 1) < 4 * math.sqrt(2 / N)
    assert abs(np.mean(z ** 3)) < 4 * math.sqrt(15 / N)  # symmetric
    # neighbours, lanes and attempts are uncorrelated
    for a, b in ((e[:-1], e[1:]), (e, z), (u, keyed_uniform(3, ids, att + 1, "retry_backoff"))):
        assert abs(np.corrcoef(a, b)[0, 1]) < TOL
