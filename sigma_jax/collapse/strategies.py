"""Which data generation g trains on: one definition shared by the toy chains and the LM loop.

Sources are indexed ``0 = real data`` and ``k = synthetic data produced by the
generation-(k-1) model`` for ``k = 1..g``.  Generation 0 always trains on real
data.  For generation ``g >= 1`` a strategy gives the *fraction of the training
set* drawn from each source:

=====================  ==============================================================
``replace``            only the newest synthetic set (source g).
``accumulate``         real + every synthetic set so far; ``weighting="size"`` draws in
                       proportion to each set's size (the pooled data set of
                       Gerstgrasser et al.), ``weighting="equal"`` gives each source
                       1/(g+1) (the real fraction then falls as 1/(g+1)).
``mix``                a fixed fraction ``real_fraction`` of real data (default 10%,
                       Shumailov et al.'s second setting), the rest from source g.
``accumulate-subsample`` the pool of ``accumulate`` (size-weighted) but a training set of
                       fixed size (that of the real set), drawn without replacement
                       (Kazdan et al.).
``control``            real data only, of the same size as ``replace``'s training set:
                       the recursion switched off.  The LM pipeline gives every
                       generation a *fresh*, disjoint real set (see
                       :func:`sigma_jax.collapse.data.real_sets`); where the real source
                       is one fixed sample (the toy chains) control refits on it.
=====================  ==============================================================

The training set size is the caller's: ``replace``/``control``/``mix``/``accumulate-subsample``
keep it fixed; ``accumulate`` uses the whole pool (``source_counts`` with
``total=None``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["STRATEGIES", "Strategy", "source_weights", "source_counts"]

STRATEGIES = ("replace", "accumulate", "mix", "accumulate-subsample", "control")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A data strategy.  ``Strategy.parse("mix:0.2")`` is a shorthand for ``Strategy("mix", real_fraction=0.2)``."""

    name: str = "replace"
    real_fraction: float = 0.1
    weighting: str = "size"

    def __post_init__(self):
        if self.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.name!r}; choose one of {STRATEGIES}.")
        if not 0.0 <= self.real_fraction <= 1.0:
            raise ValueError(f"`real_fraction` must lie in [0, 1], got {self.real_fraction}.")
        if self.weighting not in ("size", "equal"):
            raise ValueError(f"`weighting` must be 'size' or 'equal', got {self.weighting!r}.")

    @classmethod
    def parse(cls, spec: "str | Strategy") -> "Strategy":
        if isinstance(spec, Strategy):
            return spec
        name, _, arg = str(spec).partition(":")
        if name == "mix" and arg:
            return cls("mix", real_fraction=float(arg))
        if name == "accumulate" and arg:
            return cls("accumulate", weighting=arg)
        return cls(name)

    @property
    def fixed_size(self) -> bool:
        """True when the training set keeps the real set's size every generation."""
        return self.name != "accumulate"


def source_weights(strategy: "str | Strategy", generation: int, sizes: Sequence[int] | None = None) -> np.ndarray:
    """Fractions of generation ``generation``'s training set drawn from sources 0..generation.

    Args:
        strategy: a :class:`Strategy` or its name.
        generation: g >= 0.  Generation 0 trains on real data only.
        sizes: sizes of sources 0..g (needed for size weighting; default all equal).

    Returns:
        (g + 1,) float64 weights summing to 1.

    Example:
        >>> source_weights("mix", 3).round(2).tolist()
        [0.1, 0.0, 0.0, 0.9]
        >>> source_weights("control", 2).tolist()      # the recursion switched off: real data only
        [1.0, 0.0, 0.0]
    """
    s = Strategy.parse(strategy)
    g = int(generation)
    if g < 0:
        raise ValueError(f"`generation` must be >= 0, got {generation}.")
    w = np.zeros(g + 1)
    if g == 0:
        w[0] = 1.0
        return w
    if s.name == "replace":
        w[g] = 1.0
    elif s.name == "control":
        w[0] = 1.0
    elif s.name == "mix":
        w[0] = s.real_fraction
        w[g] = 1.0 - s.real_fraction
    else:
        sz = np.ones(g + 1) if sizes is None else np.asarray(sizes, np.float64)
        if sz.shape != (g + 1,):
            raise ValueError(f"`sizes` must have {g + 1} entries (sources 0..{g}), got {sz.shape}.")
        if s.name == "accumulate" and s.weighting == "equal":
            w[:] = 1.0 / (g + 1)
        else:
            w = sz / sz.sum()
    return w


def source_counts(strategy: "str | Strategy", generation: int, sizes: Sequence[int], total: int | None = None) -> np.ndarray:
    """Integer number of training items taken from each source (largest-remainder rounding).

    ``total`` defaults to ``sizes[0]`` (the real set's size) for fixed-size
    strategies and to the whole pool for ``accumulate``.  No source is asked
    for more items than it has unless the weights require it (then items are
    reused, which the caller samples with replacement).

    Example:
        >>> source_counts("accumulate-subsample", 2, [100, 100, 100]).tolist()
        [34, 33, 33]
    """
    s = Strategy.parse(strategy)
    sizes = np.asarray(sizes, np.int64)
    if total is None:
        total = int(sizes[: generation + 1].sum()) if (s.name == "accumulate" and generation > 0) else int(sizes[0])
    w = source_weights(s, generation, sizes[: generation + 1])
    raw = w * total
    counts = np.floor(raw).astype(np.int64)
    short = total - counts.sum()
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:short]] += 1
    return counts
