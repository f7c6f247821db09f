r"""Stochastic Lanczos quadrature (SLQ) for ``tr f(A)``, plain or deflated, with confidence intervals.

For probes ``z_i`` with ``E[z z^T] = I`` (Rademacher by default),
``tr f(A) = E[z^T f(A) z]`` and Lanczos turns each quadratic form into a Gauss
quadrature ``||z||^2 sum_j w_j f(theta_j)`` (see :mod:`.lanczos`).  One cached
Lanczos run (a :class:`Quadrature`) serves every quantity below:

* ``logdet(shift)``:      ``sum log(lambda + shift)``  (shift-invariance of Krylov spaces:
  one run gives SIGMA's ``S`` and ``G_KF`` at once);
* ``spectral_entropy``:   ``H = log t - u / t``, ``t = tr A`` (exact when the operator
  knows its trace), ``u = tr(A log A)``;  ``p_i = lambda_i / sum lambda``;
* ``effective_rank``:     ``exp(H)`` (eigenvalue convention) or ``exp(H)`` on
  ``sqrt(lambda)`` (singular-value / RankMe convention, without RankMe's eps);
* ``participation_ratio``: ``t^2 / tr A^2``;  ``eigencount(a, b)``: ``#{lambda in [a, b]}``;
* ``trace_function(f)``:  any ``tr f(A)``; ``spectral_density``: a Gaussian-smoothed density.

Ratios are combined by the delta method over probes (:mod:`._base`).

**Deflation** (the variance-reduction lever).  A randomised subspace iteration
(block ``deflate + oversample``, ``power_iters`` passes) and Rayleigh-Ritz give
the top ``deflate`` Ritz pairs ``(theta_i, u_i)``; their contribution
``sum_i f(theta_i)`` is taken exactly and SLQ runs on ``P A P`` restricted to
the complement (``P = I - U^T U``), with projected probes ``P z``.  This is
exact when ``span U`` is invariant and has an error second order in the Ritz
residuals otherwise; the variance drops because the dominant eigenvalues no
longer enter the quadratic forms (for ``lambda log lambda`` on power-law spectra
they carry most of it).  The matvecs of the subspace iteration are counted.

**Gradients** (``differentiable=True``): the value is returned with a surrogate
whose gradient is ``sum_r dcombine/dm_r * mean_i y_{ri}^T (dA) z_i`` where
``y_{ri} ~ f_r'(A) z_i`` is the Lanczos approximation (plus ``f'(theta_i) u_i^T
dA u_i`` for the deflated pairs, Hellmann-Feynman).  This is the standard
unbiased-in-the-probes stochastic gradient of ``tr f(A)``.  When the operator knows its
trace (a GramOperator does), the quadrature mean ``mu`` of ``h = sum_r dcombine/dm_r f_r'`` is
moved into ``mu * d tr A`` (exact) and the probes only carry ``h - mu`` (a control variate that
removes the identity component of the noise).  The bias is the
Lanczos error of ``f'(A) z`` (largest for ``1/(lambda + delta)`` with tiny
``delta``).  The gradient path runs in the operator's dtype.

Example:
    >>> from sigma_jax import gram
    >>> op = gram.gram_operator(jax.random.normal(jax.random.key(0), (100, 8)), delta=1e-3)
    >>> est = jax.jit(slq_estimator(logdet(), num_probes=4, num_steps=6))(jax.random.key(1), op)
    >>> float(est.stderr) > 0
    True
"""

from __future__ import annotations

import contextlib

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from sigma_jax._x64 import f64, x64
from sigma_jax.estimators import _base
from sigma_jax.estimators._base import Estimate
from sigma_jax.estimators.krylov import lanczos, ritz
from sigma_jax._linalg import HIGHEST, mm as _mm

__all__ = [
    "Quantity", "Quadrature", "logdet", "spectral_entropy", "effective_rank", "participation_ratio", "eigencount",
    "trace_function", "slq_quadrature", "quadrature_estimate", "slq_estimator", "spectral_density",
    "top_eigenspace", "Eigenspace",
]


# --------------------------------------------------------------------------- quantities


class Quantity(NamedTuple):
    """A scalar built from traces: ``combine((tr f_1(A), .., tr f_r(A)), tr_exact)``.

    Attributes:
        fns: elementwise ``f_r(lambda)`` (applied to float64 Ritz values).
        dfns: their derivatives (for gradients).
        combine: ``combine(means (r,), trace or None) -> scalar`` (jnp, differentiable).
        name: label.
    """

    fns: tuple
    dfns: tuple
    combine: Callable
    name: str


