"""Training and evaluation of the character LM: pure jitted steps over ``nnx.split`` state.

Optimiser: ``clip_by_global_norm -> AdamW`` with a linear warm-up to ``peak_lr`` and a
cosine decay to ``min_lr_ratio * peak_lr`` (weight decay on matrices only).  ``steps_per_call``
optimisation steps are fused into one compiled ``lax.scan`` (the batches for those steps
are gathered on the host from a fixed key, so a run is a pure function of its key).

Loss: mean next-character cross-entropy (nats).  Held-out quality is reported in
bits per character, ``bpc = mean NLL / ln 2`` over every position of fixed windows.

Example:
    >>> import jax, numpy as np
    >>> from flax import nnx
    >>> from sigma_jax.lm import ModelConfig, Transformer, TrainConfig, WindowSampler, train
    >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
    >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    >>> data = WindowSampler([np.arange(1000) % 90 + 2], [1.0])
    >>> params, losses = train(jax.random.key(1), graphdef, params, data, TrainConfig(steps=20, batch_size=4))
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

__all__ = ["TrainConfig", "make_optimizer", "WindowSampler", "train", "eval_bpc",
           "eval_windows", "continuation_nll", "loss_fn"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (hashable: a static jit argument)."""

    steps: int = 1000
    batch_size: int = 32
    seq_len: int | None = None  # None -> the model's block_size
    peak_lr: float = 3e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.99
    clip_norm: float = 1.0
    steps_per_call: int = 10
    monitor_every: int = 0  # > 0: sigma_jax.monitor on the final hidden states, every this many steps

    def __post_init__(self):
        for f in ("steps", "batch_size", "steps_per_call"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"`{f}` must be >= 1, got {getattr(self, f)}.")
        if not self.peak_lr > 0:
            raise ValueError(f"`peak_lr` must be > 0, got {self.peak_lr}.")

    @property
    def n_calls(self) -> int:
        return math.ceil(self.steps / self.steps_per_call)

    @property
    def total_steps(self) -> int:
        return self.n_calls * self.steps_per_call


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    """clip -> AdamW with warm-up + cosine decay (weight decay on ndim >= 2 leaves).

    Example:
        >>> import optax
        >>> tx = make_optimizer(TrainConfig(steps=100, warmup_steps=10))
        >>> isinstance(tx, optax.GradientTransformation)
        True
        >>> state = tx.init({"w": jnp.ones((2, 2)), "b": jnp.zeros(2)})
        >>> len(state)                                  # chain: (clip_by_global_norm, adamw) states
        2
    """
    total = tc.total_steps
    warm = min(tc.warmup_steps, max(total - 1, 0))
    sched = optax.warmup_cosine_decay_schedule(0.0, tc.peak_lr, max(warm, 1), max(total, warm + 1),
                                               end_value=tc.peak_lr * tc.min_lr_ratio)
    mask = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(tc.clip_norm),
                       optax.adamw(sched, b1=tc.b1, b2=tc.b2, weight_decay=tc.weight_decay, mask=mask))


def loss_fn(graphdef, params, batch):
    """Mean next-token cross-entropy (nats) of ``batch`` (B, L+1) int32.

    Example:
        >>> from flax import nnx
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> batch = jnp.arange(34, dtype=jnp.int32).reshape(2, 17) + 2
        >>> loss = jax.jit(loss_fn, static_argnums=0)(graphdef, params, batch)
        >>> bool(abs(float(loss) - np.log(cfg.vocab_size)) < 0.5)          # untrained: about log(vocab)
        True
    """
    model = nnx.merge(graphdef, params)
    logits = model(batch[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch[:, 1:]).mean()


def _loss_and_hidden(graphdef, params, batch):
    model = nnx.merge(graphdef, params)
    h = model.hidden(batch[:, :-1])
    logits = model.head(h)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch[:, 1:]).mean()
    return loss, h


MONITOR_METRICS = ("effective_rank", "participation_ratio")
_MONITOR_STREAM = 0x6D6F6E  # fold_in(key, .) of the monitor's row sampling; batches use fold_in(key, call index)


