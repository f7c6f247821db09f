"""The monitor benchmark's interval for a median overhead (experiments/bench_monitor.py::median_ci) covers at the
coverage it states: simulated, two-sided, on skewed, heavy-tailed and flat distributions."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
from bench_monitor import median_ci, paired_overhead  # noqa: E402

# (sampler, true median)
DISTRIBUTIONS = {
    "lognormal": (lambda rng, size: rng.lognormal(0.0, 1.0, size), 1.0),
    "student_t2": (lambda rng, size: 3.0 + rng.standard_t(2, size), 3.0),
    "uniform": (lambda rng, size: rng.uniform(-1.0, 2.0, size), 0.5),
}


def test_median_ci_order_statistics():
    # n = 15: [x_(4), x_(12)], coverage 1 - 2 P(B(15, 1/2) <= 3) = 1 - 2 (1 + 15 + 105 + 455) / 2^15
    lo, hi, cover = median_ci(np.arange(15.0)[::-1])
    assert (lo, hi) == (3.0, 11.0)
    assert cover == pytest.approx(1 - 2 * 576 / 2**15, abs=1e-12)
    assert median_ci(np.arange(5.0)) is None  # 1 - 2/32 < 95%: no interval at all
    assert median_ci(np.arange(6.0))[:2] == (0.0, 5.0)


@pytest.mark.parametrize("n", [10, 15, 25])
@pytest.mark.parametrize("family", sorted(DISTRIBUTIONS))
def test_median_ci_covers_at_its_stated_rate(family, n):
    sample, median = DISTRIBUTIONS[family]
    rng = np.random.default_rng(1000 * n + len(family))
    trials = 4000
    draws = sample(rng, (trials, n))
    stated = median_ci(draws[0])[2]
    hits = 0
    for x in draws:
        lo, hi, cover = median_ci(x)
        assert cover == stated
        hits += lo <= median <= hi
    sd = np.sqrt(stated * (1 - stated) / trials)
    assert abs(hits / trials - stated) <= 3.5 * sd, (family, n, hits / trials, stated)


def test_paired_overhead():
    base = np.full(15, 10.0)
    out = paired_overhead(base * np.linspace(1.01, 1.05, 15), base)
    assert out["median"] == pytest.approx(3.0)
    assert out["ci"][0] < 3.0 < out["ci"][1]
    assert out["ci_coverage"] == pytest.approx(0.96484375)
