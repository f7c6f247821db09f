"""Data strategies as integer counts and per-item multiplicities, so one ``lax.scan`` serves every strategy.

The per-source counts are integers computed on the host (:func:`strategy_counts`).  Instead of gathering a
training set whose size changes with the generation (``accumulate`` grows), every source keeps its
``n_samples`` items and each item gets an integer *multiplicity*: ``counts // n`` copies plus one more for
the first ``counts % n`` items of a random permutation (subsampling without replacement, as in Kazdan et
al.'s accumulate-subsample).  A fit with these weights is exactly the fit on the gathered training set,
and every generation has the same array shapes, so one ``lax.scan`` compiles once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax.collapse.strategies import source_counts
from sigma_jax.collapse.toy._checks import _check_int

__all__ = ["strategy_counts"]


def strategy_counts(strategy, n_generations: int, n_samples: int) -> np.ndarray:
    """Host-side integer counts: row ``g`` = items model ``g + 1`` takes from sources ``0..g``.

    Every source has ``n_samples`` items (each synthetic set is as large as the real one), and the
    counts are :func:`~sigma_jax.collapse.strategies.source_counts` with its default totals
    (``n_samples`` for fixed-size strategies, the whole pool for ``accumulate``).

    Returns:
        (n_generations, n_generations) int32 array, zero above the diagonal.

    Example:
        >>> strategy_counts("accumulate-subsample", 3, 10).tolist()
        [[10, 0, 0], [5, 5, 0], [4, 3, 3]]
    """
    n_generations = _check_int(n_generations, "n_generations", 1)
    n_samples = _check_int(n_samples, "n_samples", 1)
    c = np.zeros((n_generations, n_generations), np.int32)
    for g in range(n_generations):
        c[g, : g + 1] = source_counts(strategy, g, [n_samples] * (g + 1))
    return c


def _needs_subsample(counts: np.ndarray, n: int) -> bool:
    return bool(np.any(counts % n))


def _selection_weights(key, counts, n: int, subsample: bool):
    """(S, n) multiplicities: ``counts[k] // n`` copies of every item of source k, plus one for the
    first ``counts[k] % n`` items of a random permutation (without replacement)."""
    base = (counts // n).astype(jnp.float32)
    w = jnp.broadcast_to(base[:, None], (counts.shape[0], n))
    if subsample:
        u = jax.random.uniform(key, (counts.shape[0], n))
        # the first (counts % n) items of a random permutation of each source
        order = jnp.argsort(u, axis=1)
        first = (jnp.arange(n)[None, :] < (counts % n)[:, None]).astype(jnp.float32)
        w = w + jax.vmap(lambda o, f: jnp.zeros((n,), jnp.float32).at[o].set(f))(order, first)
    return w