def _monitor(tc):
    from sigma_jax.monitor import spectral_monitor

    return spectral_monitor(every=tc.monitor_every, metrics=MONITOR_METRICS)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _train_chunk(graphdef, tc, params, opt_state, batches, mstate=None, step0=0):
    """``batches``: (S, B, L+1).  Runs S AdamW steps in one lax.scan; returns losses (S,).

    With ``tc.monitor_every > 0`` the step also feeds the final hidden states to a
    :func:`sigma_jax.monitor.spectral_monitor` (inside the scan, no host sync) and
    returns its state and per-step reports.
    """
    tx = make_optimizer(tc)
    mon = _monitor(tc) if tc.monitor_every > 0 else None

    def step(carry, xs):
        p, o, ms = carry
        batch, t = xs
        (loss, h), grads = jax.value_and_grad(lambda q: _loss_and_hidden(graphdef, q, batch), has_aux=True)(p)
        updates, o = tx.update(grads, o, p)
        report = None
        if mon is not None:
            ms, report = mon.update(ms, jax.lax.stop_gradient(h), t)
        return (optax.apply_updates(p, updates), o, ms), (loss, report)

    steps = step0 + jnp.arange(batches.shape[0], dtype=jnp.int32)
    (params, opt_state, mstate), (losses, reports) = jax.lax.scan(step, (params, opt_state, mstate),
                                                                  (batches, steps))
    return params, opt_state, losses, mstate, reports


class WindowSampler:
    """Random training windows from weighted sources.

    Each window first picks a source ``s`` with probability ``weights[s]``, then a
    uniform start inside that source's token array (windows may cross line
    boundaries, as in the real text).  Offsets come from a JAX key; the gather runs
    on the host.

    Args:
        sources: list of (n_s,) int token arrays (each longer than the window).
        weights: (n_sources,) non-negative, summing to 1.
    """

    def __init__(self, sources: Sequence[np.ndarray], weights: Sequence[float]):
        if len(sources) != len(weights) or not sources:
            raise ValueError("`sources` and `weights` must be non-empty and of equal length.")
        w = np.asarray(weights, np.float64)
        if np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise ValueError(f"`weights` must be non-negative and sum to 1, got {w}.")
        keep = w > 0
        self.sources = [np.asarray(s, np.int32) for s, k in zip(sources, keep) if k]
        self.weights = w[keep] / w[keep].sum()
        self.lengths = np.array([len(s) for s in self.sources], np.int64)
        self.data = np.concatenate(self.sources) if self.sources else np.zeros(0, np.int32)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])

    def sample(self, key, shape: tuple, window: int) -> np.ndarray:
        """``shape + (window,)`` int32 windows."""
        if np.any(self.lengths <= window):
            raise ValueError(f"every weighted source must hold more than {window} tokens, got lengths {self.lengths}.")
        k1, k2 = jax.random.split(key)
        src = np.asarray(jax.random.choice(k1, len(self.weights), shape, p=jnp.asarray(self.weights, jnp.float32)))
        u = np.asarray(jax.random.uniform(k2, shape), np.float64)
        off = self.starts[src] + np.minimum(np.floor(u * (self.lengths[src] - window + 1)).astype(np.int64),
                                            self.lengths[src] - window)
        return self.data[off[..., None] + np.arange(window)]


def train(key, graphdef, params, data: WindowSampler, tc: TrainConfig, progress: Callable | None = None,
          monitor_log: list | None = None):
    """Train ``params`` from a fresh optimiser state for ``tc.total_steps`` steps.

    Returns ``(params, losses)`` with losses a (total_steps,) float32 numpy array.
    ``progress(n_steps_done)`` is called after each fused chunk.  With
    ``tc.monitor_every > 0`` and a ``monitor_log`` list, the in-step spectral monitor's
    report is appended every ``monitor_every`` steps as a flat dict
    (:meth:`sigma_jax.monitor.MonitorReport.to_dict`): SIGMA's fields (``u_cov``, ``ci_halfwidth``,
    ...) of the ``n_sub`` hidden states it sampled from the ``n_total`` of the last ``monitor_every``
    steps, the effective rank and participation ratio of their Gram matrix, ``n_rows`` (hidden
    states seen since the start) and ``step``; undefined fields (the calibrated interval of a window
    too small for one, e.g. at step 0) are None.

    Example:
        >>> from flax import nnx
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> data = WindowSampler([np.arange(1000) % 90 + 2], [1.0])
        >>> params, losses = train(jax.random.key(1), graphdef, params, data, TrainConfig(steps=20, batch_size=4))
        >>> losses.shape, bool(losses[-5:].mean() < losses[:5].mean())
        ((20,), True)
    """
    seq = tc.seq_len or graphdef_block_size(graphdef, params)
    opt_state = make_optimizer(tc).init(params)
    mstate = None
    if tc.monitor_every > 0:
        d_model = int(nnx.merge(graphdef, params).cfg.d_model)
        mstate = _monitor(tc).init(d_model, key=jax.random.fold_in(key, _MONITOR_STREAM))
    losses = []
    for c in range(tc.n_calls):
        batches = data.sample(jax.random.fold_in(key, c), (tc.steps_per_call, tc.batch_size), seq + 1)
        params, opt_state, l, mstate, reports = _train_chunk(graphdef, tc, params, opt_state, jnp.asarray(batches),
                                                             mstate, jnp.int32(c * tc.steps_per_call))
        losses.append(np.asarray(l))
        if reports is not None and monitor_log is not None:
            host = jax.device_get(reports)
            for i in range(tc.steps_per_call):
                t = c * tc.steps_per_call + i
                if t < tc.steps and t % tc.monitor_every == 0:
                    row = jax.tree.map(lambda v: v[i], host).to_dict(metrics=MONITOR_METRICS)
                    # JSON null, not NaN, where a field is undefined (the interval of a too-small window)
                    monitor_log.append({k: None if isinstance(v, float) and math.isnan(v) else v
                                        for k, v in row.items()})
        if progress is not None:
            progress(tc.steps_per_call)
    return params, np.concatenate(losses)


