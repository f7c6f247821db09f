"""Argument checks shared by the toy simulators and closed forms (private)."""

from __future__ import annotations

import math

import numpy as np

from sigma_jax.collapse.strategies import Strategy

_EXACT_THEORY = ("replace", "accumulate")


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def _check_temperature(temperature) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature}.")
    return t


def _check_estimator(estimator: str) -> bool:
    if estimator not in ("mle", "unbiased"):
        raise ValueError(f"`estimator` must be 'mle' (divide by M) or 'unbiased' (divide by M - 1), got {estimator!r}.")
    return estimator == "unbiased"


def _check_exact_strategy(strategy) -> Strategy:
    s = Strategy.parse(strategy)
    if s.name not in _EXACT_THEORY:
        raise ValueError(
            f"the closed form is exact only for strategies {_EXACT_THEORY}, got {s.name!r} (its subsampling "
            "adds hypergeometric noise with no closed form here); compare that strategy against simulation only."
        )
    return s


def _check_probs(p0) -> np.ndarray:
    p = np.asarray(p0, dtype=np.float64)
    if p.ndim != 1 or p.size < 2:
        raise ValueError(f"`p0` must be a 1-D probability vector with at least 2 entries, got shape {p.shape}.")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("`p0` must be finite and non-negative.")
    if abs(p.sum() - 1.0) > 1e-5:
        raise ValueError(f"`p0` must sum to 1 (got {p.sum():.6g}); pass `p0 / p0.sum()`.")
    return p / p.sum()
