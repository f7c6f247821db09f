r"""The exact SIGMA computation (Gu et al. 2026), paper-faithful, in float64.

Notation.  ``A`` (n x m) holds the embeddings ``v_j`` as rows (L2-normalised
when ``normalize=True``, so ``||v_j||^2 <= rho = 1``).  ``I_A`` is an observed
subset of ``n_A`` rows out of ``n_total`` (``n_A > m``), ``G_A = sum_{j in I_A}
v_j v_j^T`` and ``beta = (n_total - n_A) rho``.

* ``S = logdet(G_A + delta I)`` by Cholesky (no eigendecomposition);
* Track II ("sensitive", eq. 3.19): ``U_cov = S - m log n_A``, the log-det of
  the empirical second moment ``G_A / n_A`` (ridged);
* Track I ("conservative", eqs. 3.16-3.18):
  ``G_KF = logdet(G_A + (beta + delta) I) - m log(beta + delta)``;
* the deterministic sandwich (the unseen part satisfies ``0 <= G_B <= beta I``):
  ``S <= logdet(G_full + delta I) <= logdet(G_A + (beta + delta) I)``;
* the Theorem-3 band: ``U_cov`` on the subset is asymptotically normal around
  its full-sample value with 95% half-width
  ``1.96 sd(q) sqrt(1/n_A - 1/n_total)``, ``q_i = v_i^T C^{-1} v_i``, ``C = (G_A + delta I)/n_A``.

Beyond the paper (documented extensions): ``bias``, the second-order
subsampling bias ``E[U_cov(subset)] - U_cov(full) ~ -1/2 (1/n_A - 1/n_total)
mean(q^2 - 2q + m)`` (from ``log det(I + D) ~ tr D - tr D^2 / 2``), which is
*not* small when ``m^2 / n_A`` is not small; ``u_cov_debiased = u_cov - bias``.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import _checks, gram
from sigma_jax._x64 import f64, x64

__all__ = ["SigmaReport", "Drift", "sigma", "sigma_from_gram", "q_moments", "drift", "logdet_spd", "resolve_subset"]

_HOST_STREAM_BYTES = 1 << 28  # host (numpy / memmap) inputs above 256 MiB are streamed chunk by chunk


class SigmaReport(NamedTuple):
    """SIGMA quantities of one embedding set.  A pytree of arrays (float64 where computed).

    Attributes:
        logdet: ``S = logdet(G_A + delta I)``; also the lower end of the sandwich.
        u_cov: ``S - m log n_A`` (Track II, sensitive).
        g_kf: ``logdet(G_A + (beta+delta) I) - m log(beta+delta)`` (Track I, conservative).
        lower, upper: deterministic bounds on ``logdet(G_full + delta I)``.
        ci_halfwidth: Theorem-3 half-width of the band on ``u_cov`` (0 when ``n_A = n_total``).
        bias: second-order estimate of the subsampling bias of ``u_cov`` (<= 0; 0 when ``n_A = n_total``).
        sd_q: standard deviation of the Mahalanobis forms ``q_i`` over the subset (0 if not needed).
        beta: ``(n_total - n_A) rho``.
        n_sub, n_total, dim: ``n_A``, ``n_total``, ``m``.
        delta, rho, level: ridge, squared-norm bound, confidence level of the band.
    """

    logdet: jax.Array
    u_cov: jax.Array
    g_kf: jax.Array
    lower: jax.Array
    upper: jax.Array
    ci_halfwidth: jax.Array
    bias: jax.Array
    sd_q: jax.Array
    beta: jax.Array
    n_sub: jax.Array
    n_total: jax.Array
    dim: jax.Array
    delta: jax.Array
    rho: jax.Array
    level: jax.Array

    @property
    def u_cov_interval(self):
        """``(u_cov - ci_halfwidth, u_cov + ci_halfwidth)``."""
        return self.u_cov - self.ci_halfwidth, self.u_cov + self.ci_halfwidth

    @property
    def u_cov_debiased(self):
        """``u_cov - bias``: Track II corrected for the second-order subsampling bias (extension)."""
        return self.u_cov - self.bias

    def to_dict(self) -> dict[str, float | int]:
        """Plain Python numbers (for JSON).  Only for an unbatched report."""
        out: dict[str, float | int] = {}
        for name, value in self._asdict().items():
            v = np.asarray(value)
            if v.ndim:
                raise ValueError("to_dict() needs an unbatched report; index the batch first (e.g. via jax.tree.map).")
            out[name] = int(v) if name in ("n_sub", "n_total", "dim") else float(v)
        return out

    def summary(self) -> str:
        """A readable table (unbatched report)."""
        d = self.to_dict()
        rows = [
            ("n_A / n_total / m", f"{d['n_sub']} / {d['n_total']} / {d['dim']}"),
            ("delta, rho, beta", f"{d['delta']:.3g}, {d['rho']:.3g}, {d['beta']:.6g}"),
            ("S = logdet(G_A + dI)", f"{d['logdet']:.6f}"),
            ("U_cov (Track II)", f"{d['u_cov']:.6f} +/- {d['ci_halfwidth']:.4f} ({100 * d['level']:.0f}% band)"),
            ("  subsampling bias (est.)", f"{d['bias']:.4f}"),
            ("G_KF (Track I)", f"{d['g_kf']:.6f}"),
            ("logdet(G_full + dI) in", f"[{d['lower']:.6f}, {d['upper']:.6f}]"),
        ]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(w)}  {v}" for k, v in rows)


class Drift(NamedTuple):
    """Drift of SIGMA's tracks relative to the first report (eq. 3.20).

    Attributes:
        dU: ``U_cov(g) - U_cov(0)``, shape (G,).
        dG: ``G_KF(g) - G_KF(0)``, shape (G,).
        band: half-width for ``dU``: ``sqrt(hw_g^2 + hw_0^2)`` (independent subsample
            errors), or the larger of that and ``null_spread`` when one is given.
        significant: ``dU < -band`` (collapse) or ``dU > band``.
    """

    dU: jax.Array
    dG: jax.Array
    band: jax.Array
    significant: jax.Array


# --------------------------------------------------------------------------- linear algebra


@jax.custom_vjp
def logdet_spd(mat):
    """``log det M`` of a symmetric positive-definite matrix by Cholesky, in float64.

    Differentiable (``d logdet / dM = M^{-1}``) without the global x64 flag.

    Example:
        >>> float(logdet_spd(jnp.diag(jnp.array([2.0, 3.0]))))  # log 6
        1.791759469228055
    """
    with x64():
        chol = jnp.linalg.cholesky(f64(mat))
        return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def _logdet_fwd(mat):
    with x64():
        m64 = f64(mat)
        chol = jnp.linalg.cholesky(m64)
        val = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return val, (chol, jnp.zeros((), mat.dtype))


def _logdet_bwd(res, g):
    chol, proto = res
    dtype = proto.dtype
    with x64():
        eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=jnp.float64), chol.shape)
        inv = jax.scipy.linalg.cho_solve((chol, True), eye)
        return ((f64(g)[..., None, None] * inv).astype(dtype),)


logdet_spd.defvjp(_logdet_fwd, _logdet_bwd)


def _inv_chol(gram_a, delta: float):
    """``L^{-1}`` with ``L L^T = G_A + delta I`` (float64, lower triangular).  Call inside x64().

    One (m x m) triangular inversion, after which every chunk's Mahalanobis forms are a
    GEMM (XLA's batched triangular solve is several times slower on CPU).  Rounding in
    ``q`` grows like ``cond(L) eps = sqrt(cond(G_A + delta I)) eps`` (< 1e-10 for delta = 1e-3
    and unit rows, n_A < 1e8).
    """
    m = gram_a.shape[-1]
    eye = jnp.eye(m, dtype=jnp.float64)
    chol = jnp.linalg.cholesky(f64(gram_a) + delta * eye)
    return jax.scipy.linalg.solve_triangular(chol, eye, lower=True)


def _q_chunk(rows, inv_chol, n_sub, normalize: bool, mask=None):
    """Sums of ``q_i = n_A ||L^{-1} v_i||^2`` and of ``q_i^2`` over one chunk (float64)."""
    with x64():
        a = f64(rows)
        scale = gram._row_scale(a, normalize)
        if scale is not None:
            a = a * scale[:, None]
        w = a @ inv_chol.T  # (c, m): rows L^{-1} v_i
        q = n_sub * jnp.sum(w * w, axis=1)
        if mask is not None:
            q = q * f64(mask)
        return jnp.stack([jnp.sum(q), jnp.sum(q * q)])


def q_moments(rows, gram_a, *, delta: float = 1e-3, n_sub: int | None = None, normalize: bool = True,
              chunk_rows: int = gram.DEFAULT_CHUNK_ROWS):
    """``(sum_i q_i, sum_i q_i^2)`` over the subset rows, ``q_i = v_i^T C^{-1} v_i``, ``C = (G_A + delta I)/n_A``.

    Args:
        rows: (n_A, m) subset rows (or one shard of them: the sums add across shards).
        gram_a: (m, m) ``G_A`` of the whole subset.
        n_sub: ``n_A`` (defaults to ``rows.shape[0]``; pass it when ``rows`` is a shard).

    Example:
        >>> rows = jax.random.normal(jax.random.key(0), (100, 3))
        >>> s = q_moments(rows, gram.gram_f64(rows), delta=0.0)
        >>> round(float(s[0]) / 100, 6)  # mean q = m without ridge
        3.0
    """
    n, m = rows.shape
    n_sub = n if n_sub is None else n_sub
    with x64():
        chol = _inv_chol(gram_a, delta)
        n_full = n // chunk_rows if n > chunk_rows else 0
        acc = None
        if n_full:
            blocks = rows[: n_full * chunk_rows].reshape(n_full, chunk_rows, m)
            acc, _ = jax.lax.scan(lambda c, b: (c + _q_chunk(b, chol, n_sub, normalize), None),
                                  _q_chunk(blocks[0], chol, n_sub, normalize), blocks[1:])  # see gram_f64
        rest = rows[n_full * chunk_rows:]
        if rest.shape[0]:
            tail = _q_chunk(rest, chol, n_sub, normalize)
            acc = tail if acc is None else acc + tail
        return acc


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2.0)


def sigma_from_gram(gram_a, *, n_sub: int, n_total: int | None = None, delta: float = 1e-3, rho: float = 1.0,
                    q_sums=None, level: float = 0.95) -> SigmaReport:
    """SIGMA report from a precomputed ``G_A`` (m x m), e.g. streamed or sharded.

    Args:
        gram_a: (m, m) Gram matrix of the ``n_sub`` observed rows (float64 preferred).
        n_sub, n_total: ``n_A`` and ``n_total`` (default ``n_sub``).
        q_sums: ``(sum q, sum q^2)`` from :func:`q_moments`; without them the band,
            ``bias`` and ``sd_q`` are NaN whenever ``n_sub < n_total`` (they need the rows).

    Example:
        >>> g = jnp.eye(4) * 10.0
        >>> rep = sigma_from_gram(g, n_sub=40, n_total=40)
        >>> round(float(rep.logdet), 4)  # 4 log(10.001)
        9.2107
    """
    n_total = n_sub if n_total is None else n_total
    m = gram_a.shape[-1]
    with x64():
        g = f64(gram_a)
        eye = jnp.eye(m, dtype=jnp.float64)
        beta = float(n_total - n_sub) * rho
        s = logdet_spd(g + delta * eye)
        upper = logdet_spd(g + (beta + delta) * eye)
        u_cov = s - m * math.log(n_sub)
        g_kf = upper - m * math.log(beta + delta)
        frac = 1.0 / n_sub - 1.0 / n_total
        if n_sub == n_total:
            sd_q = hw = bias = jnp.zeros((), jnp.float64)
        elif q_sums is None:
            sd_q = hw = bias = jnp.full((), jnp.nan, jnp.float64)
        else:
            sq, sq2 = f64(q_sums)[0], f64(q_sums)[1]
            mean_q = sq / n_sub
            var_q = jnp.maximum(sq2 - n_sub * mean_q**2, 0.0) / max(n_sub - 1, 1)
            sd_q = jnp.sqrt(var_q)
            hw = _z(level) * sd_q * math.sqrt(frac)
            bias = -0.5 * frac * (sq2 / n_sub - 2.0 * mean_q + m)
        c = lambda v, dt=jnp.float64: jnp.asarray(v, dt)  # noqa: E731
        return SigmaReport(
            logdet=s, u_cov=u_cov, g_kf=g_kf, lower=s, upper=upper, ci_halfwidth=hw, bias=bias, sd_q=sd_q,
            beta=c(beta), n_sub=c(n_sub, jnp.int32), n_total=c(n_total, jnp.int32), dim=c(m, jnp.int32),
            delta=c(delta), rho=c(rho), level=c(level),
        )


# --------------------------------------------------------------------------- argument handling


def resolve_subset(subset, n: int, key=None):
    """Turn ``subset`` (None | int n_A | indices) into an index array (or None for all rows).

    The same ``key`` and ``n`` give the same indices: use one key per run so every
    generation is measured on the same subset positions, as SIGMA prescribes.

    Example:
        >>> idx = resolve_subset(3, 10, jax.random.key(0))
        >>> idx.shape
        (3,)
    """
    if subset is None:
        return None
    if isinstance(subset, (int, np.integer)) and not isinstance(subset, bool):
        n_a = int(subset)
        if n_a <= 0:
            raise ValueError(f"`subset` must be a positive number of rows, got {n_a}.")
        if n_a > n:
            raise ValueError(f"`subset`={n_a} exceeds the number of rows n={n}; choose subset <= n.")
        if key is None:
            raise ValueError("`subset` given as a count needs `key` (e.g. `key=jax.random.key(0)`) to draw the rows; "
                             "reuse the same key every generation so the subset stays fixed.")
        if n_a == n:
            return None
        return jnp.sort(jax.random.choice(key, n, (n_a,), replace=False))
    idx = subset if not isinstance(subset, (list, tuple)) else np.asarray(subset)
    if not hasattr(idx, "dtype") or not np.issubdtype(np.dtype(idx.dtype), np.integer):
        raise TypeError(f"`subset` must be None, an int n_A, or a 1-D integer index array; got {type(subset).__name__}"
                        f"{' of dtype ' + str(idx.dtype) if hasattr(idx, 'dtype') else ''}.")
    if idx.ndim != 1 or idx.shape[0] == 0:
        raise ValueError(f"`subset` indices must be a non-empty 1-D array, got shape {tuple(idx.shape)}.")
    if _checks.is_concrete(idx):
        host = np.asarray(idx)
        if host.min() < 0 or host.max() >= n:
            raise ValueError(f"`subset` indices must lie in [0, {n}); got range [{host.min()}, {host.max()}].")
        if np.unique(host).size != host.size:
            raise ValueError("`subset` indices contain duplicates; SIGMA samples rows without replacement.")
    return idx


def _check_scalars(delta, rho, level):
    for name, v in (("delta", delta), ("rho", rho)):
        if not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v) or v <= 0:
            raise ValueError(f"`{name}` must be a positive finite Python float, got {v!r}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must lie in (0, 1), got {level}.")


@functools.partial(jax.jit, static_argnames=("n_total", "delta", "rho", "normalize", "level", "chunk_rows",
                                             "precision"))
def _sigma_rows(rows, *, n_total, delta, rho, normalize, level, chunk_rows, precision="float64"):
    n_sub = rows.shape[0]
    g = gram.gram_f64(rows, normalize=normalize, chunk_rows=chunk_rows, precision=precision)
    q_sums = None
    if n_sub < n_total:
        q_sums = q_moments(rows, g, delta=delta, normalize=normalize, chunk_rows=chunk_rows)
    return sigma_from_gram(g, n_sub=n_sub, n_total=n_total, delta=delta, rho=rho, q_sums=q_sums, level=level)


def sigma(embeddings, *, n_total: int | None = None, subset=None, delta: float = 1e-3, rho: float = 1.0,
          normalize: bool = True, key=None, ridge_only: bool = False, level: float = 0.95,
          chunk_rows: int = gram.DEFAULT_CHUNK_ROWS, validate: bool = True, precision: str = "float64",
          method: str = "exact", estimator_options: dict | None = None) -> SigmaReport:
    r"""The exact SIGMA report of a set of embeddings.

    Args:
        embeddings: (n, m) float array (any float dtype; numpy, ``np.memmap``, JAX,
            or a path to a ``.npy``/``.npz`` file).  Host arrays above 256 MiB are
            streamed to the device in chunks; the result is the same.
        n_total: the number of texts the embeddings were drawn from (default n).
        subset: None (all n rows), an int ``n_A`` (random rows drawn with ``key``),
            or explicit row indices.
        delta: ridge ``delta`` (Python float > 0).
        rho: bound on ``||v||^2`` (1 for normalised rows).
        normalize: L2-normalise rows first.
        key: PRNG key, needed when ``subset`` is a count.  Keep it fixed across
            generations so the observed positions stay the same.
        ridge_only: allow ``n_A <= m`` (``G_A`` is then singular and ``S`` is
            dominated by the ridge: only comparable across runs of equal ``n_A``).
        level: confidence level of the band (0.95 -> 1.96 sd).
        chunk_rows: rows per float64 block.
        validate: value checks on concrete inputs (NaN/Inf, zero rows, norms).
        precision: ``"float64"`` (default: products and sums in float64, accurate to
            ~1e-12 relative) or ``"mixed"`` (float32 products per chunk, float64
            sums: faster, accurate on healthy spectra but not on collapsed ones --
            measured in ``experiments/bench_sigma.py``).  Cholesky and the band are
            always float64; host arrays streamed in chunks (> 256 MiB) always use float64.
        method: ``"exact"`` (Cholesky of the m x m Gram, the paper's path), ``"stochastic"``
            (:func:`sigma_jax.estimators.sigma_stochastic`: deflated stochastic Lanczos
            quadrature through the Gram operator, never forming G; needs ``key``; returns a
            ``StochasticSigmaReport`` with the same fields plus ``stderr`` and cost counters),
            or ``"auto"``: stochastic when ``m >= estimators.AUTO_CROSSOVER_M`` (4096, the measured
            crossover on a 2-core CPU), all rows are observed (``n_A = n_total``: with a band the
            exact path was faster at every measured m) and a ``key`` is given; exact otherwise.
        estimator_options: keyword arguments for ``sigma_stochastic`` (probes, Lanczos steps,
            deflation, ...).

    Returns:
        :class:`SigmaReport`.

    All computation is float64 inside a local ``jax.enable_x64`` context; JAX's
    global flag is untouched.  Works under ``jit`` (``n_total``/``subset`` count,
    ``delta``, ``rho`` static) and ``vmap`` over a batch of embedding sets; value
    checks run only on concrete inputs.

    Example:
        >>> emb = jax.random.normal(jax.random.key(0), (2000, 16))
        >>> rep = sigma(emb, subset=500, key=jax.random.key(1))
        >>> float(rep.u_cov) < float(rep.upper)
        True
    """
    if isinstance(embeddings, (str, os.PathLike)):
        embeddings = gram.load_embeddings(embeddings)
    embeddings = _checks.check_float_array(embeddings, "embeddings")
    _check_scalars(delta, rho, level)
    if method not in ("exact", "stochastic", "auto"):
        raise ValueError(f"`method` must be 'exact', 'stochastic' or 'auto', got {method!r}.")
    if method != "exact":
        from sigma_jax import estimators

        m_dim = embeddings.shape[1]
        n_rows = embeddings.shape[0]
        n_sub_guess = n_rows if subset is None else (int(subset) if isinstance(subset, (int, np.integer))
                                                     else len(subset))
        full = n_sub_guess == (n_rows if n_total is None else int(n_total))
        use = method == "stochastic" or (key is not None and full and m_dim >= estimators.AUTO_CROSSOVER_M)
        if use:
            if key is None:
                raise ValueError("method='stochastic' needs `key` (e.g. `key=jax.random.key(0)`) for its probes.")
            return estimators.sigma_stochastic(key, embeddings, n_total=n_total, subset=subset, delta=delta, rho=rho,
                                               normalize=normalize, level=level, ridge_only=ridge_only,
                                               validate=validate, **(estimator_options or {}))
    if precision not in gram.PRECISIONS:
        raise ValueError(f"`precision` must be one of {gram.PRECISIONS}, got {precision!r}.")
    n, m = embeddings.shape
    n_total = n if n_total is None else int(n_total)
    if n_total < n:
        raise ValueError(f"`n_total`={n_total} is smaller than the number of rows n={n}; n_total counts all texts "
                         "the embeddings were drawn from (default n).")
    idx = resolve_subset(subset, n, key)
    n_sub = n if idx is None else int(idx.shape[0])
    if n_sub <= m and not ridge_only:
        raise ValueError(f"SIGMA needs more observed rows than dimensions (n_A={n_sub} <= m={m}): pass more rows or "
                         f"a larger `subset`, or opt in to the ridge-only regime with `ridge_only=True`.")
    concrete = _checks.is_concrete(embeddings)
    host = isinstance(embeddings, np.ndarray)
    if validate and concrete:
        rows_to_check = embeddings
        if idx is not None and host and _checks.is_concrete(idx):  # only the observed subset matters
            rows_to_check = embeddings[np.asarray(idx)]
        _checks.check_embeddings(rows_to_check, "embeddings", normalize=normalize, rho=rho)
    if host and embeddings.nbytes > _HOST_STREAM_BYTES:
        report = _sigma_host_stream(embeddings, idx, n_total=n_total, delta=delta, rho=rho, normalize=normalize,
                                    level=level, chunk_rows=chunk_rows)
    else:
        with x64():  # keeps float64 inputs float64; vmap batching of the inner jit re-traces it in the context
            rows = jnp.asarray(embeddings) if idx is None else jnp.asarray(embeddings)[jnp.asarray(idx)]
            report = _sigma_rows(rows, n_total=n_total, delta=float(delta), rho=float(rho), normalize=normalize,
                                 level=float(level), chunk_rows=chunk_rows, precision=precision)
    if validate and _checks.is_concrete(report.logdet) and not np.isfinite(float(report.logdet)):
        raise FloatingPointError(f"the Cholesky factorisation of G_A + delta*I failed (delta={delta}); "
                                 "increase `delta` or check the embeddings' scale.")
    return report


def _subset_blocks(array: np.ndarray, idx, chunk_rows: int):
    """Yield the subset rows of a host array block by block (sorted positions)."""
    if idx is None:
        for start in range(0, array.shape[0], chunk_rows):
            yield array[start:start + chunk_rows]
        return
    pos = np.sort(np.asarray(idx))
    for start in range(0, pos.size, chunk_rows):
        yield array[pos[start:start + chunk_rows]]


@functools.partial(jax.jit, static_argnames=("normalize",))
def _q_chunk_jit(rows, chol, n_sub, mask, normalize):
    return _q_chunk(rows, chol, n_sub, normalize, mask)


def _pad(block: np.ndarray, rows: int):
    c = block.shape[0]
    mask = np.zeros((rows,), np.float32)
    mask[:c] = 1
    if c < rows:
        block = np.concatenate([block, np.zeros((rows - c, block.shape[1]), block.dtype)])
    return jnp.asarray(block), jnp.asarray(mask)


def _sigma_host_stream(array, idx, *, n_total, delta, rho, normalize, level, chunk_rows):
    """Two passes over a host array: G_A, then the Mahalanobis moments for the band."""
    block_rows = max(chunk_rows, 1 << 15)
    state = gram.accumulate(_subset_blocks(array, idx, block_rows), dim=array.shape[1], normalize=normalize,
                            chunk_rows=block_rows, validate=False)
    g = gram.finalize(state)
    n_sub = int(state.count)
    q_sums = None
    if n_sub < n_total:
        with x64():
            chol = _inv_chol(g, delta)
            acc = jnp.zeros((2,), jnp.float64)
            for block in _subset_blocks(array, idx, block_rows):
                rows, mask = _pad(np.asarray(block), block_rows)
                acc = acc + _q_chunk_jit(rows, chol, n_sub, mask, normalize)
            q_sums = acc
    return sigma_from_gram(g, n_sub=n_sub, n_total=n_total, delta=delta, rho=rho, q_sums=q_sums, level=level)


# --------------------------------------------------------------------------- drift


def drift(reports: Sequence[SigmaReport] | SigmaReport, *, null_spread: float | None = None) -> Drift:
    """``dU`` and ``dG`` of each report relative to the first (eq. 3.20), with a band.

    Args:
        reports: a list of :class:`SigmaReport` (one per generation) or one stacked
            report with a leading generation axis (e.g. from ``jax.vmap``).
        null_spread: optional half-width of the re-sampling noise of generation 0
            (e.g. the spread of U_cov over re-samples with other keys).  The band is
            then the larger of it and the Theorem-3 band: the Theorem-3 band covers
            only the subsampling of n_A out of n_total rows.

    Example:
        >>> reps = [sigma(jax.random.normal(jax.random.key(i), (400, 8))) for i in range(3)]
        >>> drift(reps).dU.shape
        (3,)
    """
    if isinstance(reports, SigmaReport):
        stacked = reports
    else:
        reports = list(reports)
        if not reports:
            raise ValueError("`reports` is empty; pass one SigmaReport per generation.")
        with x64():
            stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *reports)
    with x64():
        u, gk, hw = f64(stacked.u_cov), f64(stacked.g_kf), f64(stacked.ci_halfwidth)
        if u.ndim != 1:
            raise ValueError(f"`reports` must stack to one generation axis, got u_cov of shape {u.shape}.")
        du, dg = u - u[0], gk - gk[0]
        band = jnp.sqrt(hw**2 + hw[0] ** 2)
        if null_spread is not None:
            band = jnp.maximum(band, float(null_spread))
        return Drift(du, dg, band, jnp.abs(du) > band)