def graphdef_block_size(graphdef, params) -> int:
    return int(nnx.merge(graphdef, params).cfg.block_size)


def eval_windows(key, tokens: np.ndarray, n: int, window: int) -> np.ndarray:
    """``n`` fixed windows (n, window) of ``tokens`` at offsets drawn from ``key``.

    Example:
        >>> w = eval_windows(jax.random.key(0), np.arange(100), 3, 5)
        >>> w.shape, bool((np.diff(w, axis=1) == 1).all())            # contiguous slices
        ((3, 5), True)
    """
    tokens = np.asarray(tokens, np.int32)
    if len(tokens) <= window:
        raise ValueError(f"held-out text has {len(tokens)} tokens; need more than {window}.")
    off = np.asarray(jax.random.randint(key, (n,), 0, len(tokens) - window + 1))
    return tokens[off[:, None] + np.arange(window)]


@functools.partial(jax.jit, static_argnums=(0,))
def _nll_rows(graphdef, params, batch):
    model = nnx.merge(graphdef, params)
    logits = model(batch[:, :-1]).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).sum(axis=1)


def eval_bpc(graphdef, params, windows: np.ndarray, batch_size: int = 64) -> float:
    """Bits per character of (n, L+1) windows: mean over all n*L predictions of NLL / ln 2.

    Example:
        >>> from flax import nnx
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> windows = eval_windows(jax.random.key(0), np.arange(200) % 90 + 2, 4, 17)
        >>> round(eval_bpc(graphdef, params, windows, batch_size=4), 1)   # untrained: log2(98) = 6.6
        6.6
    """
    windows = np.asarray(windows, np.int32)
    n = len(windows)
    total = 0.0
    for i in range(0, n, batch_size):
        b = windows[i:i + batch_size]
        k = len(b)
        if k < batch_size:  # pad to a fixed shape (one compilation), drop the padding rows
            b = np.concatenate([b, np.repeat(b[:1], batch_size - k, axis=0)])
        total += float(np.asarray(_nll_rows(graphdef, params, jnp.asarray(b)), np.float64)[:k].sum())
    return total / (n * (windows.shape[1] - 1)) / math.log(2.0)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _cont_nll(graphdef, params, seqs, n_prompt):
    model = nnx.merge(graphdef, params)
    logits = model(seqs[:, :-1]).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, seqs[:, 1:])
    return nll[:, n_prompt - 1:].mean(axis=1)


def continuation_nll(graphdef, params, prompts: np.ndarray, conts: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Per-sequence mean NLL (nats/char) of ``conts`` (n, C) given ``prompts`` (n, P) under the model.

    Example:
        >>> from flax import nnx
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> seqs = eval_windows(jax.random.key(0), np.arange(200) % 90 + 2, 3, 16)
        >>> nll = continuation_nll(graphdef, params, seqs[:, :8], seqs[:, 8:], batch_size=4)
        >>> nll.shape, bool(np.all(np.abs(nll - np.log(98)) < 0.5))      # untrained: about log(vocab)
        ((3,), True)
    """
    seqs = np.concatenate([np.asarray(prompts, np.int32), np.asarray(conts, np.int32)], axis=1)
    p = prompts.shape[1]
    out = []
    for i in range(0, len(seqs), batch_size):
        b = seqs[i:i + batch_size]
        k = len(b)
        if k < batch_size:
            b = np.concatenate([b, np.repeat(b[:1], batch_size - k, 0)])
        out.append(np.asarray(_cont_nll(graphdef, params, jnp.asarray(b), p))[:k])
    return np.concatenate(out) if out else np.zeros(0, np.float32)
