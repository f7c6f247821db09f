"""Batched, jitted sampling with a KV cache: temperature, top-k, top-p (nucleus).

For each step the next-token distribution is ``softmax(filter(logits) / T)`` where
``filter`` keeps the ``top_k`` largest logits (``top_k = 0``: all) and then the
smallest set of tokens whose probability mass reaches ``top_p``.  ``T = 0`` (or
any ``T <= 1e-6``) is greedy decoding (argmax), exactly.

The prompt is processed in one pass that fills the cache; every further token costs
one cached step.  Streams longer than the model's context are produced in chunks:
each chunk re-fills a fresh cache with the last ``keep`` tokens (a sliding window).

Example:
    >>> from flax import nnx
    >>> from sigma_jax.lm.model import ModelConfig, Transformer
    >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
    >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    >>> prompts = jnp.ones((2, 8), jnp.int32)
    >>> out = generate(jax.random.key(0), graphdef, params, prompts, 8, temperature=0.7)
    >>> out.shape, out.dtype
    ((2, 8), dtype('int32'))
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sigma_jax.lm.model import init_cache

__all__ = ["filter_logits", "sample_token", "decode", "generate", "generate_stream"]

_GREEDY_T = 1e-6


def filter_logits(logits, top_k: int = 0, top_p: float = 1.0):
    """Mask (-inf) the logits outside the top-k and outside the top-p nucleus.  logits: (..., V).
    ``top_k`` and ``top_p`` are Python numbers (static: 0 / 1.0 skip the filter).

    Example:
        >>> (filter_logits(jnp.array([1.0, 3.0, 2.0, 0.0]), top_k=2) > -1e30).tolist()
        [False, True, True, False]
        >>> (filter_logits(jnp.log(jnp.array([0.5, 0.3, 0.2])), top_p=0.7) > -1e30).tolist()
        [True, True, False]
    """
    neg = jnp.finfo(logits.dtype).min
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p >= 1.0:
        return logits
    srt = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(srt, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each sorted token
    keep = before < top_p
    keep = keep.at[..., 0].set(True)
    cutoff = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, neg, logits)


def sample_token(key, logits, temperature, top_k: int = 0, top_p=1.0):
    """One token per row of (B, V) logits; greedy when ``temperature <= 1e-6``.

    Example:
        >>> logits = jnp.array([[0.0, 5.0, 1.0], [2.0, 0.0, 0.0]])
        >>> sample_token(jax.random.key(0), logits, 0.0).tolist()           # greedy
        [1, 0]
        >>> sample_token(jax.random.key(0), logits, 1.0, top_k=1).tolist()   # top-1 sampling is greedy too
        [1, 0]
    """
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1)
    t = jnp.maximum(temperature, _GREEDY_T)
    filt = filter_logits(logits / t, top_k, top_p)
    drawn = jax.random.categorical(key, filt, axis=-1)
    return jnp.where(temperature <= _GREEDY_T, greedy, drawn).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(1, 4, 6, 7, 8))
def _decode(key, graphdef, params, prompts, n_new, temperature, top_k, top_p, return_logits):
    model = nnx.merge(graphdef, params)
    b, p = prompts.shape
    cache = init_cache(model.cfg, b, p + n_new)
    logits, cache = model(prompts, cache=cache, pos=0)
    last = logits[:, -1]
    keys = jax.random.split(key, n_new)
    tok0 = sample_token(keys[0], last, temperature, top_k, top_p)

    def step(carry, k):
        tok, cache, pos = carry
        lg, cache = model(tok[:, None], cache=cache, pos=pos)
        lg = lg[:, 0]
        nxt = sample_token(k, lg, temperature, top_k, top_p)
        return (nxt, cache, pos + 1), (nxt, lg if return_logits else None)

    (_, _, _), (toks, lgs) = jax.lax.scan(step, (tok0, cache, jnp.int32(p)), keys[1:])
    toks = jnp.concatenate([tok0[:, None], toks.T], axis=1)
    if return_logits:
        lgs = jnp.concatenate([last[:, None], jnp.swapaxes(lgs, 0, 1)], axis=1)
        return toks, lgs
    return toks


def decode(key, graphdef, params, prompts, n_new: int, temperature=1.0, top_k: int = 0, top_p=1.0,
           return_logits: bool = False):
    """Sample ``n_new`` tokens after ``prompts`` (B, P) with a KV cache; needs P + n_new <= block_size.

    Returns (B, n_new) int32 tokens, and with ``return_logits`` also the (B, n_new, V)
    unfiltered logits each token was drawn from.

    Example:
        >>> from flax import nnx
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> toks = decode(jax.random.key(0), graphdef, params, jnp.ones((2, 8), jnp.int32), 8, temperature=0.0)
        >>> toks.shape, bool((toks[0] == toks[1]).all())          # greedy: equal prompts, equal outputs
        ((2, 8), True)
    """
    prompts = jnp.asarray(prompts, jnp.int32)
    if prompts.ndim != 2 or prompts.shape[1] < 1:
        raise ValueError(f"`prompts` must be (B, P) with P >= 1, got shape {prompts.shape}.")
    if n_new < 1:
        raise ValueError(f"`n_new` must be >= 1, got {n_new}.")
    if temperature < 0:
        raise ValueError(f"`temperature` must be >= 0, got {temperature}.")
    if not 0 < top_p <= 1:
        raise ValueError(f"`top_p` must lie in (0, 1], got {top_p}.")
    return _decode(key, graphdef, params, prompts, int(n_new), jnp.float32(temperature), int(top_k),
                   float(top_p), bool(return_logits))


def generate(key, graphdef, params, prompts, n_new: int, temperature=1.0, top_k: int = 0, top_p=1.0,
             batch_size: int | None = None) -> np.ndarray:
    """Like :func:`decode` (numpy result), in fixed-size batches (the last one padded).

    Example:
        >>> from flax import nnx
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> prompts = np.arange(30).reshape(3, 10)[:, :8] + 2             # 3 prompts of 8 tokens
        >>> out = generate(jax.random.key(0), graphdef, params, prompts, 8, batch_size=2)   # batches of 2
        >>> type(out).__name__, out.shape
        ('ndarray', (3, 8))
    """
    prompts = np.asarray(prompts, np.int32)
    n = len(prompts)
    bs = n if batch_size is None else int(batch_size)
    out = []
    for j, i in enumerate(range(0, n, bs)):
        b = prompts[i:i + bs]
        k = len(b)
        if k < bs:
            b = np.concatenate([b, np.repeat(b[:1], bs - k, 0)])
        out.append(np.asarray(decode(jax.random.fold_in(key, j), graphdef, params, b, n_new,
                                     temperature, top_k, top_p))[:k])
    return np.concatenate(out)


def generate_stream(key, graphdef, params, prompts, n_new: int, block_size: int, temperature=1.0,
                    top_k: int = 0, top_p=1.0, keep: int | None = None, batch_size: int | None = None) -> np.ndarray:
    """Streams of ``n_new`` tokens that may exceed the context: chunks of ``block_size - keep``
    new tokens, each conditioned on the last ``keep`` tokens (default ``block_size // 2``).
    ``prompts`` (B, P) with P <= block_size - 1.  Returns (B, n_new) int32.

    Example:
        >>> from flax import nnx
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> out = generate_stream(jax.random.key(0), graphdef, params, np.ones((2, 8), np.int32), 20,
        ...                       block_size=16)                         # 20 > 16 - 8: three chunks of 8
        >>> out.shape
        (2, 20)
    """
    prompts = np.asarray(prompts, np.int32)
    keep = block_size // 2 if keep is None else int(keep)
    if prompts.shape[1] + 1 > block_size or not 0 < keep < block_size:
        raise ValueError(f"need prompt length < block_size and 0 < keep < block_size; got "
                         f"P={prompts.shape[1]}, keep={keep}, block_size={block_size}.")
    first = min(n_new, block_size - prompts.shape[1])
    outs = [generate(jax.random.fold_in(key, 0), graphdef, params, prompts, first, temperature, top_k, top_p, batch_size)]
    done, c = first, 1
    step = block_size - keep
    while done < n_new:
        ctx = np.concatenate([prompts] + outs, axis=1)[:, -keep:]
        outs.append(generate(jax.random.fold_in(key, c), graphdef, params, ctx, step, temperature, top_k, top_p, batch_size))
        done += step
        c += 1
    return np.concatenate(outs, axis=1)[:, :n_new]
