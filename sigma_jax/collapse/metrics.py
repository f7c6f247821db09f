"""Text-side metrics of a generation (pure NumPy: readers of a run import this, not the model code).

* :func:`lexical_stats` -- word distinct-n, unigram entropy, newlines and characters per text.
* :func:`nll_summary` -- per-text NLL under the generation-0 model (bits/char): mean, quantiles and a
  histogram on :data:`NLL_BINS` (Shumailov et al.'s tails: the high-NLL tail thins as a chain collapses).

Example:
    >>> lexical_stats(["the cat sat"])["distinct_1"]
    1.0
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

__all__ = ["NLL_BINS", "lexical_stats", "nll_summary"]

#: Histogram bin edges of per-text NLL (bits/char); the last bin is open-ended.
NLL_BINS = tuple(np.round(np.arange(0.0, 8.01, 0.25), 2).tolist())


def lexical_stats(texts: Sequence[str]) -> dict:
    """Word-level distinct-n (unique / total n-grams pooled over texts, n = 1..3), word
    unigram entropy (bits), mean newlines and characters per text.

    Example:
        >>> s = lexical_stats(["the cat sat", "the cat ran"])
        >>> round(s["distinct_1"], 4), s["distinct_2"], s["distinct_3"], s["chars_per_text"]
        (0.6667, 0.75, 1.0, 11.0)
    """
    out = {}
    words = [t.split() for t in texts]
    for n in (1, 2, 3):
        grams = [tuple(w[i:i + n]) for w in words for i in range(len(w) - n + 1)]
        out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    c = Counter(x for w in words for x in w)
    tot = sum(c.values())
    p = np.array(list(c.values()), np.float64) / max(tot, 1)
    out["unigram_entropy_bits"] = float(-(p * np.log2(p)).sum()) if tot else 0.0
    out["newlines_per_text"] = float(np.mean([t.count("\n") for t in texts])) if len(texts) else 0.0
    out["chars_per_text"] = float(np.mean([len(t) for t in texts])) if len(texts) else 0.0
    return out


def nll_summary(nll_bits) -> dict:
    """Mean, p50 / p90 / p99 and the :data:`NLL_BINS` histogram of per-text NLL (bits/char).

    Example:
        >>> s = nll_summary(np.array([1.0, 2.0, 3.0, 9.0]))
        >>> s["mean"], s["p50"], sum(s["hist"]), s["hist"][-1]        # 9 bits lands in the open last bin
        (3.75, 2.5, 4, 1)
    """
    nll = np.asarray(nll_bits, np.float64).ravel()
    if nll.size == 0 or not np.isfinite(nll).all():
        raise ValueError(f"`nll_bits` must be a non-empty finite array, got {nll.size} values.")
    hist, _ = np.histogram(np.minimum(nll, NLL_BINS[-1] - 1e-9), bins=np.asarray(NLL_BINS))
    return {"mean": float(nll.mean()), "p50": float(np.quantile(nll, 0.5)), "p90": float(np.quantile(nll, 0.9)),
            "p99": float(np.quantile(nll, 0.99)), "hist": hist.astype(int).tolist()}
