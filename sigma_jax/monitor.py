r"""Spectral monitoring inside jitted training loops (optax-style ``init`` / ``update``).

::

    monitor = spectral_monitor(every=100)
    mstate = monitor.init(dim)
    @jax.jit
    def train_step(params, opt_state, mstate, batch, step):
        (loss, hidden), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        mstate, report = monitor.update(mstate, hidden, step)   # no host sync
        ...
        return params, opt_state, mstate, report

``update`` flattens activations ``(..., dim)`` to rows, adds ``sum_j v_j v_j^T`` to a
streaming float64-safe Gram accumulator (a float32 ``(hi, lo)`` pair, see
``sigma_jax._x64``), reduces it across ``axis_name`` when called inside
``pmap``/``shard_map``, and every ``every`` steps (``lax.cond``, on device)
recomputes the report from everything accumulated so far:

* SIGMA's ``logdet = logdet(G + delta I)`` and ``u_cov = logdet - m log N``
  (N rows seen; all rows are observed, so the Theorem-3 band is 0);
* the chosen spectral metrics of ``G`` (``sigma_jax.spectral`` conventions).

``method="exact"`` diagonalises the (m x m) float64 Gram (right for m up to a
few thousand); ``"stochastic"`` uses stochastic Lanczos quadrature on it
(``sigma_jax.estimators``) for large m; ``"auto"`` switches at ``m > 2048``.
``decay < 1`` turns the cumulative Gram into an exponential moving one
(``G <- decay * G + chunk``), tracking the recent representation.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from sigma_jax import gram as _gram
from sigma_jax._x64 import f64, join, split, x64

__all__ = ["MonitorState", "SpectralMonitor", "spectral_monitor", "capture_hidden", "METRICS"]

METRICS = ("effective_rank", "spectral_entropy", "participation_ratio", "stable_rank", "lambda_max", "lambda_min")
AUTO_STOCHASTIC_DIM = 2048


class MonitorState(NamedTuple):
    """Monitor state (a pytree of float32/int32 arrays: crosses jit boundaries without x64).

    Attributes:
        gram: the streaming :class:`sigma_jax.gram.GramState`.
        report: the last report (dict of scalars), refreshed every ``every`` steps.
    """

    gram: _gram.GramState
    report: dict


class SpectralMonitor(NamedTuple):
    """A pair of pure functions, like an optax ``GradientTransformation``."""

    init: Callable[[int], MonitorState]
    update: Callable[..., tuple[MonitorState, dict]]


def _empty_report(metrics: Sequence[str]) -> dict:
    names = ("logdet", "u_cov") + tuple(metrics)
    rep = {k: jnp.full((), jnp.nan, jnp.float32) for k in names}
    rep["n_rows"] = jnp.zeros((), jnp.int32)
    rep["step"] = jnp.full((), -1, jnp.int32)
    return rep


def _exact_metrics(g64, count, delta: float, metrics: Sequence[str]) -> dict:
    """All metrics from the float64 eigenvalues of G.  Call inside x64()."""
    m = g64.shape[0]
    lam = jnp.maximum(jnp.linalg.eigvalsh(g64), jnp.zeros((), jnp.float64))
    total = jnp.sum(lam)
    p = lam / jnp.where(total > 0, total, 1.0)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    h = -jnp.sum(plogp)
    logdet = jnp.sum(jnp.log(lam + delta))
    values = {
        "logdet": logdet,
        "u_cov": logdet - m * jnp.log(jnp.maximum(f64(count), 1.0)),
        "effective_rank": jnp.exp(h),
        "spectral_entropy": h,
        "participation_ratio": total**2 / jnp.sum(lam**2),
        "stable_rank": total / jnp.max(lam),
        "lambda_max": jnp.max(lam),
        "lambda_min": jnp.min(lam),
    }
    return {k: values[k] for k in ("logdet", "u_cov") + tuple(metrics)}


def _stochastic_metrics(g64, count, delta: float, metrics: Sequence[str], key, num_probes: int, num_steps: int):
    """Large-m path: one cached SLQ run on the dense accumulated G (m^2 per matvec instead of an m^3 eigh).

    Log-det and entropy-type metrics are Gauss-quadrature estimates (see ``sigma_jax.estimators``);
    ``lambda_max`` is the largest Ritz value (a lower bound) and ``lambda_min`` the smallest (an upper
    bound).  Call inside x64().
    """
    from sigma_jax import estimators as est

    m = g64.shape[0]
    quad = est.slq_quadrature(num_probes, min(num_steps, m))(key, g64.astype(jnp.float32))
    q = lambda quantity, shift=0.0: f64(est.quadrature_estimate(quad, quantity, shift=shift).value)  # noqa: E731
    logdet = q(est.logdet(), delta)
    values = {"logdet": logdet, "u_cov": logdet - m * jnp.log(jnp.maximum(f64(count), 1.0))}
    for name in metrics:
        if name == "effective_rank":
            values[name] = q(est.effective_rank())
        elif name == "spectral_entropy":
            values[name] = q(est.spectral_entropy())
        elif name == "participation_ratio":
            values[name] = q(est.participation_ratio())
        elif name == "stable_rank":
            values[name] = jnp.trace(g64) / jnp.max(quad.nodes)
        elif name == "lambda_max":
            values[name] = f64(jnp.max(quad.nodes))
        elif name == "lambda_min":
            values[name] = f64(jnp.min(jnp.where(quad.weights > 0, quad.nodes, jnp.inf)))
    return values


def spectral_monitor(every: int = 100, metrics: Sequence[str] = ("effective_rank", "spectral_entropy"), *,
                     delta: float = 1e-3, normalize: bool = True, axis_name: Any = None, method: str = "auto",
                     decay: float | None = None, num_probes: int = 32, num_steps: int = 32,
                     seed: int = 0) -> SpectralMonitor:
    """Build a spectral monitor.

    Args:
        every: recompute the report when ``step % every == 0``.
        metrics: names from :data:`METRICS` (SIGMA's ``logdet``/``u_cov`` are always reported).
        delta: SIGMA ridge.
        normalize: L2-normalise each activation row (as SIGMA does for sentence embeddings).
        axis_name: a ``pmap``/``shard_map`` axis (or tuple of axes) to reduce across; None outside.
        method: ``"exact"``, ``"stochastic"`` or ``"auto"`` (stochastic when m > 2048).
        decay: None for the cumulative Gram; ``0 < decay < 1`` for an exponential moving Gram.
        num_probes, num_steps: SLQ size for the stochastic path.
        seed: seed of the stochastic path's probes (folded with the step).

    Returns:
        :class:`SpectralMonitor` with ``init(dim)`` and ``update(state, activations, step)``.

    Example:
        >>> mon = spectral_monitor(every=2)
        >>> st = mon.init(4)
        >>> st, rep = mon.update(st, jnp.eye(4)[None], 0)
        >>> round(float(rep["effective_rank"]), 6)
        4.0
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}.")
    if every < 1:
        raise ValueError(f"`every` must be >= 1, got {every}.")
    if method not in ("exact", "stochastic", "auto"):
        raise ValueError(f"`method` must be 'exact', 'stochastic' or 'auto', got {method!r}.")
    if decay is not None and not 0.0 < decay < 1.0:
        raise ValueError(f"`decay` must lie in (0, 1) or be None, got {decay}.")
    metrics = tuple(metrics)

    def init(dim: int) -> MonitorState:
        return MonitorState(_gram.init(dim), _empty_report(metrics))

    def update(state: MonitorState, activations, step) -> tuple[MonitorState, dict]:
        dim = state.gram.dim
        if activations.shape[-1] != dim:
            raise ValueError(f"`activations` must end in the monitored dim {dim}, got shape {activations.shape}.")
        rows = activations.reshape(-1, dim)
        step = jnp.asarray(step, jnp.int32)
        with x64():
            chunk = _gram._chunk_gram64(rows, normalize)
            count = jnp.asarray(rows.shape[0], jnp.int32)
            if axis_name is not None:
                chunk = jax.lax.psum(chunk, axis_name)
                count = jax.lax.psum(count, axis_name)
            old = join(state.gram.hi, state.gram.lo)
            g = (decay * old if decay is not None else old) + chunk
            hi, lo = split(g)
            new_gram = _gram.GramState(hi, lo, state.gram.count + count)

            use_stochastic = method == "stochastic" or (method == "auto" and dim > AUTO_STOCHASTIC_DIM)
            n_eff = new_gram.count

            def compute(_):
                if use_stochastic:
                    key = jax.random.fold_in(jax.random.key(seed), step)
                    vals = _stochastic_metrics(g, n_eff, delta, metrics, key, num_probes, num_steps)
                else:
                    vals = _exact_metrics(g, n_eff, delta, metrics)
                out = {k: v.astype(jnp.float32) for k, v in vals.items()}
                out["n_rows"] = n_eff
                out["step"] = step
                return out

            report = jax.lax.cond(step % every == 0, compute, lambda _: state.report, None)
        return MonitorState(new_gram, report), report

    return SpectralMonitor(init, update)


def capture_hidden(model, *args, include: Callable[[str], bool] | None = None, **kwargs):
    """Run a ``flax.nnx`` model and return ``(output, {path: activation})`` of its submodules.

    Uses ``nnx.capture(..., method_outputs=nnx.Intermediate)`` so the model needs no
    ``sow`` calls.  ``include`` filters the dotted paths (e.g. ``lambda p: p.startswith("blocks")``).
    Works inside ``jit``; feed the chosen activation to ``monitor.update``.

    Example:
        >>> from flax import nnx
        >>> lin = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> out, hidden = capture_hidden(lin, jnp.ones((4, 3)))
        >>> hidden["__call__"].shape
        (4, 2)
    """
    from flax import nnx

    out, inter = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(*args, **kwargs)
    flat = {}
    for path, value in nnx.to_flat_state(inter):
        name = ".".join(str(p) for p in path)
        v = value.get_value() if hasattr(value, "get_value") else getattr(value, "value", value)
        if isinstance(v, tuple) and len(v) == 1:
            v = v[0]
        if hasattr(v, "shape") and (include is None or include(name)):
            flat[name] = v
    return out, flat
