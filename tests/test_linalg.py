"""The blocked triangular kernels of ``sigma_jax._linalg`` against NumPy/SciPy float64 on random-basis Grams.

Tolerances: a triangular inverse has forward error ``<= c m u cond(L)`` of its largest entry
(Higham, *Accuracy and Stability*, sec. 14.2; ``u = 2^-53``); measured ``<= 0.18 u cond(L)`` against
SciPy at m = 125-1000 (healthy and collapsed), asserted at ``u cond(L)``.  ``W^T W`` sums the same
terms as the full product: measured ``<= 0.03 m u`` of the largest entry, asserted at ``0.25 m u``.
The blocked Cholesky (m > 2 TRI_BLOCK): backward error ``|L L^T - G|`` measured ``<= 0.032 m u max|G|``,
asserted at ``0.2 m u max|G|``; its log-det within ``m u cond(G)`` of NumPy's (measured <= 0.15 of that).
Every bound fails on a 10x regression.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from sigma_jax._linalg import TRI_BLOCK, cholesky, inv_chol, inv_lower, lower_gram
from sigma_jax._x64 import x64
from tests._reference import collapsed, healthy, normalize_rows, run_unless_hung

U = 2.0**-53
INV_TOL, GRAM_TOL = 1.0, 0.25


def chol_of(rng, family, n, m, delta=1e-3):
    a = normalize_rows(family(rng, n, m))
    g = a.T @ a + delta * np.eye(m)
    return g, np.linalg.cholesky(g)


@pytest.mark.parametrize("family", [healthy, collapsed], ids=["healthy", "collapsed"])
@pytest.mark.parametrize("m", [TRI_BLOCK - 3, 2 * TRI_BLOCK + 45])  # one block; recursion with uneven halves
def test_inv_lower_and_lower_gram_match_float64(rng, family, m):
    g, chol = chol_of(rng, family, 4 * m, m)
    ref = scipy.linalg.solve_triangular(chol, np.eye(m), lower=True)
    cond_l = np.linalg.cond(chol)
    with x64():
        got = np.asarray(jax.jit(inv_lower)(jnp.asarray(chol)))
        k = np.asarray(jax.jit(lower_gram)(jnp.asarray(ref)))
        li = np.asarray(inv_chol(jnp.asarray(g - 1e-3 * np.eye(m)), 1e-3))
    assert np.all(np.triu(got, 1) == 0.0)
    assert np.abs(got - ref).max() <= INV_TOL * U * cond_l * np.abs(ref).max()
    # inv_chol also factors G itself: the factor's forward error ~ cond(G) u (a backward-stable Cholesky) carries over
    assert np.abs(li - ref).max() <= INV_TOL * U * cond_l**2 * np.abs(ref).max()
    k_ref = ref.T @ ref
    assert np.abs(k - k_ref).max() <= GRAM_TOL * m * U * np.abs(k_ref).max()


def test_batched_under_vmap(rng):
    m = TRI_BLOCK + 20
    chols = np.stack([chol_of(rng, healthy, 3 * m, m)[1] for _ in range(3)])
    with x64():
        inv = np.asarray(jax.vmap(inv_lower)(jnp.asarray(chols)))
        k = np.asarray(jax.jit(jax.vmap(lower_gram))(jnp.asarray(inv)))
    for c, x, kk in zip(chols, inv, k):
        ref = scipy.linalg.solve_triangular(c, np.eye(m), lower=True)
        assert np.abs(x - ref).max() <= 20 * U * np.linalg.cond(c) * np.abs(ref).max()
        assert np.abs(kk - ref.T @ ref).max() <= GRAM_TOL * m * U * np.abs(ref.T @ ref).max()


@pytest.mark.parametrize("family", [healthy, collapsed], ids=["healthy", "collapsed"])
def test_blocked_cholesky_matches_float64(rng, family):
    m = 2 * TRI_BLOCK + 45  # blocked: leading block TRI_BLOCK * 2, the rest recursed
    g, _ = chol_of(rng, family, 4 * m, m)
    with x64():
        low = np.asarray(jax.jit(cholesky)(jnp.asarray(g)))
        batched = np.asarray(jax.vmap(cholesky)(jnp.asarray(np.stack([g, 2.0 * g]))))
        bad = np.asarray(cholesky(jnp.asarray(g - 2.0 * np.eye(m))))  # an eigenvalue < 0
    assert np.all(np.triu(low, 1) == 0.0) and np.all(np.diag(low) > 0)
    assert np.abs(low @ low.T - g).max() <= 0.2 * m * U * np.abs(g).max()
    logdet = 2.0 * np.log(np.diag(low)).sum()
    assert abs(logdet - np.linalg.slogdet(g)[1]) <= m * U * np.linalg.cond(g)
    for scale, b in zip((1.0, 2.0), batched):  # vmap: batched products sum in another order; the same backward bound
        assert np.all(np.triu(b, 1) == 0.0)
        assert np.abs(b @ b.T - scale * g).max() <= 0.2 * m * U * scale * np.abs(g).max()
    assert np.isnan(bad).any()  # not positive definite: NaN, as LAPACK's factor


def test_batched_kernels_do_not_deadlock_xla_cpu():
    """Regression: a vmapped blocked Cholesky at m = 512 hung (gdb: XLA's pool thread waiting in the batched LAPACK
    ``dtrsm``'s ``jax::ParallelBatchMap``).  With the batched solve as base case, the first loop below hung in 1 of 3
    runs of 20 calls and 1 of 2 runs of 100 calls on the 2-core machine; it runs 300.  Every LAPACK base case now
    runs one matrix at a time, under vmap, with explicit batch dims and in the log-det's gradient.  Run in a
    subprocess with a timeout."""
    code = """
        import jax, jax.numpy as jnp, numpy as np
        from sigma_jax._linalg import cholesky, inv_lower, logdet_spd
        from sigma_jax._x64 import x64
        x = np.random.default_rng(0).normal(size=(4, 1536, 512))
        g = np.einsum("bnm,bnk->bmk", x, x) / 1536 + 1e-3 * np.eye(512)
        with x64():
            g = jnp.asarray(g)
            eye = jnp.eye(512)
            two = jax.jit(lambda h: jax.vmap(cholesky)(jnp.stack([h + 1e-3 * eye, h + 50.0 * eye])))
            for _ in range(300):
                jax.block_until_ready(two(g[0]))
            for _ in range(3):
                a = jax.jit(jax.vmap(cholesky))(g)
                b = jax.jit(cholesky)(g)                                   # explicit batch dims
                c = jax.jit(jax.vmap(inv_lower))(a)
                d = jax.jit(jax.vmap(jax.grad(logdet_spd)))(g)
                jax.block_until_ready((a, b, c, d))
        print(float(jnp.abs(a - b).max()), float(jnp.abs(d[0] @ g[0] - jnp.eye(512)).max()))
    """
    out = run_unless_hung(code, "a batched factorisation")
    diff, resid = (float(v) for v in out.split())
    assert diff <= 1e-12 and resid <= 1e-9  # vmap and explicit batch agree; the gradient is M^{-1}