def _xlogx(x):
    return jnp.where(x > 0, x * jnp.log(jnp.where(x > 0, x, 1.0)), 0.0)


def _safe_log(x):
    return jnp.log(jnp.maximum(x, jnp.finfo(x.dtype).tiny))


def _pick_trace(m, tr):
    return m[0] if tr is None else tr


def logdet(shift: float = 0.0) -> Quantity:
    """``log det(A + shift I) = sum log(lambda_i + shift)`` (A positive definite after the shift).

    Example:
        >>> lam = jnp.array([1.0, 2.0, 3.0, 4.0])                 # eigenvalues of A
        >>> q = logdet(1.0)
        >>> traces = jnp.stack([jnp.sum(f(lam)) for f in q.fns])   # exact tr f_r(A); SLQ estimates these
        >>> round(float(q.combine(traces, None)), 4)                     # log(2 * 3 * 4 * 5)
        4.7875
        >>> logdet(1e-3).name
        'logdet(shift=0.001)'
    """
    return Quantity((lambda x: _safe_log(x + shift),), (lambda x: 1.0 / (x + shift),), lambda m, tr: m[0],
                    f"logdet(shift={shift})")


def spectral_entropy() -> Quantity:
    """von Neumann entropy ``-sum p log p``, ``p = lambda / sum lambda`` (eigenvalues of the operator as given).

    Example:
        >>> lam = jnp.array([1.0, 2.0, 3.0, 4.0])                 # eigenvalues of A
        >>> q = spectral_entropy()
        >>> traces = jnp.stack([jnp.sum(f(lam)) for f in q.fns])   # exact tr f_r(A); SLQ estimates these
        >>> round(float(q.combine(traces, None)), 4)                   # -sum p log p, p = lam / 10
        1.2799
    """
    def combine(m, tr):
        t = _pick_trace(m, tr)
        return jnp.log(t) - m[1] / t
    return Quantity((lambda x: jnp.maximum(x, 0.0), _xlogx),
                    (lambda x: jnp.ones_like(x), lambda x: _safe_log(x) + 1.0), combine, "entropy")


def effective_rank(convention: str = "eigenvalue") -> Quantity:
    """``exp(H)``: ``convention="eigenvalue"`` (Vendi / von Neumann) or ``"singular"`` (RankMe, eps = 0:
    p_k = s_k / sum s with s = sqrt(lambda)).

    Example:
        >>> lam = jnp.array([1.0, 2.0, 3.0, 4.0])                 # eigenvalues of A
        >>> q = effective_rank()
        >>> traces = jnp.stack([jnp.sum(f(lam)) for f in q.fns])   # exact tr f_r(A); SLQ estimates these
        >>> round(float(q.combine(traces, None)), 4)                   # exp(entropy of p = lam / 10)
        3.5961
        >>> effective_rank("singular").name
        'effective_rank(singular)'
    """
    if convention == "eigenvalue":
        ent = spectral_entropy()
        return Quantity(ent.fns, ent.dfns, lambda m, tr: jnp.exp(ent.combine(m, tr)), "effective_rank(eigenvalue)")
    if convention == "singular":
        def combine(m, tr):
            t = m[0]
            return jnp.exp(jnp.log(t) - m[1] / t)
        sq = lambda x: jnp.sqrt(jnp.maximum(x, 0.0))  # noqa: E731
        return Quantity((sq, lambda x: 0.5 * sq(x) * _safe_log(x)),
                        (lambda x: 0.5 / sq(x), lambda x: 0.25 * (_safe_log(x) + 2.0) / sq(x)),
                        combine, "effective_rank(singular)")
    raise ValueError(f"`convention` must be 'eigenvalue' or 'singular', got {convention!r}.")


def participation_ratio() -> Quantity:
    """``(sum lambda)^2 / sum lambda^2``.

    Example:
        >>> lam = jnp.array([1.0, 2.0, 3.0, 4.0])                 # eigenvalues of A
        >>> q = participation_ratio()
        >>> traces = jnp.stack([jnp.sum(f(lam)) for f in q.fns])   # exact tr f_r(A); SLQ estimates these
        >>> round(float(q.combine(traces, None)), 4)                   # 10^2 / 30
        3.3333
    """
    def combine(m, tr):
        t = _pick_trace(m, tr)
        return t * t / m[1]
    return Quantity((lambda x: x, lambda x: x * x), (lambda x: jnp.ones_like(x), lambda x: 2.0 * x), combine,
                    "participation_ratio")


