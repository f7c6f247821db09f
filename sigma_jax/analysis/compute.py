"""The analysis itself: per set one spectra pass and one SIGMA report, then drift against the first set."""

from __future__ import annotations

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import bounds, spectral
from sigma_jax.analysis.sources import InputSet, check_inputs, collect_inputs, embed_inputs
from sigma_jax.analysis.table import AnalysisTable
from sigma_jax.core import sigma
from sigma_jax.encoders import encoder_config, get_encoder
from sigma_jax.report import drift

__all__ = ["analyze", "DEFAULT_ENCODER"]

#: The encoder used when texts are given and ``encoder`` is not: the SIGMA paper's all-MiniLM-L6-v2
#: at sentence-transformers' settings (256 tokens).
DEFAULT_ENCODER = "minilm"


def analyze(inputs, *, subset: int | None = None, key=None, n_total: int | None = None, delta: float = 1e-3,
            rho: float = 1.0, normalize: bool = True, ridge_only: bool = False, level: float = 0.95,
            null_spread: float | None = None, encoder=None, cache_dir: str | os.PathLike | None = None,
            field: str = "text", column: str = "text", skip_missing: bool = False, batch_size: int = 64,
            progress: bool = True) -> AnalysisTable:
    """SIGMA and spectral metrics of several sets -- embeddings or texts -- as a table.

    Texts are embedded with ``encoder`` first (every input is read and checked before anything
    is embedded).  Each set's Gram matrix is then formed once for its spectra
    (:func:`sigma_jax.spectral.spectra`: uncentred and centred eigenvalues, the bounds, the
    Vendi score) and once on the observed subset for the SIGMA report (:func:`sigma_jax.sigma`).

    Args:
        inputs: a mapping ``name -> input``, a sequence of inputs, or one input.  An input is an
            (n, m) array, a ``.npy``/``.npz`` path, a text file (``.txt`` one text per line;
            ``.jsonl`` with the text under ``field``; ``.csv``/``.tsv`` with a ``column``), ``"-"``
            (stdin), a folder of embedding files or of text files (natural name order), a list of
            str (the texts of one set) or a :class:`~sigma_jax.texts.TextSet`.  A flat list of
            str is a list of paths: wrap one list of texts as ``[texts]``.
        subset, key, n_total, delta, rho, normalize, ridge_only, level: as in :func:`sigma_jax.sigma`
            (the same ``key`` for every set, so the observed positions match across sets; a
            ``subset`` count needs ``key``).
        null_spread: the re-sampling null for the drift threshold (see :func:`sigma_jax.drift`).
        encoder: for texts: a registered name (``"minilm"``, ``"hashing"``) or an encoder object,
            e.g. ``sigma_jax.encoders.get_encoder("minilm", max_length=128)`` (faster, truncates
            texts over 128 tokens; recorded).  Default ``"minilm"`` at the reference settings.
        cache_dir: folder caching the texts' embeddings (keyed by texts and encoder settings), or
            None for no cache.  ``sigma_jax.analysis.user_cache_dir()`` is the per-user one.
        field, column, skip_missing: how text files are read (:func:`sigma_jax.texts.read_texts`).
        batch_size, progress: of the embedding pass (progress bars need tqdm).

    Returns:
        An :class:`AnalysisTable`; each row also records ``source``, ``kind`` (``"texts"`` or
        ``"embeddings"``) and ``n_skipped`` (texts skipped while reading), and ``settings``
        the encoder's config.

    Raises:
        ValueError / TypeError / FileNotFoundError: unreadable inputs (one-line messages naming the
            file, the line and the fix), sets of different dimension, fewer rows than ``subset``
            needs, ``n_A <= m`` without ``ridge_only``.

    Example:
        >>> sets = {f"g{i}": jax.random.normal(jax.random.key(i), (300, 8)) for i in range(2)}
        >>> analyze(sets).rows[1]["name"]
        'g1'
        >>> from sigma_jax.encoders import HashingEncoder
        >>> texts = [f"text number {i} about {w}" for i in range(40) for w in ("cats", "dogs")]
        >>> t = analyze({"gen0": texts, "gen1": texts[:20] * 4}, encoder=HashingEncoder(dim=16), progress=False)
        >>> [(r["name"], r["kind"], r["n"]) for r in t.rows], t.rows[1]["dU"] < 0
        ([('gen0', 'texts', 80), ('gen1', 'texts', 80)], True)
    """
    sets = collect_inputs(inputs, field=field, column=column, skip_missing=skip_missing)
    counted = isinstance(subset, (int, np.integer)) and not isinstance(subset, bool)
    if counted and key is None:
        raise ValueError(f"`subset`={int(subset)} draws the observed rows at random and needs `key` (e.g. "
                         "`key=jax.random.key(0)`; CLI: --seed); reuse it every generation so the subset stays fixed.")
    has_texts = any(s.kind == "texts" for s in sets)
    enc = None
    if has_texts:
        enc = get_encoder(DEFAULT_ENCODER if encoder is None else encoder)
    elif encoder is not None:
        warnings.warn("`encoder` is not used: no input holds texts (all are embeddings).", UserWarning, stacklevel=2)
    check_inputs(sets, text_dim=None if enc is None else int(enc.dim), subset=subset, n_total=n_total,
                 ridge_only=ridge_only, encoder_name=getattr(enc, "name", "the encoder"))
    if has_texts:
        sets = embed_inputs(sets, enc, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
    rows, spectra, reports = [], {}, []
    for s in sets:
        row, lam, rep = _measure(s, subset=subset, key=key, n_total=n_total, delta=delta, rho=rho,
                                 normalize=normalize, ridge_only=ridge_only, level=level)
        rows.append(row)
        spectra[s.name] = lam
        reports.append(rep)
    d = drift(reports, null_spread=null_spread)
    reasons = d.reasons()
    for i, row in enumerate(rows):
        row["dU"], row["dG"] = float(d.dU[i]), float(d.dG[i])
        row["dU_estimate"], row["drift_band"] = float(d.dU_estimate[i]), float(d.band[i])
        row["drift_null"], row["drift_threshold"] = float(d.null[i]), float(d.threshold[i])
        row["drift_significant"], row["drift_defined"] = bool(d.significant[i]), bool(d.defined[i])
        row["drift_reason"] = reasons[i]
    settings = _settings(enc, subset=subset, key=key, n_total=n_total, delta=delta, rho=rho, normalize=normalize,
                         ridge_only=ridge_only, level=level, null_spread=null_spread)
    if has_texts:
        settings.update(field=field, column=column, skip_missing=skip_missing,
                        cache_dir=None if cache_dir is None else os.path.abspath(cache_dir))
    return AnalysisTable(rows, spectra, settings)


def _measure(s: InputSet, *, subset, key, n_total, delta, rho, normalize, ridge_only, level):
    """One set's row (SIGMA report + spectral metrics + bounds), its uncentred spectrum and its report."""
    emb = s.embeddings
    rep = sigma(emb, subset=subset, key=key, n_total=n_total, delta=delta, rho=rho, normalize=normalize,
                ridge_only=ridge_only, level=level)
    sp = spectral.spectra(emb, normalize=normalize)
    lam, lamc, g = np.asarray(sp.uncentred), np.asarray(sp.centred), sp.gram
    ws, gg = bounds.wolkowicz_styan(g), bounds.gershgorin(g)
    row = {"name": s.name, "source": s.source, "kind": s.kind, "n": int(emb.shape[0]), "dim": int(emb.shape[1]),
           "n_skipped": 0 if s.texts is None else int(s.texts.n_skipped)}
    row.update({k: v for k, v in rep.to_dict().items() if k not in ("dim",)})
    row["interval_reason"] = "; ".join(rep.reasons())
    for suffix, ev in (("", lam), ("_centered", lamc)):
        row[f"effective_rank{suffix}"] = float(spectral.effective_rank(ev))
        row[f"effective_rank_singular{suffix}"] = float(spectral.effective_rank(ev, convention="singular"))
        row[f"spectral_entropy{suffix}"] = float(spectral.spectral_entropy(ev))
        row[f"participation_ratio{suffix}"] = float(spectral.participation_ratio(ev))
    row["stable_rank"] = float(spectral.stable_rank(lam))
    row["condition_number"] = float(spectral.condition_number(lam, delta=delta))
    # the Vendi score's cosine kernel always normalises rows: reuse the spectrum when it did too
    row["vendi_score"] = float(spectral.vendi_score_from_spectrum(lam) if normalize else spectral.vendi_score(emb))
    row["lambda_max"], row["lambda_min"] = float(lam[0]), float(lam[-1])
    row["ws_lambda_max_lower"], row["ws_lambda_max_upper"] = float(ws.lambda_max.lower), float(ws.lambda_max.upper)
    row["ws_lambda_min_lower"], row["ws_lambda_min_upper"] = float(ws.lambda_min.lower), float(ws.lambda_min.upper)
    row["gershgorin_lambda_max_upper"] = float(gg.lambda_max.upper)
    row["hadamard_logdet_upper"] = float(bounds.hadamard(g, delta=delta))
    return row, lam, rep


def _settings(enc, *, subset, key, n_total, delta, rho, normalize, ridge_only, level, null_spread) -> dict:
    """JSON-able record of what made the numbers."""
    if subset is None or (isinstance(subset, (int, np.integer)) and not isinstance(subset, bool)):
        sub = None if subset is None else int(subset)
    else:
        sub = f"{int(np.shape(subset)[0])} given indices"
    key_data = None
    if key is not None:
        k = key if hasattr(key, "dtype") else jnp.asarray(key)
        key_data = np.asarray(jax.random.key_data(k) if jnp.issubdtype(k.dtype, jax.dtypes.prng_key) else k).tolist()
    return {"encoder": None if enc is None else encoder_config(enc), "subset": sub, "key_data": key_data,
            "n_total": None if n_total is None else int(n_total), "delta": float(delta), "rho": float(rho),
            "normalize": bool(normalize), "ridge_only": bool(ridge_only), "level": float(level),
            "null_spread": None if null_spread is None else float(null_spread)}
