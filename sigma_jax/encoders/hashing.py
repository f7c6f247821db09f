"""A cheap, deterministic, dependency-free text encoder for tests and smoke runs — NOT semantic.

:class:`HashingEncoder` maps a text to signed counts of its character n-grams, hashed into
``dim`` buckets (the "hashing trick"), then L2-normalised:

.. math::

    e_j = \\sum_{g \\in \\mathrm{ngrams}(t)} s(g)\\,[h(g) \\bmod m = j], \\qquad
    \\hat e = e / \\max(\\lVert e \\rVert_2, 10^{-12}),

with ``h``/``s`` the first 8 bytes of BLAKE2b of the n-gram's UTF-8 (bucket and sign), so
embeddings are identical on every machine, Python version and process (Python's ``hash``
is salted per process and is not used).  The text is wrapped in ``<`` ``>`` so every text,
the empty one included, has n-grams.  Two texts have a large cosine when they share many
character n-grams; paraphrases with different words do not.  Use it to exercise pipelines
quickly without model weights; use MiniLM (``get_encoder("minilm")``) for SIGMA numbers
that mean anything about text semantics.

Example::

    from sigma_jax.encoders import get_encoder
    enc = get_encoder("hashing", dim=128)
    E = enc.encode(["a text", "another"])      # (2, 128) float32, unit rows
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from sigma_jax import _io
from sigma_jax.encoders._common import check_batch_size, check_texts

__all__ = ["HashingEncoder"]

_VERSION = 1  # bump when the mapping text -> vector changes


class HashingEncoder:
    """Hashed character n-gram counts, L2-normalised: (n texts) -> (n, dim) float32. Not semantic.

    Args:
        dim: embedding dimension m (number of hash buckets), >= 2.
        ngram_range: (min, max) n-gram lengths in characters, 1 <= min <= max <= 16.
        lowercase: lower-case texts before taking n-grams.

    Example:
        >>> enc = HashingEncoder(dim=64, ngram_range=(2, 3))
        >>> E = enc.encode(["the cat sat", "the cat sat", "zzzz"])
        >>> E.shape, E.dtype, bool(np.allclose(np.linalg.norm(E, axis=1), 1))
        ((3, 64), dtype('float32'), True)
        >>> bool(np.array_equal(E[0], E[1])), bool(E[0] @ E[0] > E[0] @ E[2])
        (True, True)
        >>> enc.encoder_config()["semantic"]
        False
    """

    name = "hashing"

    def __init__(self, dim: int = 384, ngram_range: tuple[int, int] = (1, 4), lowercase: bool = True):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
            raise ValueError(f"`dim` must be an int >= 2, got {dim!r}.")
        try:
            lo, hi = (int(v) for v in ngram_range)
        except (TypeError, ValueError):
            raise ValueError(f"`ngram_range` must be a pair (min, max) of ints, got {ngram_range!r}.") from None
        if not 1 <= lo <= hi <= 16:
            raise ValueError(f"`ngram_range` must satisfy 1 <= min <= max <= 16, got {ngram_range!r}.")
        if not isinstance(lowercase, bool):
            raise TypeError(f"`lowercase` must be a bool, got {type(lowercase).__name__}.")
        self._dim = int(dim)
        self.ngram_range = (lo, hi)
        self.lowercase = lowercase

    @property
    def dim(self) -> int:
        """Embedding dimension m."""
        return self._dim

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> float32 (n, dim) with unit L2 rows, in the order given.

        ``batch_size`` only sets how often the progress bar updates (results do not depend on it).
        """
        texts = check_texts(texts)
        batch_size = check_batch_size(batch_size)
        lo, hi = self.ngram_range
        out = np.zeros((len(texts), self._dim), dtype=np.float64)
        memo: dict[str, tuple[int, float]] = {}
        bar = _io.progress_bar(progress, total=len(texts), desc=f"encode ({self.name})", unit="text")
        for i, text in enumerate(texts):
            t = "<" + (text.lower() if self.lowercase else text) + ">"
            row = out[i]
            for n in range(lo, min(hi, len(t)) + 1):
                for s in range(len(t) - n + 1):
                    g = t[s : s + n]
                    hit = memo.get(g)
                    if hit is None:
                        h = int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest(), "little")
                        hit = memo[g] = (h % self._dim, 1.0 if (h >> 63) & 1 else -1.0)
                    row[hit[0]] += hit[1]
            if bar is not None and ((i + 1) % batch_size == 0 or i + 1 == len(texts)):
                bar.update((i % batch_size) + 1)
        if bar is not None:
            bar.close()
        norms = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return (out / norms).astype(np.float32)

    def encoder_config(self) -> dict[str, Any]:
        """JSON-ready description: every setting that changes the numbers, and ``semantic: False``."""
        return {
            "kind": "hashing",
            "name": self.name,
            "dim": self._dim,
            "ngram_range": list(self.ngram_range),
            "lowercase": self.lowercase,
            "hash": "blake2b-64, bucket = h mod dim, sign = top bit",
            "normalize": True,
            "semantic": False,
            "version": _VERSION,
        }

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self._dim}, ngram_range={self.ngram_range}, lowercase={self.lowercase})"