def eigencount(low: float, high: float) -> Quantity:
    """Number of eigenvalues in ``[low, high]`` (Gauss quadrature of the indicator; not differentiable).

    Example:
        >>> lam = jnp.array([1.0, 2.0, 3.0, 4.0])                 # eigenvalues of A
        >>> q = eigencount(2.5, 5.0)
        >>> traces = jnp.stack([jnp.sum(f(lam)) for f in q.fns])   # exact tr f_r(A); SLQ estimates these
        >>> round(float(q.combine(traces, None)), 4)
        2.0
    """
    return Quantity((lambda x: ((x >= low) & (x <= high)).astype(x.dtype),), (lambda x: jnp.zeros_like(x),),
                    lambda m, tr: m[0], f"eigencount[{low}, {high}]")


def trace_function(f: Callable, df: Callable | None = None, name: str = "tr f(A)") -> Quantity:
    """``tr f(A)`` for an elementwise jnp function ``f`` (``df`` its derivative, for gradients).

    Example:
        >>> lam = jnp.array([1.0, 2.0, 3.0, 4.0])                 # eigenvalues of A
        >>> q = trace_function(lambda x: x ** 2, name="tr A^2")
        >>> traces = jnp.stack([jnp.sum(f(lam)) for f in q.fns])   # exact tr f_r(A); SLQ estimates these
        >>> round(float(q.combine(traces, None)), 4)
        30.0
    """
    return Quantity((f,), (df if df is not None else jax.vmap(jax.grad(f)),), lambda m, tr: m[0], name)


# --------------------------------------------------------------------------- deflation subspace


class Eigenspace(NamedTuple):
    """Top Ritz pairs from a randomised subspace iteration.

    Attributes:
        values: (p,) Ritz values, descending (float64).
        vectors: (p, d) orthonormal Ritz vectors as rows (operator dtype).
        residuals: (p,) ``||A u_i - theta_i u_i||`` (float64).
        num_matvecs: int.
    """

    values: jax.Array
    vectors: jax.Array
    residuals: jax.Array
    num_matvecs: int


def _orth_rows(y):
    q, _ = jnp.linalg.qr(y.T)
    return q.T


def top_eigenspace(key, operator, rank: int, *, oversample: int = 8, power_iters: int = 3,
                   dtype=jnp.float32) -> Eigenspace:
    """Top-``rank`` eigenpairs by randomised subspace iteration (Halko, Martinsson & Tropp 2011) + Rayleigh-Ritz.

    Uses ``(power_iters + 2) * (rank + oversample)`` matvecs.

    Example:
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
        >>> sp = top_eigenspace(jax.random.key(0), A, 2, oversample=2)
        >>> np.round(np.asarray(sp.values), 4).tolist(), sp.vectors.shape, sp.num_matvecs
        ([4.0, 3.0], (2, 4), 20)
    """
    _base.check_counts(rank=rank)
    d = _base.operator_dim(operator)
    mm = _base.matmat_rows(operator)
    block = min(rank + oversample, d)
    y = mm(_base.sample_probes(key, block, d, "normal", dtype))
    for _ in range(power_iters):
        y = mm(_orth_rows(y))
    q = _orth_rows(y)
    b = mm(q)
    with x64():
        t = _mm(f64(q), f64(b).T)
        t = 0.5 * (t + t.T)
        theta, w = jnp.linalg.eigh(t)
        theta, w = theta[::-1][:rank], w[:, ::-1][:, :rank]
        u = _mm(w.T, f64(q))
        res = jnp.linalg.norm(_mm(w.T, f64(b)) - theta[:, None] * u, axis=1)
    return Eigenspace(theta, u.astype(dtype), res, (power_iters + 2) * block)


# --------------------------------------------------------------------------- cached quadrature


class Quadrature(NamedTuple):
    """One cached (optionally deflated) Lanczos run: everything SLQ needs for any ``tr f(A)``.

    Attributes:
        nodes: (k, s) Ritz values per probe (float64).
        weights: (k, s) Gauss weights times ``||P z||^2`` (float64).
        ritz_values: (p,) exactly deflated Ritz values (float64; p = 0 without deflation).
        trace: exact ``tr A`` if the operator provides it, else None.
        num_matvecs: int32, deflation included.
        dim: int32, the operator size d.
        half_nodes, half_weights: the same probes' quadrature after ``s // 2`` steps (the leading block of
            the same run), or None: the truncation guard of :func:`quadrature_estimate`.
    """

    nodes: jax.Array
    weights: jax.Array
    ritz_values: jax.Array
    trace: Any
    num_matvecs: jax.Array
    dim: jax.Array
    half_nodes: Any = None
    half_weights: Any = None


