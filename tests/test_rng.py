"""The keyed draws (sim.rng.keyed_uniform, request_noise): a pure function of (seed, id,
attempt), with the moments of the distributions the fleet loop expects. Tolerances are 4
standard errors of n = 200,000 draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.rng import keyed_uniform, request_noise, service_noise

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


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser in plain numpy (Steele, Lea and Flood 2014), the reference."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def test_compiled_hash_is_splitmix64_and_uniform_of_its_top_53_bits():
    # the compiled mix64 (sim.rng, inlined by the class draw) against the numpy formula,
    # at the ends of the range too; uniform_of salts the float bits by its stream
    from sim.rng import STREAMS, _mix, uniform_of

    g = np.random.default_rng(11)
    x = np.concatenate([g.integers(0, 2**63, 10_000, dtype=np.uint64) * np.uint64(2),
                        np.array([0, 1, 2**63, 2**64 - 1], np.uint64)])
    assert np.array_equal(_mix(x), _splitmix64(x))
    assert np.array_equal(_mix(x.reshape(2, -1)), _splitmix64(x).reshape(2, -1))
    assert _mix(np.uint64(5)) == _splitmix64(np.array([5], np.uint64))[0]
    v = np.concatenate([g.exponential(1.0, 1000), [0.0, -0.0, np.inf]])
    with np.errstate(over="ignore"):
        bits = v.view(np.uint64) + np.uint64(STREAMS["classes"] - 1) * np.uint64(0x9E3779B97F4A7C15)
    want = (_splitmix64(bits) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    assert np.array_equal(uniform_of(v, "classes"), want)


@pytest.mark.parametrize("n", [0, 1, 7, 100_000])
def test_service_noise_draws_what_numpy_draws_and_leaves_the_same_state(n):
    # the compiled draws stand for numpy's: a numba or numpy upgrade that changed either
    # algorithm would change every run's results, so it must fail here first
    a, b = np.random.default_rng([11, 2, n]), np.random.default_rng([11, 2, n])
    e, z = service_noise(a, n)
    assert np.array_equal(e, b.exponential(1.0, n)) and np.array_equal(z, b.standard_normal(n))
    assert a.random() == b.random()


@pytest.mark.parametrize("lam", [0.15, 0.9, 4.0, 25.0])
def test_social_offspring_are_numpys_poisson_draws_repeated(lam):
    from sim.demand.feedback import _offspring_of

    code = np.random.default_rng(3).integers(-1, 3, 50_000).astype(np.int8)  # < 0: served
    t = np.sort(np.random.default_rng(4).uniform(0, 60, len(code)))
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    got = _offspring_of(a, lam, code, t)
    want = np.repeat(t[code < 0], b.poisson(lam, int((code < 0).sum())))
    assert len(want) > 0 and np.array_equal(got, want)
    assert a.random() == b.random()
