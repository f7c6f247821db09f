"""A generation's training data: real sets of a fixed character budget, the strategies' mixes, synthetic streams.

Every training set the pipeline compares is measured in **characters** of its training
text (``join_lines(lines)``, newlines included) and the replace / control pair is made
*equal* by construction:

* :func:`real_sets` shuffles the real training lines once per seed and cuts consecutive,
  disjoint slices of exactly ``train_chars`` characters: slice 0 is generation 0's training
  set (source 0 of every strategy), slice g is the ``control`` arm's *fresh* real set of
  generation g -- text no earlier model of the chain was trained on.
* :func:`take_chars` cuts a synthetic set (complete sampled lines, in sampling order) to the
  same ``train_chars``.  Only the last line of a set is ever truncated.
* :func:`training_mix` then picks, by strategy, what generation g trains on.

Example:
    >>> lines = ["In the beginning", "God created", "the heaven and the earth"]
    >>> take_chars(lines, 20), n_chars(take_chars(lines, 20))
    (['In the beginning', 'Go'], 20)
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax.collapse.strategies import Strategy, source_counts
from sigma_jax.lm.data import CharTokenizer, join_lines
from sigma_jax.lm.train import WindowSampler

__all__ = ["n_chars", "take_chars", "real_sets", "TrainingMix", "training_mix", "window_sampler",
           "stream_prompts", "cut_streams"]


def n_chars(lines: Sequence[str]) -> int:
    """Characters of the training text of ``lines`` (one line each, newline included).

    Example:
        >>> n_chars(["ab", "c"])                     # "ab\\nc\\n"
        5
    """
    return sum(len(ln) + 1 for ln in lines)


def _take(lines: Sequence[str], start: int, budget: int) -> tuple[list, int]:
    """Lines from ``start`` on with exactly ``budget`` characters; returns (lines, next start)."""
    out, total, i = [], 0, start
    while total < budget and i < len(lines):
        ln = lines[i]
        need = budget - total
        if len(ln) + 1 <= need:
            out.append(ln)
            total += len(ln) + 1
        else:  # the last line is cut (possibly to an empty line: its newline is the last character)
            out.append(ln[: need - 1])
            total = budget
        i += 1
    if total < budget:
        raise ValueError(f"not enough text: {total} characters from line {start} on, need {budget}.")
    return out, i


def take_chars(lines: Sequence[str], budget: int) -> list:
    """The first lines of ``lines`` holding exactly ``budget`` characters (:func:`n_chars`);
    only the last one may be cut.  Raises when ``lines`` hold fewer characters.

    Example:
        >>> take_chars(["abc", "defg"], 7)             # "abc\\n" + "de\\n"
        ['abc', 'de']
        >>> take_chars(["abc"], 10)
        Traceback (most recent call last):
        ...
        ValueError: not enough text: 4 characters from line 0 on, need 10.
    """
    if int(budget) < 1:
        raise ValueError(f"`budget` must be >= 1 character, got {budget}.")
    return _take(list(lines), 0, int(budget))[0]


def real_sets(key, lines: Sequence[str], budget: int, n_sets: int) -> list:
    """``n_sets`` disjoint real training sets of exactly ``budget`` characters each.

    The lines are shuffled with ``key`` (one permutation per seed) and cut into consecutive
    slices: set 0 trains generation 0, set g (g >= 1) is the ``control`` arm's fresh real
    set of generation g.  Lines are the corpus's items (KJV: one verse each).

    Example:
        >>> sets = real_sets(jax.random.key(0), [f"verse {i}" for i in range(40)], 30, 3)
        >>> [n_chars(s) for s in sets], len(set(sets[0]) & set(sets[1]))      # equal sizes, disjoint
        ([30, 30, 30], 0)
    """
    lines = list(lines)
    budget, n_sets = int(budget), int(n_sets)
    if budget < 1 or n_sets < 1:
        raise ValueError(f"need budget >= 1 and n_sets >= 1, got budget={budget}, n_sets={n_sets}.")
    have = n_chars(lines)
    if have < budget * n_sets:
        raise ValueError(f"the real training text holds {have} characters; {n_sets} disjoint sets of train_chars="
                         f"{budget} need {budget * n_sets}: lower `train_chars` or `generations`, or use a larger "
                         "corpus.")
    order = np.asarray(jax.random.permutation(key, len(lines)))
    shuffled = [lines[i] for i in order]
    out, start = [], 0
    for _ in range(n_sets):
        s, start = _take(shuffled, start, budget)
        out.append(s)
    return out


class TrainingMix(NamedTuple):
    """A generation's training data: lines per source and the window-sampling weight of each.

    ``lines[s]`` are the items taken from source s (0 = real, k = synthetic set of
    generation k-1; possibly empty), ``weights[s]`` the probability that a training
    window comes from source s, ``counts[s] = len(lines[s])``.
    """

    lines: list
    weights: np.ndarray
    counts: np.ndarray

    @property
    def chars(self) -> int:
        """Characters of the training set (sources with a positive weight)."""
        return sum(n_chars(x) for x, w in zip(self.lines, self.weights) if w > 0)


def _only(g: int, source: int, lines) -> TrainingMix:
    out = [list() for _ in range(g + 1)]
    out[source] = list(lines)
    w = np.zeros(g + 1)
    w[source] = 1.0
    return TrainingMix(out, w, np.array([len(x) for x in out]))


def training_mix(key, strategy, generation: int, sources: Sequence[Sequence[str]], *,
                 fresh_real: Sequence[str] | None = None) -> TrainingMix:
    """Build generation ``generation``'s training data from ``sources`` (lists of lines).

    * ``replace``: all of source g (generation g-1's synthetic set).
    * ``control``: all of ``fresh_real`` (required), the generation's fresh real set of the
      same size as source g; reported as source 0.
    * ``accumulate``: all lines of sources 0..g (the pooled data set of Gerstgrasser et al.);
      weights by ``Strategy.weighting``: ``"size"`` (proportional to characters) or
      ``"equal"`` (each source 1/(g+1)).  With sources of equal size the two agree.
    * ``mix`` and ``accumulate-subsample``: a training set of ``len(sources[g])`` lines with
      counts from :func:`~sigma_jax.collapse.strategies.source_counts`, drawn without
      replacement from each source (with replacement only if a source is too small).

    Generation 0 is source 0.  ``control`` reads no synthetic source (``sources`` may hold only
    source 0).  Lines are drawn with ``key``.

    Example:
        >>> sources = [["real 1", "real 2", "real 3"], ["synth 1", "synth 2"]]   # real, generation-0 output
        >>> mix = training_mix(None, "replace", 1, sources)
        >>> mix.lines, mix.weights.tolist()
        ([[], ['synth 1', 'synth 2']], [0.0, 1.0])
        >>> training_mix(None, "control", 1, sources, fresh_real=["real 7", "real 9"]).lines
        [['real 7', 'real 9'], []]
        >>> mix = training_mix(None, "accumulate:equal", 1, sources)
        >>> mix.counts.tolist(), mix.weights.tolist()
        ([3, 2], [0.5, 0.5])
    """
    s = Strategy.parse(strategy)
    g = int(generation)
    if g < 0:
        raise ValueError(f"`generation` must be >= 0, got {generation}.")
    if g > 0 and s.name == "control":  # needs no synthetic source
        if fresh_real is None:
            raise ValueError("the control strategy needs `fresh_real`: the generation's fresh real set "
                             "(see sigma_jax.collapse.data.real_sets).")
        return _only(g, 0, fresh_real)
    if len(sources) < g + 1:
        raise ValueError(f"generation {g} needs sources 0..{g}, got {len(sources)}.")
    if g == 0:
        return _only(0, 0, sources[0])
    if s.name == "replace":
        return _only(g, g, sources[g])
    sizes = [len(x) for x in sources[: g + 1]]
    if s.name == "accumulate":
        chars = np.array([n_chars(x) for x in sources[: g + 1]], np.float64)
        w = np.full(g + 1, 1.0 / (g + 1)) if s.weighting == "equal" else chars / chars.sum()
        return TrainingMix([list(x) for x in sources[: g + 1]], w, np.array(sizes))
    counts = source_counts(s, g, sizes, total=sizes[g])
    lines = [list() for _ in range(g + 1)]
    for i, c in enumerate(counts):
        if c == 0:
            continue
        k = jax.random.fold_in(key, i)
        if c <= sizes[i]:
            idx = np.asarray(jax.random.permutation(k, sizes[i]))[:c]
        else:
            idx = np.asarray(jax.random.randint(k, (int(c),), 0, sizes[i]))
        lines[i] = [sources[i][j] for j in np.sort(idx)]
    lc = np.array([n_chars(x) for x in lines], np.float64)
    return TrainingMix(lines, lc / lc.sum(), np.asarray(counts))


def window_sampler(mix: TrainingMix, tok: CharTokenizer, window: int) -> tuple[WindowSampler, list]:
    """The training-window sampler of a mix, and the token array of each weighted source.

    A source shorter than a window is repeated until one fits (weights unchanged).

    Example:
        >>> mix = training_mix(None, "replace", 0, [["In the beginning God created"]])
        >>> sampler, arrays = window_sampler(mix, CharTokenizer(), 9)
        >>> sampler.sample(jax.random.key(0), (2,), 9).shape, len(arrays)
        ((2, 9), 1)
    """
    arrays, weights = [], []
    for ln, w in zip(mix.lines, mix.weights):
        if w <= 0:
            continue
        a = tok.encode(join_lines(ln))
        if len(a) <= window:
            a = np.tile(a, window // max(len(a), 1) + 2)
        arrays.append(a)
        weights.append(w)
    weights = np.asarray(weights) / np.sum(weights)
    return WindowSampler(arrays, weights), arrays


def stream_prompts(key, arrays: Sequence[np.ndarray], weights, n: int, plen: int, newline_id: int) -> np.ndarray:
    """``n`` prompts of ``plen`` tokens that end with a newline, from weighted token arrays
    (so sampled streams start at a line start).  (n, plen) int32.

    Example:
        >>> tok = CharTokenizer()
        >>> p = stream_prompts(jax.random.key(0), [tok.encode("ab\\ncd\\nef\\n")], [1.0], 3, 4, tok.newline_id)
        >>> p.shape, bool((p[:, -1] == tok.newline_id).all())
        ((3, 4), True)
    """
    k1, k2 = jax.random.split(key)
    src = np.asarray(jax.random.choice(k1, len(arrays), (n,), p=jnp.asarray(weights, jnp.float32)))
    u = np.asarray(jax.random.uniform(k2, (n,)), np.float64)
    out = np.empty((n, plen), np.int32)
    for i in range(n):
        a = arrays[src[i]]
        ends = np.flatnonzero(a[plen - 1:] == newline_id) + plen - 1
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
