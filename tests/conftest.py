"""Test configuration: 8 simulated CPU devices (set before JAX is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# 8 simulated devices each run their own LAPACK calls; multithreaded OpenBLAS then oversubscribes 2 cores
# (measured 10-40x slower sharded SIGMA, see docs/scaling.md)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import zlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng(request):
    """Fresh numpy Generator per test, seeded from the test's name (reproducible, distinct per test)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
