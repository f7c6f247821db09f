"""The exact report's three producers agree: host float64 BLAS (the CPU default for concrete inputs), XLA
float64 (under jit/vmap) and precision="split" (float32-only device part), on random-basis healthy and
collapsed sets, with and without the band.

Measured agreement (these seeds): log-det / U_cov within 6e-13 relative between all three; band terms
(ci_halfwidth, bias, se) host vs XLA within 3e-12, split vs XLA within 4e-7 (split's leverage pass is
float32: it only reaches the second-order terms).  Tolerances are ~10x those.
"""

import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sigma_jax as sj
from sigma_jax import gram
from tests._reference import collapsed, healthy, run_unless_hung

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_ORDER = ("logdet", "u_cov", "upper", "g_kf")
BAND = ("ci_halfwidth", "bias", "se", "estimate")


def _rel(a, b):
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("kind", ["healthy", "collapsed"])
@pytest.mark.parametrize("subset", [None, 700])
def test_host_blas_xla_and_split_agree(rng, kind, subset):
    a = (healthy if kind == "healthy" else collapsed)(rng, 2000, 48).astype(np.float32)
    kw = dict(subset=subset, key=jax.random.key(3) if subset else None, n_total=2000)
    host = sj.sigma(a, **kw)
    xla = jax.jit(lambda e: sj.sigma(e, **kw))(jnp.asarray(a))
    split = sj.sigma(a, precision="split", **kw)
    for f in FIRST_ORDER:
        assert _rel(getattr(host, f), getattr(xla, f)) < 6e-12, f
        assert _rel(getattr(split, f), getattr(xla, f)) < 6e-12, f
    for f in BAND:
        if np.isfinite(float(getattr(xla, f))) and float(getattr(xla, f)) != 0.0:
            assert _rel(getattr(host, f), getattr(xla, f)) < 3e-11, f
            assert _rel(getattr(split, f), getattr(xla, f)) < 4e-6, f
    assert bool(host.valid) == bool(xla.valid) == bool(split.valid)


def test_concrete_cpu_inputs_take_the_blas_path_and_traced_ones_do_not(rng, monkeypatch):
    calls = []
    real = gram.blas_stats
    monkeypatch.setattr(gram, "blas_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = healthy(rng, 400, 8).astype(np.float32)
    sj.sigma(a)                                        # NumPy
    sj.sigma(jnp.asarray(a), subset=300, key=jax.random.key(0))   # a CPU JAX array, random subset
    assert len(calls) == 2
    jax.jit(lambda e: sj.sigma(e))(jnp.asarray(a))     # traced: the jittable XLA path
    jax.vmap(lambda e: sj.sigma(e).u_cov)(jnp.stack([a, a]))
    sj.sigma(a, precision="mixed")
    assert len(calls) == 2


def test_blas_path_checks_rows_in_its_sweep(rng):
    a = healthy(rng, 300, 6).astype(np.float32)
    bad = a.copy()
    bad[17, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf values in row\(s\) 17\."):
        sj.sigma(bad)
    bad = a.copy()
    bad[250] = 0.0
    with pytest.raises(ValueError, match=r"zero-norm row\(s\) 250,"):
        sj.sigma(bad)
    with pytest.raises(ValueError, match=r"squared norm above rho"):
        sj.sigma(a * 2.0, normalize=False)
    assert np.isfinite(float(sj.sigma(bad, validate=False, subset=np.arange(200)).u_cov))  # bad row not observed


def test_split_refuses_jit_with_a_clear_error(rng):
    a = jnp.asarray(healthy(rng, 200, 6), jnp.float32)
    with pytest.raises(ValueError, match="precision='split'.*jit"):
        jax.jit(lambda e: sj.sigma(e, precision="split"))(a)
    with pytest.raises(ValueError, match="`precision` must be one of"):
        sj.sigma(a, precision="bf16")


def test_vmapped_sigma_does_not_deadlock_xla_cpu():
    """Regression: batched LAPACK Cholesky kernels running concurrently hung XLA:CPU's 2-thread pool
    (a batched ``lax.map`` of sigma at m = 128 never returned).  Run in a subprocess with a timeout."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.join(ROOT, "experiments")!r})
        import jax, numpy as np, sigma_jax as sj
        from coverage_sigma import population
        x = population("isotropic", 768, 128, np.random.default_rng(0))   # hung 3 of 3 runs before the fix
        fn = jax.jit(lambda ks: jax.lax.map(lambda k: sj.sigma(x, subset=512, key=k, validate=False).u_cov, ks,
                                            batch_size=8))
        for i in range(3):
            print(float(fn(jax.random.split(jax.random.key(i), 400)).mean()))
    """)
    out = run_unless_hung(code, "a vmapped sigma")
    assert len(out.split()) == 3
