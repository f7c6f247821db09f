"""Input validation with errors that name the argument and the fix.

Checks on *values* (NaN, zero rows, norms) need concrete arrays; under
``jit``/``vmap`` tracing only shape and dtype checks run (documented in each
public function).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["is_concrete", "check_embeddings", "check_float_array", "describe_rows"]


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def describe_rows(rows: np.ndarray, limit: int = 5) -> str:
    rows = np.asarray(rows).ravel()
    head = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" and {rows.size - limit} more" if rows.size > limit else ""
    return f"row(s) {head}{more}"


def check_float_array(x: Any, name: str, *, ndim: int | tuple[int, ...] = 2):
    """Reject non-arrays, integer/bool/complex dtypes, wrong rank and empty input.

    Returns ``x`` as an array (``np.ndarray`` / ``np.memmap`` kept as they are,
    JAX arrays and tracers untouched).
    """
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"`{name}` must be an array, got {type(x).__name__}.")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    dtype = np.dtype(x.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):  # includes bfloat16
        raise TypeError(
            f"`{name}` must have a real floating dtype (float16/bfloat16/float32/float64), got "
            f"{dtype}. Convert it first, e.g. `{name}.astype(np.float32)`."
        )
    if x.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        hint = ""
        if 2 in ndims and x.ndim == 1:
            hint = f" For a single vector use `{name}[None, :]`; for n scalars use `{name}[:, None]`."
        if 2 in ndims and x.ndim == 3:
            hint = f" For a batch of embedding sets use `jax.vmap` over the leading axis, or reshape to (n, m)."
        raise ValueError(f"`{name}` must be {want} with shape (n, m), got shape {tuple(x.shape)}.{hint}")
    if any(s == 0 for s in x.shape):
        raise ValueError(f"`{name}` is empty (shape {tuple(x.shape)}); pass at least one row and one column.")
    return x


def check_embeddings(x: Any, name: str = "embeddings", *, normalize: bool = True, rho: float = 1.0,
                     chunk_rows: int = 1 << 16, offset: int = 0) -> None:
    """Value checks on a concrete (n, m) array: finite, nonzero rows, norm bound.

    Streams over ``chunk_rows`` rows at a time so memory-mapped inputs are not
    loaded whole.  ``offset`` is added to reported row numbers (for blocks of a stream).
    """
    n = x.shape[0]
    for start in range(0, n, chunk_rows):
        base = start + offset
        block = np.asarray(x[start:start + chunk_rows], dtype=np.float64)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            raise ValueError(
                f"`{name}` has NaN or Inf values in {describe_rows(base + np.flatnonzero(bad))}. "
                f"Drop or repair those rows (e.g. `{name}[np.isfinite({name}).all(axis=1)]`)."
            )
        sq = np.einsum("ij,ij->i", block, block)
        if normalize:
            zero = sq == 0.0
            if zero.any():
                raise ValueError(
                    f"`{name}` has zero-norm {describe_rows(base + np.flatnonzero(zero))}, which cannot be "
                    f"L2-normalised. Remove them (e.g. `{name}[np.linalg.norm({name}, axis=1) > 0]`)."
                )
        else:
            tol = rho * (1.0 + 1e-5)
            over = sq > tol
            if over.any():
                i = int(np.flatnonzero(over)[0])
                raise ValueError(
                    f"`{name}` has rows with squared norm above rho={rho} ({describe_rows(base + np.flatnonzero(over))};"
                    f" row {base + i} has {sq[i]:.6g}). SIGMA's bounds need ||v||^2 <= rho: pass "
                    f"`normalize=True`, or a larger `rho`."
                )
