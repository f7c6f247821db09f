"""A run's folder: names, metrics rows, text sets, checkpoints, stored subset indices, the config check.

Layout of ``out_dir`` (every write atomic, see :mod:`sigma_jax._io`)::

    config.json                       the experiment, encoders, measurement regime, arms
    base_s<seed>/subset_indices.json  the fixed n_A-of-n_k subset: drawn once, read back on resume
    base_s<seed>/ckpt_gen0            generation 0 (orbax), gen0_done.json, gen0_T<t>.json (its
                                      measurement and null), synthetic_gen0_T<t>.txt, samples_gen0_T<t>.txt
    <arm>/metrics.jsonl               one row per finished generation (written last)
    <arm>/ckpt/gen<g>, synthetic/gen<g>.txt, samples/gen<g>.txt

Text sets are stored exactly (:func:`save_lines` / :func:`load_lines` round-trip every line,
empty ones included), so a resumed run trains on the same characters.

Example:
    >>> arm_name("control", 1.0, 2)
    'control_T1_s2'
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Sequence

import jax
import numpy as np

from sigma_jax import _io
from sigma_jax.collapse.strategies import Strategy
from sigma_jax.lm.data import join_lines

__all__ = ["arm_name", "fmt_t", "read_metrics", "save_lines", "load_lines", "save_params", "load_params",
           "subset_indices", "open_run"]


def fmt_t(t: float) -> str:
    """A temperature in file names (``0.7``, ``1``).

    Example:
        >>> fmt_t(1.0), fmt_t(0.7)
        ('1', '0.7')
    """
    return f"{t:g}"


def arm_name(strategy: str, temperature: float, seed: int) -> str:
    """Folder name of one arm: strategy (``:`` becomes ``-``), temperature and seed.

    Example:
        >>> arm_name("accumulate:equal", 0.7, 0), arm_name("replace", 1.0, 2)
        ('accumulate-equal_T0.7_s0', 'replace_T1_s2')
    """
    s = Strategy.parse(strategy)
    tail = "-" + strategy.split(":", 1)[1] if isinstance(strategy, str) and ":" in strategy else ""
    return f"{s.name}{tail}_T{fmt_t(temperature)}_s{seed}"


def read_metrics(path: str) -> list:
    """Rows of a ``metrics.jsonl`` in generation order (``[]`` when absent).

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
        >>> read_metrics(path)
        []
        >>> _io.write_jsonl_atomic(path, [{"generation": 0}, {"generation": 1}])
        >>> [r["generation"] for r in read_metrics(path)]
        [0, 1]
    """
    return _io.read_jsonl(path)


def save_lines(path: str, lines: Sequence[str]) -> None:
    """Write a text set, one item a line (atomic).

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "set.txt")
        >>> save_lines(p, ["a", "", "b c"]); load_lines(p)
        ['a', '', 'b c']
    """
    _io.write_text_atomic(path, join_lines(lines))


def load_lines(path: str) -> list:
    """Inverse of :func:`save_lines` (every line, empty ones included).

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "set.txt")
        >>> save_lines(p, []); load_lines(p)
        []
    """
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    if not text:
        return []
    if not text.endswith("\n"):
        raise ValueError(f"{path!r} is not a complete text set (no final newline); delete it to regenerate it.")
    return text[:-1].split("\n")


def save_params(path: str, params) -> None:
    """Orbax checkpoint of an ``nnx`` parameter state (replaces an existing one).

    Example:
        >>> import tempfile
        >>> from flax import nnx
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> _, params = nnx.split(Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, block_size=8),
        ...                                   rngs=nnx.Rngs(0)))
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> save_params(path, params); os.path.isdir(path)
        True
    """
    import orbax.checkpoint as ocp
    from flax import nnx

    path = os.path.abspath(path)
    if os.path.exists(path):
        shutil.rmtree(path)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, nnx.to_pure_dict(params))
    ckptr.wait_until_finished()
    ckptr.close()


def load_params(path: str, template):
    """Restore :func:`save_params`'s checkpoint into the structure of ``template``.

    Example:
        >>> import tempfile
        >>> from flax import nnx
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, block_size=8)
        >>> _, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> _, template = nnx.split(Transformer(cfg, rngs=nnx.Rngs(1)))
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
        >>> save_params(path, params)
        >>> back = load_params(path, template)
        >>> all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))
        True
    """
    import orbax.checkpoint as ocp
    from flax import nnx

    ckptr = ocp.StandardCheckpointer()
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(template))
    pure = ckptr.restore(os.path.abspath(path), target)
    ckptr.close()
    state = jax.tree.map(lambda x: x, template)
    nnx.replace_by_pure_dict(state, pure)
    return state


def subset_indices(path: str, key, n_measure: int, n_sub: int) -> np.ndarray:
    """The fixed subset of ``n_sub`` of ``n_measure`` rows: read from ``path`` when it exists
    (never recomputed), else drawn with ``key`` and stored there.

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "subset_indices.json")
        >>> idx = subset_indices(p, jax.random.key(0), 10, 4)
        >>> bool((subset_indices(p, jax.random.key(99), 10, 4) == idx).all())   # read back, not redrawn
        True
    """
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
        idx = np.asarray(d["indices"], np.int64)
        if d.get("n_measure") != n_measure or idx.shape != (n_sub,) or np.unique(idx).size != n_sub \
                or idx.min() < 0 or idx.max() >= n_measure:
            raise ValueError(f"{path!r} does not hold {n_sub} distinct indices of {n_measure} rows; it belongs to "
                             "another configuration. Use another --out.")
        return idx
    idx = np.sort(np.asarray(jax.random.permutation(key, n_measure))[:n_sub]).astype(np.int64)
    _io.write_json_atomic(path, {"n_measure": int(n_measure), "n_sub": int(n_sub), "indices": idx.tolist()},
                          indent=None)
    return idx


def open_run(out_dir: str, experiment: dict, resume: bool) -> None:
    """Create ``out_dir/config.json`` for a new run, or check that a resumed run's matches.

    Raises ``FileExistsError`` when a run lives there and ``resume`` is False, ``ValueError``
    when ``resume`` is True but the stored experiment differs.

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> open_run(out, {"name": "x"}, resume=False)
        >>> open_run(out, {"name": "x"}, resume=False)
        Traceback (most recent call last):
        ...
        FileExistsError: ... already holds a run; pass resume=True (--resume) or another --out.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "config.json")
    if os.path.exists(path):
        if not resume:
            raise FileExistsError(f"{out_dir!r} already holds a run; pass resume=True (--resume) or another --out.")
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
        if old.get("experiment") != json.loads(json.dumps(experiment)):
            raise ValueError(f"--resume: the config in {path} differs from the requested one; use the same preset "
                             "and options, or another --out.")
        return
    _io.write_json_atomic(path, {"experiment": experiment}, indent=1)
