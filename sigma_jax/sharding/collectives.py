"""Collectives for a user's own ``shard_map`` / ``pmap`` step: local rows plus an axis name, one ``psum``.

The local statistics are those of the single-device producers (:func:`sigma_jax.gram.gram_f64`,
:func:`sigma_jax.gram.q_moments`) on the device's rows; only the reduction is added here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from sigma_jax import gram
from sigma_jax._linalg import HIGHEST
from sigma_jax._x64 import f64, join, split, x64
from sigma_jax.report import SigmaReport, SigmaStats, report_from_stats
from sigma_jax.sharding.placement import AxisName, _axis_size

__all__ = ["PSUM_MODES", "psum_f64", "gram_psum", "update_psum", "sigma_stats_psum", "sigma_psum",
           "matmat_rows_psum", "probe_key"]

PSUM_MODES = ("float64", "pair")


def _check_mode(psum_mode: str) -> None:
    if psum_mode not in PSUM_MODES:
        raise ValueError(f"`psum_mode` must be one of {PSUM_MODES}, got {psum_mode!r}.")


def psum_f64(x64_local, axis_name: AxisName, *, psum_mode: str = "float64"):
    """All-reduce a float64 array across ``axis_name``, in float64 or as an exact float32 pair.

    Call inside :func:`sigma_jax._x64.x64` (the input is float64).  ``"pair"``
    mode (for collectives without float64): ``s = pmax max|x_d|``, grid
    ``h = sigma 2^-23`` with ``sigma = 2^(e(s) + ceil(log2 p) + 1) >= 2 p s``;
    ``hi_d = round_h(x_d)`` (exact in float32, and so is every partial sum of p of
    them since ``|sum| < sigma``), ``lo_d = f32(x_d - hi_d)``, ``|lo_d| <= h/2``.
    Error ``<= p^2 2^-25 h <= 4 p^3 2^-48 s``.

    Example:
        >>> with x64():
        ...     f = jax.shard_map(lambda a: psum_f64(f64(a), "data", psum_mode="pair"), mesh=make_mesh(),
        ...                       in_specs=P("data"), out_specs=P())
        ...     float(f(jnp.arange(jax.device_count(), dtype=jnp.float64))[0]) == sum(range(jax.device_count()))
        True
    """
    _check_mode(psum_mode)
    if psum_mode == "float64":
        return lax.psum(x64_local, axis_name)
    p = _axis_size(axis_name)
    s = lax.pmax(jnp.max(jnp.abs(x64_local)).astype(jnp.float32), axis_name)
    s = jnp.where(s > 0, f64(s), 1.0)
    _, e = jnp.frexp(s)  # s < 2^e
    sigma = jnp.ldexp(jnp.ones((), jnp.float64), e + int(math.ceil(math.log2(p))) + 1)
    c = 1.5 * jnp.ldexp(sigma, 29)  # ulp(c) = sigma 2^-23 = h
    hi = (x64_local + c) - c
    lo = (x64_local - hi).astype(jnp.float32)
    hi = lax.psum(hi.astype(jnp.float32), axis_name)
    lo = lax.psum(lo, axis_name)
    return f64(hi) + f64(lo)


def _local_count(rows, mask):
    if mask is None:
        return jnp.asarray(rows.shape[0], jnp.int32)
    return jnp.sum(mask > 0).astype(jnp.int32)



def _gram64_psum(local_rows, axis_name, normalize, mask, psum_mode, chunk_rows):
    """float64 ``sum over the axis of A_d^T A_d``: the local :func:`sigma_jax.gram.gram_f64`, one psum."""
    g = gram.gram_f64(local_rows, normalize=normalize, chunk_rows=chunk_rows, mask=mask)
    with x64():
        return psum_f64(g, axis_name, psum_mode=psum_mode)


def gram_psum(local_rows, axis_name: AxisName, *, normalize: bool = True, mask=None, psum_mode: str = "float64",
              chunk_rows: int = gram.DEFAULT_CHUNK_ROWS) -> gram.GramState:
    """Gram matrix of the rows held across ``axis_name``, inside a user's ``shard_map`` / ``pmap`` step.

    ``G = sum_d A_d^T A_d``: local float64 product, one ``psum``.  Returns a
    replicated :class:`sigma_jax.gram.GramState` (float32 ``hi + lo`` pair, so it
    leaves a ``jit`` without losing bits; ``gram.finalize(state)`` gives float64 G)
    whose ``count`` is the number of rows across the axis (masked rows excluded).

    Args:
        local_rows: (c, m) rows on this device.
        axis_name: the ``shard_map`` mesh axis / ``pmap`` axis name (or a tuple).
        normalize: L2-normalise rows (zero rows stay zero).
        mask: optional (c,) 0/1 weights (masked rows contribute nothing).
        psum_mode: ``"float64"`` or ``"pair"`` (see :func:`psum_f64`).

    Example:
        >>> f = jax.shard_map(lambda a: gram_psum(a, "data"), mesh=make_mesh(), in_specs=P("data"), out_specs=P())
        >>> int(f(jnp.ones((8 * jax.device_count(), 3))).count) == 8 * jax.device_count()
        True
    """
    with x64():
        g = _gram64_psum(local_rows, axis_name, normalize, mask, psum_mode, chunk_rows)
        hi, lo = split(g)
    count = lax.psum(_local_count(local_rows, mask), axis_name)
    return gram.GramState(hi, lo, count)


def update_psum(state: gram.GramState, local_rows, axis_name: AxisName, *, normalize: bool = True, mask=None,
                psum_mode: str = "float64", chunk_rows: int = gram.DEFAULT_CHUNK_ROWS) -> gram.GramState:
    """``state + gram_psum(local_rows, axis_name)`` for a replicated streaming state (training-loop use).

    ``state`` must be the same on every device (as returned by a previous call);
    the sum is formed in float64 and stored back as the float32 pair.

    Example (a legacy ``pmap`` step; under ``shard_map`` the call is the same):
        >>> p = jax.local_device_count()
        >>> step = jax.pmap(lambda s, a: update_psum(s, a, "i"), axis_name="i", in_axes=(None, 0))
        >>> state = step(gram.init(3), jnp.ones((p, 4, 3)))
        >>> int(state.count[0]) == 4 * p
        True
    """
    if local_rows.ndim != 2 or local_rows.shape[1] != state.dim:
        raise ValueError(f"`local_rows` must have shape (c, {state.dim}), got {tuple(local_rows.shape)}.")
    with x64():
        g = join(state.hi, state.lo) + _gram64_psum(local_rows, axis_name, normalize, mask, psum_mode, chunk_rows)
        hi, lo = split(g)
    count = state.count + lax.psum(_local_count(local_rows, mask), axis_name)
    return gram.GramState(hi, lo, count)



def sigma_stats_psum(local_rows, axis_name: AxisName, *, n_sub: int | None = None, n_total: int | None = None,
                     delta: float = 1e-3, normalize: bool = True, mask=None, psum_mode: str = "float64",
                     chunk_rows: int = gram.DEFAULT_CHUNK_ROWS) -> SigmaStats:
    """SIGMA's statistics of the rows held across ``axis_name``: ``G_A`` by one psum, q-moments by a second.

    The producer behind :func:`sigma_psum` (the same statistics as :func:`sigma_jax.gram.dense_stats`
    on all the rows together, up to the order of float64 additions).

    Example:
        >>> from sigma_jax.sharding import make_mesh
        >>> from jax.sharding import PartitionSpec as P
        >>> f = jax.shard_map(lambda a: sigma_stats_psum(a, "data", n_total=100).q_moments, mesh=make_mesh(),
        ...                   in_specs=P("data"), out_specs=P())
        >>> f(jax.random.normal(jax.random.key(0), (8 * jax.device_count(), 3))).shape
        (6,)
    """
    if n_sub is None:
        if mask is not None:
            raise ValueError("`sigma_psum` with a `mask` needs `n_sub` (the global number of unmasked rows, "
                             "a Python int).")
        n_sub = local_rows.shape[0] * _axis_size(axis_name)
    n_sub = int(n_sub)
    n_total = n_sub if n_total is None else int(n_total)
    if n_total < n_sub:
        raise ValueError(f"`n_total`={n_total} is smaller than `n_sub`={n_sub}.")
    g = _gram64_psum(local_rows, axis_name, normalize, mask, psum_mode, chunk_rows)
    q = inv_l = None
    if n_sub < n_total:
        inv_l = gram.band_factor(g, delta, n_sub, n_total)     # G is replicated: the same factor on every device
        q_local = gram.q_moments(local_rows, g, n_sub=n_sub, normalize=normalize, chunk_rows=chunk_rows, mask=mask,
                                 inv_l=inv_l)
        with x64():
            q = lax.psum(q_local, axis_name)
    return SigmaStats(g, None, q, n_sub, n_sub, n_total, local_rows.shape[1], None, inv_l)


def sigma_psum(local_rows, axis_name: AxisName, *, n_sub: int | None = None, n_total: int | None = None,
               delta: float = 1e-3, rho: float = 1.0, normalize: bool = True, mask=None, level: float = 0.95,
               psum_mode: str = "float64", chunk_rows: int = gram.DEFAULT_CHUNK_ROWS) -> SigmaReport:
    r"""SIGMA report of the rows held across ``axis_name``, inside a user's ``shard_map`` / ``pmap`` step.

    :func:`sigma_stats_psum` (``G_A`` by one ``psum`` of local float64 Gram matrices; when
    ``n_sub < n_total`` the band's q-moments shard-locally and a second ``psum`` of two numbers),
    then the one assembler :func:`sigma_jax.report.report_from_stats` (replicated).

    Args:
        local_rows: (c, m) rows on this device (all rows of the axis form the subset ``I_A``).
        axis_name: axis to reduce over.
        n_sub: ``n_A``, a Python int.  Default ``c * axis size``; **required** with
            ``mask`` or zero padding rows (the report must use the true count).
        n_total, delta, rho, level: as in :func:`sigma_jax.sigma`.
        mask: optional (c,) 0/1 weights.

    Returns:
        a replicated :class:`sigma_jax.report.SigmaReport`.  Its leaves are float64
        inside the step; returned from a ``jit`` traced outside ``x64()`` they are
        truncated to float32 (return the ``GramState`` from :func:`gram_psum` to keep
        all the bits).

    Example:
        >>> from sigma_jax.sharding import make_mesh
        >>> from jax.sharding import PartitionSpec as P
        >>> x = jax.random.normal(jax.random.key(0), (64 * jax.device_count(), 4))
        >>> f = jax.shard_map(lambda a: sigma_psum(a, "data", n_total=10**4), mesh=make_mesh(),
        ...                   in_specs=P("data"), out_specs=P())
        >>> rep = f(x)
        >>> float(rep.lower) <= float(rep.upper), float(rep.ci_halfwidth) > 0
        (True, True)
    """
    stats = sigma_stats_psum(local_rows, axis_name, n_sub=n_sub, n_total=n_total, delta=delta, normalize=normalize,
                             mask=mask, psum_mode=psum_mode, chunk_rows=chunk_rows)
    return report_from_stats(stats, delta=delta, rho=rho, level=level)


def matmat_rows_psum(v, local_rows, axis_name: AxisName, *, row_scale=None, delta=0.0, precision=HIGHEST,
                     ridge=None):
    """``V (A^T S^2 A + delta I)`` with the rows of ``A`` spread over ``axis_name`` (probes as rows).

    ``V`` (k, m) must be the same on every device; returns the replicated (k, m)
    result after one ``psum`` of a (k, m) block.  ``row_scale`` (c,) is the local
    ``1/||a_j||`` (None: no normalisation).  Same arithmetic order as
    :meth:`sigma_jax.gram.GramOperator.matmat_rows`.

    Example:
        >>> f = jax.shard_map(lambda v, a: matmat_rows_psum(v, a, "data"), mesh=make_mesh(),
        ...                   in_specs=(P(), P("data")), out_specs=P())
        >>> f(jnp.ones((2, 3)), jnp.ones((jax.device_count(), 3))).shape
        (2, 3)
    """
    delta = delta if ridge is None else ridge  # `ridge` is the former name of `delta`
    a = local_rows.astype(v.dtype)
    w = jnp.matmul(v, a.T, precision=precision)  # (k, c)
    if row_scale is not None:
        s = row_scale.astype(v.dtype)
        w = (w * s) * s
    out = lax.psum(jnp.matmul(w, a, precision=precision), axis_name)
    return out + jnp.asarray(delta).astype(v.dtype) * v


def probe_key(key, axis_name: AxisName):
    """The per-device key ``fold_in(key, axis_index)``: deterministic, distinct on every device.

    Device ``i`` of the axis draws exactly the probes a single device would draw
    with ``jax.random.fold_in(key, i)``, so a probe-parallel run is reproducible
    and comparable with a sequential one.

    Example:
        >>> f = jax.shard_map(lambda k: jax.random.uniform(probe_key(k, "data"), (1,)), mesh=make_mesh(),
        ...                   in_specs=P(), out_specs=P("data"))
        >>> len(set(np.asarray(f(jax.random.key(0))).tolist())) == jax.device_count()
        True
    """
    return jax.random.fold_in(key, lax.axis_index(axis_name))