def _samples(nodes, weights, fns, shift=0.0):
    """(k, r) per-probe samples ``sum_j w_j f_r(theta_j + shift)`` (zero-weight nodes ignored)."""
    cols = []
    for f in fns:
        fx = f(nodes + shift)
        cols.append(jnp.sum(jnp.where(weights > 0, weights * fx, 0.0), axis=1))
    return jnp.stack(cols, axis=1)


def _config_check(num_probes, num_steps, deflate, oversample, power_iters, sampler, level):
    _base.check_counts(num_probes=num_probes, num_steps=num_steps)
    for name, v in (("deflate", deflate), ("oversample", oversample), ("power_iters", power_iters)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"`{name}` must be a non-negative Python int, got {v!r}.")
    if sampler not in _base.SAMPLERS:
        raise ValueError(f"`sampler` must be one of {_base.SAMPLERS}, got {sampler!r}.")
    if num_probes < 2:
        raise ValueError("`num_probes` must be >= 2 to estimate a standard error.")
    return _base.level_check(level)


def _run(key, operator, num_probes, num_steps, deflate, oversample, power_iters, sampler, dtype, keep_basis):
    d = _base.operator_dim(operator)
    if num_steps > d - deflate:
        raise ValueError(f"`num_steps`={num_steps} exceeds the dimension of the deflated space d - deflate = "
                         f"{d - deflate}; use num_steps <= {d - deflate}.")
    mm = _base.matmat_rows(operator)
    k_defl, k_probe = jax.random.split(key)
    space = None
    if deflate:
        space = top_eigenspace(k_defl, operator, deflate, oversample=oversample, power_iters=power_iters, dtype=dtype)
    z = _base.sample_probes(k_probe, num_probes, d, sampler, dtype)
    tri = lanczos(mm, z, num_steps, deflation=None if space is None else space.vectors, keep_basis=keep_basis)
    return space, z, tri


