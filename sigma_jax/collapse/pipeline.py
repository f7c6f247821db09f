"""The recursive-training loop: small LMs retrained on their own text, measured by SIGMA.

For each seed, generation 0 trains a character LM on real text (shared by every arm
of that seed).  For each arm (strategy x temperature) and generation ``g >= 1``:

1. **data** — :func:`training_mix` picks, by strategy, from source 0 (real lines) and
   sources 1..g (the synthetic lines produced by generations 0..g-1);
2. **init** — ``fresh`` (new random init), ``carry-forward`` (generation g-1's weights)
   or ``base-reset`` (generation 0's weights); always a fresh optimiser and the same
   step budget;
3. **measure** — ``n_k`` continuations of ``measure_len`` characters from a fixed bank of
   held-out prompts with *fixed sampling keys* (common random numbers across
   generations and arms), embedded by a frozen encoder, and summarised by
   :func:`measure`;
4. **synthesise** — streams sampled after a newline of the generation's own training
   text and cut at their last newline (complete lines only), which become source g+1.

Randomness: the key of generation g is ``fold_in(PRNGKey(seed), g)`` (the same for
every arm), split by purpose with ``fold_in``; prompts, subset indices, evaluation
windows and measurement keys come from the root key alone.  A generation is finished
when its line is in ``metrics.jsonl`` (rewritten atomically), after its checkpoint and
synthetic set are on disk, so ``resume=True`` continues from the last finished
generation and reproduces the uninterrupted run's metrics.

Example:
    >>> from sigma_jax.collapse.presets import get_preset
    >>> results = run_experiment(get_preset("smoke"), "runs/smoke")     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import time
from collections import Counter
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sigma_jax.collapse.presets import CollapseConfig
from sigma_jax.collapse.strategies import Strategy, source_counts
from sigma_jax.lm.data import CharTokenizer, join_lines, lines_of, load_corpus
from sigma_jax.lm.model import Transformer
from sigma_jax.lm.sample import generate, generate_stream
from sigma_jax.lm.train import WindowSampler, continuation_nll, eval_bpc, eval_windows, train

__all__ = ["TrainingMix", "training_mix", "LMEncoder", "make_encoder", "measure", "lexical_stats",
           "cut_streams", "run_experiment", "arm_name", "read_metrics", "NLL_BINS"]

# fold_in tags (purposes of sub-keys)
_PROMPTS, _SUBSET, _EVAL, _MEASURE, _NULL, _TRAIN, _INIT, _SYNTH, _MIX = range(101, 110)
NLL_BINS = tuple(np.round(np.arange(0.0, 8.01, 0.25), 2).tolist())  # bits/char; last bin open-ended


# --------------------------------------------------------------------------- data strategies


class TrainingMix(NamedTuple):
    """A generation's training data: lines per source and the window-sampling weight of each.

    ``lines[s]`` are the items taken from source s (0 = real, k = synthetic set of
    generation k-1; possibly empty), ``weights[s]`` the probability that a training
    window comes from source s, ``counts[s] = len(lines[s])``.
    """

    lines: list
    weights: np.ndarray
    counts: np.ndarray


def training_mix(key, strategy, generation: int, sources: Sequence[Sequence[str]]) -> TrainingMix:
    """Build generation ``generation``'s training data from ``sources`` (lists of lines).

    * ``replace``: all of source g.
    * ``accumulate``: all lines of sources 0..g; weights by ``Strategy.weighting``:
      ``"size"`` (proportional to characters: the pooled data set) or ``"equal"``
      (each source 1/(g+1), so the real fraction falls as 1/(g+1)).
    * ``mix`` and ``accumulate-subsample``: a training set of fixed size
      ``len(sources[g])`` (the per-generation data budget: one synthetic set), with
      counts from :func:`source_counts`, drawn without replacement from each source
      (with replacement only if a source is too small); windows uniform over it.

    Generation 0 is the real set.  Lines are drawn with ``key``.

    Example:
        >>> sources = [["real 1", "real 2", "real 3"], ["synth 1", "synth 2"]]   # real, generation-0 output
        >>> mix = training_mix(None, "replace", 1, sources)
        >>> mix.lines, mix.weights.tolist()
        ([[], ['synth 1', 'synth 2']], [0.0, 1.0])
        >>> mix = training_mix(None, "accumulate:equal", 1, sources)
        >>> mix.counts.tolist(), mix.weights.tolist()
        ([3, 2], [0.5, 0.5])
    """
    s = Strategy.parse(strategy)
    g = int(generation)
    if len(sources) < g + 1:
        raise ValueError(f"generation {g} needs sources 0..{g}, got {len(sources)}.")
    sizes = [len(x) for x in sources[: g + 1]]
    chars = np.array([sum(len(ln) + 1 for ln in x) for x in sources[: g + 1]], np.float64)
    lines = [list() for _ in range(g + 1)]
    if g == 0 or s.name == "replace":
        lines[g] = list(sources[g])
        w = np.zeros(g + 1)
        w[g] = 1.0
        return TrainingMix(lines, w, np.array([len(x) for x in lines]))
    if s.name == "accumulate":
        lines = [list(x) for x in sources[: g + 1]]
        w = np.full(g + 1, 1.0 / (g + 1)) if s.weighting == "equal" else chars / chars.sum()
        return TrainingMix(lines, w, np.array(sizes))
    counts = source_counts(s, g, sizes, total=sizes[g])
    for i, c in enumerate(counts):
        if c == 0:
            continue
        k = jax.random.fold_in(key, i)
        if c <= sizes[i]:
            idx = np.asarray(jax.random.permutation(k, sizes[i]))[:c]
        else:
            idx = np.asarray(jax.random.randint(k, (int(c),), 0, sizes[i]))
        lines[i] = [sources[i][j] for j in np.sort(idx)]
    lc = np.array([sum(len(ln) + 1 for ln in x) for x in lines], np.float64)
    return TrainingMix(lines, lc / lc.sum(), np.asarray(counts))


def _sampler(mix: TrainingMix, tok: CharTokenizer, window: int) -> tuple[WindowSampler, list]:
    arrays, weights = [], []
    for ln, w in zip(mix.lines, mix.weights):
        if w <= 0:
            continue
        a = tok.encode(join_lines(ln))
        if len(a) <= window:  # a tiny source: repeat it so a window fits (weights unchanged)
            a = np.tile(a, window // max(len(a), 1) + 2)
        arrays.append(a)
        weights.append(w)
    weights = np.asarray(weights) / np.sum(weights)
    return WindowSampler(arrays, weights), arrays


def _stream_prompts(key, arrays: list, weights, n: int, plen: int, nl: int) -> np.ndarray:
    """``n`` prompts of ``plen`` tokens that end with a newline, from weighted token arrays."""
    k1, k2 = jax.random.split(key)
    src = np.asarray(jax.random.choice(k1, len(arrays), (n,), p=jnp.asarray(weights, jnp.float32)))
    u = np.asarray(jax.random.uniform(k2, (n,)), np.float64)
    out = np.empty((n, plen), np.int32)
    for i in range(n):
        a = arrays[src[i]]
        ends = np.flatnonzero(a[plen - 1:] == nl) + plen - 1
        if len(ends) == 0:  # no newline anywhere: any window
            ends = np.arange(plen - 1, len(a))
        e = ends[min(int(u[i] * len(ends)), len(ends) - 1)]
        out[i] = a[e - plen + 1: e + 1]
    return out


def cut_streams(texts: Sequence[str]) -> list:
    """Complete lines of sampled streams: everything after a stream's last newline is
    dropped (a stream without any newline is kept whole); empty lines are dropped.

    Example:
        >>> cut_streams(["a\\n\\nb\\npartial li", "no newline"])
        ['a', 'b', 'no newline']
    """
    out = []
    for t in texts:
        if "\n" in t:
            t = t[: t.rindex("\n")]
        out.extend(ln for ln in t.split("\n") if ln.strip())
    return out


# --------------------------------------------------------------------------- encoders


@functools.partial(jax.jit, static_argnums=(0,))
def _mean_hidden(graphdef, params, tokens, mask):
    h = nnx.merge(graphdef, params).hidden(tokens)
    m = mask[..., None].astype(h.dtype)
    e = (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)


class LMEncoder:
    """Frozen fallback encoder: the generation-0 LM's final-LayerNorm hidden states,
    mean-pooled over the text's characters and L2-normalised (m = d_model).  Texts longer
    than the context keep their first ``block_size`` characters."""

    def __init__(self, graphdef, params, tokenizer: CharTokenizer, block_size: int, dim: int):
        self.graphdef, self.params, self.tok, self.block_size = graphdef, params, tokenizer, int(block_size)
        self.name = "lm-gen0-meanpool"
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def encoder_config(self) -> dict:
        return {"name": self.name, "dim": self.dim, "class": "sigma_jax.collapse.pipeline.LMEncoder",
                "note": "generation-0 LM of the same seed, frozen; mean-pooled final hidden states"}

    def encode(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        ids = [self.tok.encode(t)[: self.block_size] for t in texts]
        length = max(1, max(len(x) for x in ids))
        length = min(self.block_size, -(-length // 8) * 8)
        out = []
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            k = len(chunk)
            toks = np.zeros((batch_size, length), np.int32)
            mask = np.zeros((batch_size, length), np.float32)
            for j, x in enumerate(chunk):
                toks[j, : len(x)] = x
                mask[j, : len(x)] = 1.0
            mask[k:, 0] = 1.0
            out.append(np.asarray(_mean_hidden(self.graphdef, self.params, jnp.asarray(toks), jnp.asarray(mask)))[:k])
        return np.concatenate(out).astype(np.float32)


def make_encoder(kind: str, graphdef=None, params=None, tokenizer=None, model_cfg=None):
    """``"minilm"`` (needs the optional extra), ``"lm"`` (generation-0 LM) or ``"auto"``.

    Example:
        >>> from sigma_jax.lm.model import ModelConfig
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> enc = make_encoder("lm", graphdef, params, CharTokenizer(), cfg)
        >>> enc.name, enc.dim, enc.encode(["In the beginning"], batch_size=8).shape
        ('lm-gen0-meanpool', 32, (1, 32))
    """
    if kind in ("minilm", "auto"):
        try:
            from sigma_jax.encoders import MiniLMEncoder
            return MiniLMEncoder.load()
        except (ImportError, FileNotFoundError, OSError, ValueError) as e:
            if kind == "minilm":
                raise ImportError(f"the MiniLM encoder is not available ({e}); use --encoder lm.") from e
    if graphdef is None:
        raise ValueError("the LM encoder needs the generation-0 model.")
    return LMEncoder(graphdef, params, tokenizer, model_cfg.block_size, model_cfg.d_model)


def _encoder_config(enc) -> dict:
    try:
        from sigma_jax.encoders import encoder_config
        return encoder_config(enc)
    except Exception:  # noqa: BLE001 - the encoders package is optional
        return {"name": enc.name, "dim": int(enc.dim)}


# --------------------------------------------------------------------------- metrics


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
    out["newlines_per_text"] = float(np.mean([t.count("\n") for t in texts]))
    out["chars_per_text"] = float(np.mean([len(t) for t in texts]))
    return out


def _sigma_dict(emb, idx, delta) -> dict:
    from sigma_jax import core
    n, m = emb.shape
    rep = core.sigma(emb, subset=None if idx is None else np.asarray(idx), n_total=n, delta=delta,
                     ridge_only=(len(idx) if idx is not None else n) <= m)
    return rep.to_dict()


def _report_from_dict(d: dict):
    from sigma_jax import core
    # numpy float64 scalars: sigma_jax.drift lifts them inside its float64 context (no float32 truncation)
    return core.SigmaReport(**{k: np.asarray(d[k], np.float64) for k in core.SigmaReport._fields})


def _spectral(emb) -> dict:
    from sigma_jax import spectral
    out = {}
    for c in (False, True):
        tag = "centred" if c else "uncentred"
        out[f"eff_rank_{tag}"] = float(spectral.effective_rank(emb, center=c))
        out[f"entropy_{tag}"] = float(spectral.spectral_entropy(emb, center=c))
    return out


def measure(*, texts: Sequence[str], emb: np.ndarray, subset_idx, delta: float, nll_bits: np.ndarray,
            bpc: float) -> dict:
    """Per-generation metrics of ``texts`` (n_k continuations) and their embeddings (n_k, m).

    Returns a flat dict: ``sigma_sub`` / ``sigma_full`` (SigmaReport fields on the fixed
    subset of n_A rows / on all n_k rows), effective ranks and spectral entropies of
    G = AᵀA over all rows with rows L2-normalised, both *uncentred* and *centred* (rows
    minus their mean), eigenvalue convention exp(H); held-out ``bpc``; lexical stats;
    per-text NLL under generation 0 (bits/char): mean, quantiles and a histogram on
    ``NLL_BINS`` (last bin open-ended).

    Example:
        >>> emb = np.asarray(jax.random.normal(jax.random.key(0), (24, 4)))
        >>> m = measure(texts=["a b c"] * 24, emb=emb, subset_idx=np.arange(16), delta=1e-3,
        ...             nll_bits=np.full(24, 2.0), bpc=2.5)
        >>> m["sigma_sub"]["n_sub"], m["sigma_full"]["n_sub"], m["bpc_heldout"], m["nll_gen0_bits"]["p50"]
        (16, 24, 2.5, 2.0)
        >>> bool(1.0 <= m["eff_rank_centred"] <= 4.0)
        True
    """
    out = {"sigma_sub": _sigma_dict(emb, subset_idx, delta), "sigma_full": _sigma_dict(emb, None, delta)}
    out.update(_spectral(emb))
    out["bpc_heldout"] = float(bpc)
    out.update(lexical_stats(texts))
    nll = np.asarray(nll_bits, np.float64)
    hist, _ = np.histogram(np.minimum(nll, NLL_BINS[-1] - 1e-9), bins=np.asarray(NLL_BINS))
    out["nll_gen0_bits"] = {"mean": float(nll.mean()), "p50": float(np.quantile(nll, 0.5)),
                            "p90": float(np.quantile(nll, 0.9)), "p99": float(np.quantile(nll, 0.99)),
                            "hist": hist.astype(int).tolist()}
    return out


# --------------------------------------------------------------------------- persistence


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_metrics(path: str) -> list:
    """Lines of a ``metrics.jsonl`` (generation order).

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
        >>> read_metrics(path)                            # no file yet
        []
        >>> _ = open(path, "w").write('{"generation": 0}\\n{"generation": 1}\\n')
        >>> [r["generation"] for r in read_metrics(path)]
        [0, 1]
        >>> shutil.rmtree(os.path.dirname(path))
    """
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(ln) for ln in fh if ln.strip()]


def _append_metrics(path: str, row: dict) -> None:
    rows = read_metrics(path) + [row]
    _atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _save_params(path: str, params) -> None:
    import orbax.checkpoint as ocp
    path = os.path.abspath(path)
    if os.path.exists(path):
        shutil.rmtree(path)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, nnx.to_pure_dict(params))
    ckptr.wait_until_finished()
    ckptr.close()


def _load_params(path: str, template):
    import orbax.checkpoint as ocp
    ckptr = ocp.StandardCheckpointer()
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(template))
    pure = ckptr.restore(os.path.abspath(path), target)
    ckptr.close()
    state = jax.tree.map(lambda x: x, template)
    nnx.replace_by_pure_dict(state, pure)
    return state


def _save_lines(path: str, lines: Sequence[str]) -> None:
    _atomic_write(path, join_lines(lines))


def _load_lines(path: str) -> list:
    with open(path, encoding="utf-8") as fh:
        return [ln for ln in fh.read().split("\n") if ln.strip()]


def _fmt_t(t: float) -> str:
    return f"{t:g}"


def arm_name(strategy: str, temperature: float, seed: int) -> str:
    """Folder name of one arm: strategy (``:`` becomes ``-``), temperature and seed.

    Example:
        >>> arm_name("accumulate:equal", 0.7, 0), arm_name("replace", 1.0, 2)
        ('accumulate-equal_T0.7_s0', 'replace_T1_s2')
    """
    return f"{Strategy.parse(strategy).name}{'-' + strategy.split(':', 1)[1] if ':' in strategy else ''}" \
           f"_T{_fmt_t(temperature)}_s{seed}"


# --------------------------------------------------------------------------- the experiment


def _bar(progress, total, desc):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
    except ImportError:
        return None


def _train_progress(bar):
    return None if bar is None else bar.update


def run_experiment(cfg: CollapseConfig, out_dir: str, *, resume: bool = False, progress: bool = False,
                   stop_after: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) every arm x seed of ``cfg`` into ``out_dir``; returns ``{arm: [metrics rows]}``.

    ``stop_after``: finish generations 0..stop_after and return (simulates an interruption).

    Example (a whole run takes minutes; shown here: an existing run is never overwritten):
        >>> import tempfile
        >>> from sigma_jax.collapse.presets import get_preset
        >>> out = tempfile.mkdtemp()
        >>> _ = open(os.path.join(out, "config.json"), "w").write("{}")   # a run already lives here
        >>> run_experiment(get_preset("smoke"), out)
        Traceback (most recent call last):
        ...
        FileExistsError: ... already holds a run; pass resume=True (--resume) or another --out.
        >>> shutil.rmtree(out)
    """
    log = log or (lambda s: None)
    os.makedirs(out_dir, exist_ok=True)
    cfg_path = os.path.join(out_dir, "config.json")
    cfg_json = cfg.to_json()
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as fh:
            old = json.load(fh)
        if not resume:
            raise FileExistsError(f"{out_dir!r} already holds a run; pass resume=True (--resume) or another --out.")
        if old.get("experiment") != json.loads(json.dumps(cfg_json)):
            raise ValueError(f"--resume: the config in {cfg_path} differs from the requested one; use the same "
                             "preset and options, or another --out.")
    else:
        _atomic_write(cfg_path, json.dumps({"experiment": cfg_json}, indent=1, sort_keys=True))
    tok = CharTokenizer()
    corpus = load_corpus(cfg.corpus, cfg.heldout_every)
    real_lines = lines_of(corpus.train)
    heldout = tok.encode(join_lines(lines_of(corpus.heldout)))
    mcfg = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size)
    window = (cfg.train.seq_len or mcfg.block_size) + 1
    arms = [(s, float(t)) for s in cfg.strategies for t in cfg.temperatures]
    results = {}
    encoders_used = {}
    t_start = time.time()

    for seed in cfg.seeds:
        root = jax.random.key(int(seed))
        graphdef, template = nnx.split(Transformer(mcfg, rngs=nnx.Rngs(int(seed))))
        n_prompts = cfg.n_measure
        eval_w = eval_windows(jax.random.fold_in(root, _EVAL), heldout, cfg.n_eval_windows, window)
        prompts = eval_windows(jax.random.fold_in(root, _PROMPTS), heldout, n_prompts, cfg.measure_prompt_len)
        subset_idx = np.sort(np.asarray(jax.random.permutation(jax.random.fold_in(root, _SUBSET), cfg.n_measure))[: cfg.n_sub])
        mkey = jax.random.fold_in(root, _MEASURE)

        base_dir = os.path.join(out_dir, f"base_s{seed}")
        os.makedirs(base_dir, exist_ok=True)
        ck0 = os.path.join(base_dir, "ckpt_gen0")
        if os.path.exists(os.path.join(base_dir, "gen0_done.json")):
            params0 = _load_params(ck0, template)
        else:
            real_mix = training_mix(None, "replace", 0, [real_lines])
            sampler, _ = _sampler(real_mix, tok, window)
            init0 = nnx.split(Transformer(mcfg, rngs=nnx.Rngs(params=jax.random.fold_in(jax.random.fold_in(root, 0), _INIT))))[1]
            bar = _bar(progress, cfg.train.total_steps, f"seed {seed} gen 0 train")
            t0 = time.time()
            mlog0: list = []
            params0, losses = train(jax.random.fold_in(jax.random.fold_in(root, 0), _TRAIN), graphdef, init0, sampler,
                                    cfg.train, _train_progress(bar), monitor_log=mlog0)
            if bar is not None:
                bar.close()
            _save_params(ck0, params0)
            _atomic_write(os.path.join(base_dir, "gen0_done.json"),
                          json.dumps({"train_s": time.time() - t0, "final_loss": float(losses[-10:].mean()),
                                      "train_monitor": mlog0}))
            log(f"seed {seed}: generation 0 trained ({time.time() - t0:.0f} s, loss {losses[-10:].mean():.3f} nats)")
        enc = make_encoder(cfg.encoder, graphdef, params0, tok, mcfg)
        encoders_used[seed] = _encoder_config(enc)
        if cfg.n_sub <= enc.dim:
            log(f"warning: n_A = {cfg.n_sub} <= m = {enc.dim}: SIGMA runs in the ridge-only regime (not comparable).")

        def measure_model(params, temperature, key):
            t0 = time.time()
            conts = generate(key, graphdef, params, prompts, cfg.measure_len, temperature, cfg.top_k, cfg.top_p,
                             batch_size=cfg.sample_batch)
            texts = [tok.decode(c) for c in conts]
            t1 = time.time()
            emb = enc.encode(texts, batch_size=cfg.encode_batch)
            t2 = time.time()
            bpc = eval_bpc(graphdef, params, eval_w)
            nll = continuation_nll(graphdef, params0, prompts, conts) / math.log(2.0)
            m = measure(texts=texts, emb=emb, subset_idx=subset_idx, delta=cfg.delta, nll_bits=nll, bpc=bpc)
            m["time_s"] = {"sample": t1 - t0, "encode": t2 - t1, "metrics": time.time() - t2}
            return m, texts

        def synthesize(params, temperature, mix, key):
            sampler_arrays = _sampler(mix, tok, window)[1]
            w = [x for x in mix.weights if x > 0]
            pr = _stream_prompts(jax.random.fold_in(key, 0), sampler_arrays, np.asarray(w) / np.sum(w),
                                 cfg.synth_streams, cfg.synth_prompt_len, tok.newline_id)
            streams = generate_stream(jax.random.fold_in(key, 1), graphdef, params, pr, cfg.synth_len, mcfg.block_size,
                                      temperature, cfg.top_k, cfg.top_p, batch_size=min(cfg.sample_batch, cfg.synth_streams))
            return cut_streams([tok.decode(s) for s in streams])

        # ---- generation 0 per temperature (shared by every strategy of this seed)
        gen0 = {}
        for temp in sorted({t for _, t in arms}):
            mt = temp if cfg.measure_temperature is None else cfg.measure_temperature
            path = os.path.join(base_dir, f"gen0_T{_fmt_t(temp)}.json")
            spath = os.path.join(base_dir, f"synthetic_gen0_T{_fmt_t(temp)}.txt")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as fh:
                    gen0[temp] = json.load(fh)
                continue
            t0 = time.time()
            m, texts = measure_model(params0, mt, mkey)
            nulls = []
            for i in range(cfg.null_keys):
                conts = generate(jax.random.fold_in(jax.random.fold_in(root, _NULL), i), graphdef, params0, prompts,
                                 cfg.measure_len, mt, cfg.top_k, cfg.top_p, batch_size=cfg.sample_batch)
                e = enc.encode([tok.decode(c) for c in conts], batch_size=cfg.encode_batch)
                nulls.append(_sigma_dict(e, subset_idx, cfg.delta)["u_cov"])
            m["null_u_cov"] = nulls
            m["null_spread"] = float(max(abs(u - m["sigma_sub"]["u_cov"]) for u in nulls)) if nulls else 0.0
            real_mix = training_mix(None, "replace", 0, [real_lines])
            t1 = time.time()
            synth = synthesize(params0, temp, real_mix, jax.random.fold_in(jax.random.fold_in(root, 0), _SYNTH))
            m["synthetic"] = {"lines": len(synth), "chars": sum(len(x) + 1 for x in synth), "time_s": time.time() - t1}
            m["train_mix"] = {"counts": [len(real_lines)], "weights": [1.0]}
            m["time_s"]["generation"] = time.time() - t0
            _save_lines(spath, synth)
            _atomic_write(os.path.join(base_dir, f"samples_gen0_T{_fmt_t(temp)}.txt"), json.dumps(texts) + "\n")
            _atomic_write(path, json.dumps(m))
            gen0[temp] = m
            log(f"seed {seed} T={temp:g}: generation 0 measured: U_cov {m['sigma_sub']['u_cov']:.1f} "
                f"± {m['sigma_sub']['ci_halfwidth']:.1f}, null spread {m['null_spread']:.1f}, bpc {m['bpc_heldout']:.3f}")

        # ---- arms, generation-interleaved so partial runs compare arms at equal depth
        state = {}
        for strat, temp in arms:
            name = arm_name(strat, temp, seed)
            adir = os.path.join(out_dir, name)
            for sub in ("ckpt", "synthetic", "samples"):
                os.makedirs(os.path.join(adir, sub), exist_ok=True)
            mpath = os.path.join(adir, "metrics.jsonl")
            rows = read_metrics(mpath) if resume else []
            if not resume and os.path.exists(mpath):
                os.remove(mpath)
            if not rows:
                row = dict(gen0[temp], generation=0, arm=name, strategy=strat, temperature=temp, seed=seed)
                row.update(_drift_fields(gen0[temp], gen0[temp]))
                _append_metrics(mpath, row)
                rows = [row]
            synth = [_load_lines(os.path.join(base_dir, f"synthetic_gen0_T{_fmt_t(temp)}.txt"))]
            for g in range(1, len(rows)):
                sp = os.path.join(adir, "synthetic", f"gen{g}.txt")
                if os.path.exists(sp):
                    synth.append(_load_lines(sp))
            last = len(rows) - 1
            prev = params0 if last == 0 else (
                _load_params(os.path.join(adir, "ckpt", f"gen{last}"), template) if cfg.init == "carry-forward" else None)
            state[name] = dict(strat=strat, temp=temp, adir=adir, mpath=mpath, rows=rows, synth=synth, prev=prev)
            _atomic_write(os.path.join(adir, "config.json"), json.dumps(
                {"arm": name, "strategy": strat, "temperature": temp, "seed": seed, "init": cfg.init,
                 "encoder": encoders_used[seed], "experiment": cfg_json}, indent=1, sort_keys=True))

        for g in range(1, cfg.generations):
            if stop_after is not None and g > stop_after:
                break
            for name, st in state.items():
                if len(st["rows"]) > g:
                    continue
                t0 = time.time()
                gkey = jax.random.fold_in(root, g)
                sources = [real_lines] + st["synth"][:g]
                mix = training_mix(jax.random.fold_in(gkey, _MIX), st["strat"], g, sources)
                sampler, _ = _sampler(mix, tok, window)
                if cfg.init == "fresh":
                    init = nnx.split(Transformer(mcfg, rngs=nnx.Rngs(params=jax.random.fold_in(gkey, _INIT))))[1]
                elif cfg.init == "base-reset":
                    init = params0
                else:
                    init = st["prev"]
                bar = _bar(progress, cfg.train.total_steps, f"{name} gen {g} train")
                mlog: list = []  # the in-step spectral monitor of the LM's own hidden states
                params, losses = train(jax.random.fold_in(gkey, _TRAIN), graphdef, init, sampler, cfg.train,
                                       _train_progress(bar), monitor_log=mlog)
                if bar is not None:
                    bar.close()
                t_train = time.time() - t0
                _save_params(os.path.join(st["adir"], "ckpt", f"gen{g}"), params)
                mt = st["temp"] if cfg.measure_temperature is None else cfg.measure_temperature
                m, texts = measure_model(params, mt, mkey)
                t1 = time.time()
                if g < cfg.generations - 1:
                    new = synthesize(params, st["temp"], mix, jax.random.fold_in(gkey, _SYNTH))
                    _save_lines(os.path.join(st["adir"], "synthetic", f"gen{g}.txt"), new)
                    st["synth"].append(new)
                    m["synthetic"] = {"lines": len(new), "chars": sum(len(x) + 1 for x in new), "time_s": time.time() - t1}
                _atomic_write(os.path.join(st["adir"], "samples", f"gen{g}.txt"), json.dumps(texts) + "\n")
                m["train_mix"] = {"counts": mix.counts.tolist(), "weights": np.round(mix.weights, 6).tolist()}
                m["train_final_loss"] = float(losses[-10:].mean())
                if mlog:
                    m["train_monitor"] = mlog
                m["time_s"]["train"] = t_train
                m["time_s"]["generation"] = time.time() - t0
                row = dict(m, generation=g, arm=name, strategy=st["strat"], temperature=st["temp"], seed=seed)
                row["null_u_cov"] = st["rows"][0]["null_u_cov"]
                row["null_spread"] = st["rows"][0]["null_spread"]
                row.update(_drift_fields(st["rows"][0], row))
                _append_metrics(st["mpath"], row)
                st["rows"].append(row)
                st["prev"] = params if cfg.init == "carry-forward" else None
                log(f"{name} gen {g}: U_cov {row['sigma_sub']['u_cov']:.1f} (dU {row['dU']:+.1f}, band "
                    f"{row['band']:.1f}, null {row['null_spread']:.1f}), bpc {row['bpc_heldout']:.3f}, "
                    f"distinct-2 {row['distinct_2']:.3f}, eff.rank(c) {row['eff_rank_centred']:.1f} "
                    f"[{row['time_s']['generation']:.0f} s]")
        for name, st in state.items():
            results[name] = st["rows"]

    _atomic_write(cfg_path, json.dumps({"experiment": cfg_json, "encoders": {str(k): v for k, v in encoders_used.items()},
                                        "arms": sorted(results), "jax": jax.__version__,
                                        "wall_s_last_invocation": time.time() - t_start}, indent=1, sort_keys=True))
    return results


def _drift_fields(row0: dict, row: dict) -> dict:
    """dU, dG, the Theorem-3 band sqrt(hw_g² + hw_0²), the null spread and the verdict
    (via :func:`sigma_jax.drift`, which takes the larger of band and null spread)."""
    from sigma_jax import core
    r0, rg = _report_from_dict(row0["sigma_sub"]), _report_from_dict(row["sigma_sub"])
    d = core.drift([r0, rg])
    dn = core.drift([r0, rg], null_spread=float(row0.get("null_spread", 0.0)))
    du = float(d.dU[1])
    thr = float(dn.band[1])
    return {"dU": du, "dG": float(d.dG[1]), "band": float(d.band[1]), "threshold": thr,
            "below_band": bool(du < -thr), "above_band": bool(du > thr)}
