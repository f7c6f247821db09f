"""Float64 arithmetic without touching JAX's global ``jax_enable_x64`` flag.

SIGMA's log-determinants need float64 (collapsed Gram matrices have eigenvalues
near the ridge ``delta`` while their trace is ``n``), but flipping the global
flag would change every array in the user's program.  Instead every library
function that needs float64 enters the thread-local context
``jax.enable_x64(True)`` for its own body.  This works eagerly, under ``jit``
and under ``vmap``: the dtype of each traced op is fixed when it is traced.

Two consequences the rest of the package is built around:

* a float64 array that crosses a ``jit`` boundary *outside* such a context is
  truncated to float32.  Long-lived state (streaming Gram accumulators, the
  training-loop monitor) is therefore stored as a float32 pair ``(hi, lo)``
  with ``hi + lo`` carrying ~48 significant bits (:func:`split` / :func:`join`);
* reverse-mode autodiff transposes outside the context, so functions meant to
  be differentiated carry a ``custom_vjp`` whose rules enter it again.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

__all__ = ["x64", "split", "join", "f64"]


def x64() -> contextlib.AbstractContextManager:
    """Context manager in which JAX creates float64 arrays."""
    return jax.enable_x64(True)


def f64(x):
    """Cast to float64.  Call inside :func:`x64`."""
    return jnp.asarray(x).astype(jnp.float64)


def split(x):
    """Split a float64 array into float32 ``(hi, lo)`` with ``hi + lo ~= x``.

    ``hi = f32(x)`` and ``lo = f32(x - hi)``; the pair keeps about 48 mantissa
    bits (relative error ~4e-15), enough for Gram accumulators over 10^9 rows.
    Call inside :func:`x64`.
    """
    x = f64(x)
    hi = x.astype(jnp.float32)
    lo = (x - hi.astype(jnp.float64)).astype(jnp.float32)
    return hi, lo


def join(hi, lo):
    """Inverse of :func:`split`: float64 ``hi + lo``.  Call inside :func:`x64`."""
    return f64(hi) + f64(lo)
