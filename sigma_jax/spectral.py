r"""Functions of a spectrum, with the conventions of ``docs/metric-conventions.md`` as explicit arguments.

Every metric accepts either **eigenvalues** (1-D, those of ``G = A^T A`` or of
``G/n`` -- scale-free metrics do not care) or **embeddings** (2-D (n, m); the
eigenvalues of their Gram matrix are then computed in float64 with the
``normalize`` / ``center`` options of :func:`eigenvalues`).

=============================  ==========================================================
metric                         definition (``lambda`` eigenvalues, ``s = sqrt(lambda)``)
=============================  ==========================================================
``logdet``                     ``sum log(lambda_i + delta)``
``spectral_entropy``           ``H = -sum p_i log p_i``, ``p = lambda / sum lambda``
``effective_rank`` eigenvalue  ``exp(H)`` (Vendi / von Neumann)
``effective_rank`` singular    RankMe: ``p_k = s_k / sum s + eps``, ``exp(-sum p log p)``
``participation_ratio``        ``(sum lambda)^2 / sum lambda^2``
``stable_rank``                ``sum lambda / max lambda``
``alpha_req``                  ``-slope`` of ``log lambda_i`` vs ``log i`` (least squares)
``condition_number``           ``(lambda_max + delta) / (lambda_min + delta)``
``vendi_score``                ``exp(H_q)`` of the eigenvalues of ``K/n``, ``K`` a kernel with ``K_ii = 1``
=============================  ==========================================================

All results are float64 scalars computed under a local x64 context.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sigma_jax import _checks, gram
from sigma_jax._linalg import mm as _mm
from sigma_jax._x64 import f64, x64

__all__ = [
    "Spectra",
    "spectra",
    "eigenvalues",
    "logdet",
    "spectral_entropy",
    "effective_rank",
    "participation_ratio",
    "stable_rank",
    "alpha_req",
    "condition_number",
    "vendi_score",
    "vendi_score_from_spectrum",
    "vendi_score_from_kernel",
]


def eigenvalues(embeddings, *, normalize: bool = True, center: bool = False, scale: str = "sum"):
    """Eigenvalues of the (m x m) Gram matrix of ``embeddings``, float64, descending, clipped at 0.

    Args:
        embeddings: (n, m) array.
        normalize: L2-normalise rows first.
        center: subtract the mean (normalised) row: the covariance spectrum rather than
            the uncentred second moment.  The uncentred spectrum is dominated by the mean
            direction when embeddings share one; say which you report.
        scale: ``"sum"`` for ``G = A^T A`` or ``"mean"`` for ``G / n``.

    When ``n < m`` the (n x n) sample Gram is diagonalised instead (same nonzero
    spectrum) and the result is padded with zeros to length m.

    Example:
        >>> eigenvalues(jnp.eye(3)).tolist()
        [1.0, 1.0, 1.0]
    """
    x = _checks.check_float_array(embeddings, "embeddings")
    if scale not in ("sum", "mean"):
        raise ValueError(f"`scale` must be 'sum' (A^T A) or 'mean' (A^T A / n), got {scale!r}.")
    n, m = x.shape
    with x64():
        a = f64(x)
        if normalize:
            a = a * gram._row_scale(a, True)[:, None]
        if center:
            a = a - jnp.mean(a, axis=0, keepdims=True)
        g = _mm(a, a.T) if n < m else _mm(a.T, a)
        lam = jnp.linalg.eigvalsh(g)[::-1]
        lam = jnp.maximum(lam, jnp.zeros((), lam.dtype))
        if n < m:
            lam = jnp.concatenate([lam, jnp.zeros((m - n,), lam.dtype)])
        if scale == "mean":
            lam = lam / n
        return lam


class Spectra(NamedTuple):
    """Both spectra of one embedding set from one pass over its rows (see :func:`spectra`).

    Attributes:
        uncentred: (m,) eigenvalues of ``G = A^T A`` (rows L2-normalised when asked), descending.
        centred: (m,) eigenvalues of ``sum_j (v_j - mu)(v_j - mu)^T``, descending.
        gram: (m, m) float64 ``G`` (for bounds and SIGMA on all rows).
        mean: (m,) the mean row ``mu``.
        n: number of rows.
    """

    uncentred: jax.Array
    centred: jax.Array
    gram: jax.Array
    mean: jax.Array
    n: int


def spectra(embeddings, *, normalize: bool = True, chunk_rows: int = gram.DEFAULT_CHUNK_ROWS) -> Spectra:
    """The spectrum stage: uncentred and centred eigenvalues from one float64 pass (Gram and row sum).

    Compute it once per embedding set and hand the 1-D spectra to every metric
    (``effective_rank(sp.centred)``, ...).  The centred Gram is ``G - n mu mu^T``.

    Example:
        >>> sp = spectra(jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
        >>> sp.uncentred.tolist(), sp.centred.tolist()
        ([2.0, 2.0], [2.0, 0.0])
    """
    x = _checks.check_float_array(embeddings, "embeddings")
    n = x.shape[0]
    g = gram.gram_f64(x, normalize=normalize, chunk_rows=chunk_rows)
    with x64():
        total = gram.chunked_sum((x,), chunk_rows, lambda b: jnp.sum(gram.normalized_rows64(b, normalize), axis=0))
        mu = total / n
        gc = g - n * jnp.outer(mu, mu)
        gc = 0.5 * (gc + gc.T)
        lam = jnp.maximum(jnp.linalg.eigvalsh(g)[::-1], 0.0)
        lamc = jnp.maximum(jnp.linalg.eigvalsh(gc)[::-1], 0.0)
    return Spectra(lam, lamc, g, mu, n)


def _eigs(x, normalize, center, *, default_normalize: bool = True):
    """Eigenvalues from a 1-D spectrum (as given) or 2-D embeddings (computed).

    ``normalize`` / ``center`` are options of *embeddings*; passing either with a 1-D spectrum is
    an error (they would otherwise be silently ignored).  ``None`` means the default:
    ``default_normalize`` and no centring.
    """
    if isinstance(x, (list, tuple)):
        x = jnp.asarray(x)
    x = _checks.check_float_array(x, "x", ndim=(1, 2))
    if x.ndim == 2:
        return eigenvalues(x, normalize=default_normalize if normalize is None else bool(normalize),
                           center=bool(center))
    given = [name for name, v in (("normalize", normalize), ("center", center)) if v is not None]
    if given:
        raise ValueError(f"`{'`, `'.join(given)}` apply to embeddings, but `x` is a 1-D spectrum (eigenvalues). "
                         "Compute the spectrum with those options instead: "
                         "`spectral.eigenvalues(emb, normalize=..., center=...)` or `spectral.spectra(emb)`.")
    if _checks.is_concrete(x):
        import numpy as np

        v = np.asarray(x, np.float64)
        if not np.isfinite(v).all():
            raise ValueError("eigenvalues `x` contain NaN or Inf; pass a finite spectrum.")
        if (v < -1e-12 * max(1.0, np.abs(v).max())).any():
            raise ValueError(f"eigenvalues `x` must be >= 0 (a PSD spectrum); the smallest is {v.min():.3g}.")
    with x64():
        v = f64(x)
        return jnp.maximum(v, jnp.zeros((), v.dtype))


def _probs(lam):
    total = jnp.sum(lam)
    return lam / jnp.where(total > 0, total, jnp.ones((), lam.dtype))


def _xlogx(p):
    safe = jnp.where(p > 0, p, jnp.ones((), p.dtype))
    return jnp.where(p > 0, p * jnp.log(safe), jnp.zeros((), p.dtype))


def logdet(x, *, delta: float = 0.0, normalize: bool | None = None, center: bool | None = None):
    """``sum_i log(lambda_i + delta)`` (SIGMA's log-det when lambda are those of ``G_A``).

    Example:
        >>> float(logdet(jnp.array([1.0, 2.0])))  # log 2
        0.6931471805599453
    """
    lam = _eigs(x, normalize, center)
    with x64():
        return jnp.sum(jnp.log(lam + delta))


def spectral_entropy(x, *, normalize: bool | None = None, center: bool | None = None, normalized: bool = False):
    """Von Neumann entropy ``H = -sum p_i log p_i``, ``p = lambda / sum lambda`` (nats).

    ``normalized=True`` divides by ``log(d)`` (d = number of eigenvalues), giving a value in [0, 1].

    Example:
        >>> round(float(spectral_entropy(jnp.ones(4))), 6)  # log 4
        1.386294
    """
    lam = _eigs(x, normalize, center)
    with x64():
        h = -jnp.sum(_xlogx(_probs(lam)))
        return h / math.log(lam.shape[0]) if normalized and lam.shape[0] > 1 else h


def effective_rank(x, *, convention: str = "eigenvalue", eps: float = 1e-7, normalize: bool | None = None,
                   center: bool | None = None):
    """Effective rank.

    Args:
        convention: ``"eigenvalue"``: ``exp(H)`` of ``p = lambda / sum lambda`` (Vendi /
            von Neumann); ``"singular"``: RankMe (Garrido et al. 2023; Roy & Vetterli 2007),
            ``p_k = s_k / sum s + eps`` with ``s = sqrt(lambda)`` the singular values of A.
        eps: RankMe's epsilon (singular convention only).
        normalize, center: options for 2-D embeddings (an error with a 1-D spectrum).  By default
            rows are L2-normalised for the eigenvalue convention (SIGMA's / Vendi's cosine geometry)
            and *not* for the singular convention, so that it reproduces RankMe on the same input.

    Example:
        >>> float(effective_rank(jnp.ones(5)))
        5.000000000000001
    """
    if convention not in ("eigenvalue", "singular"):
        raise ValueError(f"`convention` must be 'eigenvalue' or 'singular', got {convention!r}.")
    # RankMe (Garrido et al.) takes the singular values of the raw embedding matrix: no row normalisation
    lam = _eigs(x, normalize, center, default_normalize=convention == "eigenvalue")
    with x64():
        if convention == "eigenvalue":
            return jnp.exp(-jnp.sum(_xlogx(_probs(lam))))
        if convention == "singular":
            s = jnp.sqrt(lam)
            p = _probs(s) + eps
            return jnp.exp(-jnp.sum(p * jnp.log(p)))
    raise ValueError(f"`convention` must be 'eigenvalue' or 'singular', got {convention!r}.")


def participation_ratio(x, *, normalize: bool | None = None, center: bool | None = None):
    """``(sum lambda)^2 / sum lambda^2``.

    Example:
        >>> float(participation_ratio(jnp.array([1.0, 1.0, 0.0])))
        2.0
    """
    lam = _eigs(x, normalize, center)
    with x64():
        return jnp.sum(lam) ** 2 / jnp.sum(lam**2)


def stable_rank(x, *, normalize: bool | None = None, center: bool | None = None):
    """``sum lambda / max lambda = ||A||_F^2 / ||A||_2^2``.

    Example:
        >>> float(stable_rank(jnp.array([2.0, 1.0, 1.0])))
        2.0
    """
    lam = _eigs(x, normalize, center)
    with x64():
        return jnp.sum(lam) / jnp.max(lam)


def condition_number(x, *, delta: float = 0.0, normalize: bool | None = None, center: bool | None = None):
    """``(lambda_max + delta) / (lambda_min + delta)`` (inf for a singular spectrum with delta = 0).

    Example:
        >>> float(condition_number(jnp.array([4.0, 1.0])))
        4.0
    """
    lam = _eigs(x, normalize, center)
    with x64():
        return (jnp.max(lam) + delta) / (jnp.min(lam) + delta)


def alpha_req(x, *, start: int = 1, stop: int | None = None, normalize: bool | None = None, center: bool | None = None):
    """alpha-ReQ decay exponent: least-squares slope of ``log lambda_i`` on ``log i``, negated.

    Fits ranks ``i = start..stop`` (1-based, inclusive; default all) of the
    descending spectrum; eigenvalues that are exactly 0 are excluded from the fit.
    ``lambda_i ~ i^{-alpha}`` gives ``alpha``.

    Example:
        >>> round(float(alpha_req(jnp.arange(1, 51.0) ** -1.5)), 6)
        1.5
    """
    lam = _eigs(x, normalize, center)
    d = lam.shape[0]
    stop = d if stop is None else min(int(stop), d)
    if not 1 <= start < stop:
        raise ValueError(f"need 1 <= start < stop <= {d} to fit a slope, got start={start}, stop={stop}.")
    with x64():
        lam = jnp.sort(lam)[::-1][start - 1:stop]
        ranks = jnp.arange(start, stop + 1, dtype=jnp.float64)
        w = (lam > 0).astype(jnp.float64)
        lx = jnp.log(ranks)
        ly = jnp.log(jnp.where(lam > 0, lam, jnp.ones((), lam.dtype)))
        sw = jnp.sum(w)
        mx, my = jnp.sum(w * lx) / sw, jnp.sum(w * ly) / sw
        slope = jnp.sum(w * (lx - mx) * (ly - my)) / jnp.sum(w * (lx - mx) ** 2)
        return -slope


def _hill(p, q: float):
    """Hill number of order q of a probability vector."""
    if q == 1.0:
        return jnp.exp(-jnp.sum(_xlogx(p)))
    if math.isinf(q):
        return 1.0 / jnp.max(p)
    if q == 0.0:
        return jnp.sum((p > 1e-12).astype(p.dtype))
    safe = jnp.where(p > 0, p, jnp.zeros((), p.dtype))
    return jnp.exp(jnp.log(jnp.sum(safe**q)) / (1.0 - q))


def vendi_score_from_kernel(kernel, *, q: float = 1.0):
    """Vendi score of order q from an (n, n) similarity matrix with unit diagonal.

    ``VS_q = exp(log(sum p^q) / (1 - q))`` with ``p`` the eigenvalues of ``K / n``
    (q = 1: ``exp(H)``; q = inf: ``1 / max p``).  Friedman & Dieng (2023).

    Example (the vendi-score README's example, ~3.0):
        >>> s = jnp.array([0., 0., 10., 10., 20., 20.])
        >>> round(float(vendi_score_from_kernel(jnp.exp(-jnp.abs(s[:, None] - s[None, :])))), 2)
        3.0
    """
    k = _checks.check_float_array(kernel, "kernel")
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"`kernel` must be square (n, n), got {tuple(k.shape)}.")
    with x64():
        kk = f64(k)
        lam = jnp.linalg.eigvalsh(kk / kk.shape[0])
        # eigenvalues below the numerical rank threshold are rounding noise (|noise| ~ n eps lambda_max);
        # they would otherwise dominate orders q < 1 (p^q of 1e-17 is 3e-9 at q = 1/2)
        cut = kk.shape[0] * jnp.finfo(jnp.float64).eps * jnp.max(lam)
        return _hill(_probs(jnp.where(lam > cut, lam, jnp.zeros((), lam.dtype))), float(q))


def vendi_score_from_spectrum(eigenvalues_of_gram, *, q: float = 1.0):
    """Vendi score of order q from the eigenvalues of ``G = A^T A`` with L2-normalised rows.

    The cosine kernel ``K = A A^T`` has the same nonzero eigenvalues as ``G``; with unit rows
    ``tr K = n``, so ``p = lambda / sum lambda`` are the eigenvalues of ``K / n``.

    Example:
        >>> round(float(vendi_score_from_spectrum(jnp.ones(4))), 6)
        4.0
    """
    lam = _eigs(eigenvalues_of_gram, None, None)
    with x64():
        return _hill(_probs(lam), float(q))


def vendi_score(embeddings, *, q: float = 1.0, center: bool = False):
    """Vendi score with the cosine kernel ``K_ij = <v_i, v_j> / (||v_i|| ||v_j||)``.

    The nonzero eigenvalues of ``K / n`` equal those of ``G / n`` with normalised rows,
    so the m x m Gram is diagonalised (cheap for n >> m).

    Example:
        >>> round(float(vendi_score(jnp.eye(4))), 6)
        4.0
    """
    lam = eigenvalues(embeddings, normalize=True, center=center, scale="mean")
    with x64():
        return _hill(_probs(lam), float(q))