def slq_quadrature(num_probes: int, num_steps: int, *, deflate: int = 0, oversample: int = 8,
                   power_iters: int = 3, sampler: str = "rademacher", dtype=jnp.float32) -> Callable:
    """Constructor: ``quadrature(key, operator) -> Quadrature`` (one Lanczos run for many quantities).

    Args:
        num_probes: k probes (one Lanczos run each, batched as rows).
        num_steps: s Lanczos steps per probe (quadrature exact for degree <= 2s-1).
        deflate: number p of top eigenpairs taken exactly (0 = plain SLQ).
        oversample, power_iters: randomised subspace iteration settings for the deflation.
        sampler: ``"rademacher"`` or ``"normal"``.
        dtype: dtype of probes and matvecs (float32 default; float64 runs under a local x64 context).

    Example:
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
        >>> quad = jax.jit(slq_quadrature(num_probes=2, num_steps=4))(jax.random.key(0), A)
        >>> quad.nodes.shape, int(quad.num_matvecs)
        ((2, 4), 8)
        >>> np.round(np.asarray(quad.weights).sum(axis=1), 4).tolist()   # ||z||^2 = d per probe
        [4.0, 4.0]
    """
    _config_check(num_probes, num_steps, deflate, oversample, power_iters, sampler, 0.95)

    def quadrature(key, operator) -> Quadrature:
        with x64() if jnp.dtype(dtype) == jnp.float64 else contextlib.nullcontext():
            space, _, tri = _run(key, operator, num_probes, num_steps, deflate, oversample, power_iters, sampler,
                                 dtype, False)
            nodes, weights = ritz(tri)
            h = max(num_steps // 2, 1)
            half_nodes, half_weights = ritz(tri._replace(alphas=tri.alphas[:, :h], betas=tri.betas[:, :h]))
            tr = _base.operator_trace(operator)
            with x64():
                rv = space.values if space is not None else jnp.zeros((0,), jnp.float64)
                tr = None if tr is None else f64(tr)
            mv = num_probes * num_steps + (space.num_matvecs if space is not None else 0)
            return Quadrature(nodes, weights, rv, tr, jnp.asarray(mv, jnp.int32),
                              jnp.asarray(_base.operator_dim(operator), jnp.int32), half_nodes, half_weights)

    return quadrature



def quadrature_estimate(quad: Quadrature, quantity: Quantity, *, shift: float = 0.0, level: float = 0.95,
                        exact_trace: bool = True) -> Estimate:
    """Estimate ``quantity`` of ``A + shift I`` from a cached :class:`Quadrature`.

    ``exact_trace=False`` ignores the operator's exact trace (uses the probe samples of ``tr A``).
    When the quadrature carries its ``s/2``-step nodes, ``Estimate.truncation`` is the change between the
    two and the interval is widened by it (the probes' standard error does not see truncation bias).

    Example:
        >>> lam = jnp.array([1.0, 2.0, 3.0, 4.0])
        >>> # what s = d = 4 Lanczos steps give for A = diag(lam) and two +-1 probes: exact nodes, unit weights
        >>> quad = Quadrature(jnp.tile(lam, (2, 1)), jnp.ones((2, 4)), jnp.zeros(0), None, 8, 4)
        >>> [round(float(quadrature_estimate(quad, logdet(), shift=s).value), 4) for s in (0.0, 1.0)]
        [3.1781, 4.7875]
    """
    level = _base.level_check(level)
    with x64():
        samples = _samples(quad.nodes, quad.weights, quantity.fns, shift)
        offsets = jnp.stack([jnp.sum(f(quad.ritz_values + shift)) for f in quantity.fns])
        tr = None
        if exact_trace and quad.trace is not None:
            tr = quad.trace + shift * f64(quad.dim)
        est = _base.estimate_from_samples(samples, offsets, quantity.combine, level, quad.num_matvecs, aux=tr)
        if quad.half_nodes is None:
            return est
        half = _samples(quad.half_nodes, quad.half_weights, quantity.fns, shift)
        value_half = quantity.combine(jnp.mean(half, axis=0) + offsets, tr)
        trunc = jnp.abs(est.value - value_half)
        return est._replace(ci=(est.ci[0] - trunc, est.ci[1] + trunc), truncation=trunc)


def spectral_density(quad: Quadrature, grid, width: float):
    """Gaussian-smoothed spectral density ``phi(x) = (1/d) sum_i N(x; lambda_i, width^2)`` on ``grid`` (g,).

    Normalised by the quadrature's own estimate of d (the mean of ``||z||^2`` weights plus deflated count).
    Returns (g,) float64.

    Example:
        >>> lam = jnp.array([1.0, 2.0, 3.0, 4.0])
        >>> # what s = d = 4 Lanczos steps give for A = diag(lam) and two +-1 probes: exact nodes, unit weights
        >>> quad = Quadrature(jnp.tile(lam, (2, 1)), jnp.ones((2, 4)), jnp.zeros(0), None, 8, 4)
        >>> grid = np.linspace(-2.0, 7.0, 181)
        >>> phi = spectral_density(quad, grid, width=0.3)
        >>> phi.shape, round(float(np.asarray(phi).sum() * (grid[1] - grid[0])), 3)   # integrates to 1
        ((181,), 1.0)
    """
    with x64():
        g = f64(grid)
        w = f64(quad.weights)
        norm = width * jnp.sqrt(2 * jnp.pi)
        kern = lambda x: jnp.exp(-0.5 * ((g[:, None] - x[None, :]) / width) ** 2) / norm  # noqa: E731
        probe = jnp.mean(jax.vmap(lambda nd, wt: _mm(kern(nd), wt))(quad.nodes, w), axis=0)
        defl = kern(quad.ritz_values).sum(axis=1)
        d = jnp.mean(jnp.sum(w, axis=1)) + quad.ritz_values.shape[0]
        return (probe + defl) / d


# --------------------------------------------------------------------------- single-quantity estimator


def slq_estimator(quantity: Quantity, num_probes: int, num_steps: int, *, deflate: int = 0, oversample: int = 8,
                  power_iters: int = 3, sampler: str = "rademacher", dtype=jnp.float32, level: float = 0.95,
                  shift: float = 0.0, exact_trace: bool = True, differentiable: bool = False) -> Callable:
    """Constructor: ``estimate(key, operator) -> Estimate`` for one :class:`Quantity` of ``A + shift I``.

    Args: as :func:`slq_quadrature`, plus ``level`` (CI level), ``shift``, ``exact_trace`` and
    ``differentiable`` (return the value with a stochastic-gradient surrogate, see module doc;
    the value is then in the operator dtype).

    Example:
        >>> est = slq_estimator(spectral_entropy(), 64, 30, deflate=32)
        >>> # e = jax.jit(est)(key, op); e.value, e.ci
    """
    level = _config_check(num_probes, num_steps, deflate, oversample, power_iters, sampler, level)
    def estimate(key, operator) -> Estimate:
        with x64() if jnp.dtype(dtype) == jnp.float64 else contextlib.nullcontext():
            d = _base.operator_dim(operator)
            space, z, tri = _run(key, operator, num_probes, num_steps, deflate, oversample, power_iters, sampler,
                                 dtype, differentiable)
            tr_op = _base.operator_trace(operator) if exact_trace else None
            mv = num_probes * num_steps + (space.num_matvecs if space is not None else 0)
            with x64():
                nodes, weights, eig = ritz(tri, vectors=True)
                rv = space.values if space is not None else jnp.zeros((0,), jnp.float64)
                samples = _samples(nodes, weights, quantity.fns, shift)
                offsets = jnp.stack([jnp.sum(f(rv + shift)) for f in quantity.fns])
                tr = None if tr_op is None else jax.lax.stop_gradient(f64(tr_op)) + shift * d
                est = _base.estimate_from_samples(samples, offsets, quantity.combine, level, mv, aux=tr)
                # truncation guard: the same probes after s/2 steps (leading block of the same run)
                h = max(num_steps // 2, 1)
                hn, hw = ritz(tri._replace(alphas=tri.alphas[:, :h], betas=tri.betas[:, :h], basis=None))
                half = _samples(hn, hw, quantity.fns, shift)
                trunc = jax.lax.stop_gradient(jnp.abs(est.value - quantity.combine(jnp.mean(half, axis=0) + offsets,
                                                                                   tr)))
                est = est._replace(ci=(est.ci[0] - trunc, est.ci[1] + trunc), truncation=trunc)
                if differentiable:
                    mean = jnp.mean(samples, axis=0) + offsets
                    if tr is None:
                        g_m = jax.grad(lambda m: quantity.combine(m, None))(mean)
                        g_t = None
                    else:
                        g_m, g_t = jax.grad(quantity.combine, argnums=(0, 1))(mean, tr)
                    # h(theta) = sum_r g_r f_r'(theta): the gradient is tr(h(A) dA) (+ g_t tr dA).
                    h_nodes = sum(g_m[r] * quantity.dfns[r](nodes + shift) for r in range(len(quantity.dfns)))
                    h_ritz = sum(g_m[r] * quantity.dfns[r](rv + shift) for r in range(len(quantity.dfns)))
                    h_nodes = jnp.where(weights > 0, h_nodes, 0.0)
                    # control variate: with an exact (differentiable) trace, move the mean of h into
                    # mu * tr(dA), taken exactly; the probes then only carry h - mu.
                    if tr_op is not None:
                        mu = jnp.sum(weights * h_nodes) / jnp.sum(weights)
                        g_t = (0.0 if g_t is None else g_t) + mu
                        h_nodes, h_ritz = h_nodes - mu, h_ritz - mu
                    # y_i = ||z|| Q^T W h(theta) W^T e1 ~ h(A) z_i
                    coeff = jnp.einsum("ksj,kj,kj->ks", eig, eig[:, 0, :], h_nodes, precision=HIGHEST) * f64(tri.norms)[:, None]
                    coeff, dc = jax.lax.stop_gradient(coeff), jax.lax.stop_gradient(h_ritz)
                    g_t = None if g_t is None else jax.lax.stop_gradient(g_t)
            if differentiable:
                dt = z.dtype
                zq = z if space is None else z - _mm(_mm(z, space.vectors.T), space.vectors)
                zq = jax.lax.stop_gradient(zq)
                y = jnp.einsum("ks,ksd->kd", coeff.astype(dt), jax.lax.stop_gradient(tri.basis), precision=HIGHEST)
                mm = _base.matmat_rows(operator)
                surr = jnp.sum(y * mm(zq)) / num_probes
                if space is not None:
                    u = jax.lax.stop_gradient(space.vectors)
                    surr = surr + jnp.sum(dc.astype(dt) * jnp.sum(u * mm(u), axis=1))
                if g_t is not None:
                    surr = surr + g_t.astype(dt) * tr_op.astype(dt)
                val = jax.lax.stop_gradient(est.value).astype(dt) + surr - jax.lax.stop_gradient(surr)
                est = est._replace(value=val)
            return est

    return estimate
