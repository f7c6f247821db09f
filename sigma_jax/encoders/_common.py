"""Input checks shared by the built-in encoders (private; imports nothing of ours)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

__all__ = ["check_texts", "check_batch_size"]


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a non-empty list of str, or a ``TypeError``/``ValueError`` naming the bad item and the fix."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            "`texts` must be a list of strings, got a single "
            f"{type(texts).__name__}; wrap it: `encode([text])`."
        )
    if not isinstance(texts, Iterable):
        raise TypeError(f"`texts` must be a list of strings, got {type(texts).__name__}.")
    texts = list(texts)
    if not texts:
        raise ValueError("`texts` is empty; pass at least one string.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        i = bad[0]
        raise TypeError(
            f"`texts` must contain only str; item {i} is {type(texts[i]).__name__} ({texts[i]!r:.40})"
            + (f" and {len(bad) - 1} more item(s) are not str" if len(bad) > 1 else "")
            + ". Decode bytes with `.decode('utf-8')` or convert with `str(...)`."
        )
    return texts


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as a positive int, or a ``ValueError`` naming it."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    return int(batch_size)
