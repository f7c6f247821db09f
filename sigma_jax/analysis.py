"""One-call analysis for people who think in tables (WeightWatcher-style).

::

    table = sigma_jax.analyze({"gen0": emb0, "gen1": emb1, "gen2": "gen2.npy"}, subset=800, key=jax.random.key(0))
    table.rows            # list of dicts, one per embedding set (first = reference for drift)
    table.to_pandas()     # when pandas is installed
    table.to_csv("metrics.csv"); table.to_json("metrics.json")
    table.plot("analysis.png")   # eigenvalue spectra with bounds, drift with band

Every row holds the SIGMA report (``logdet``, ``u_cov`` +/- ``ci_halfwidth``,
``g_kf``, sandwich, ``bias``), drift against the first set (``dU`` with its band,
``dG``), and the spectral metrics of ``sigma_jax.spectral`` in both the uncentred
and the centred (``*_centered``) form, plus the Wolkowicz-Styan and Gershgorin
brackets on the extreme eigenvalues.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from sigma_jax import _io, bounds, spectral
from sigma_jax.core import sigma
from sigma_jax.report import drift

__all__ = ["AnalysisTable", "analyze"]


@dataclasses.dataclass
class AnalysisTable:
    """Rows of metrics (one per embedding set) plus the eigenvalues for plots."""

    rows: list[dict[str, Any]]
    spectra: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.rows:
            cols += [c for c in r if c not in cols]
        return cols

    def to_pandas(self):
        """A ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("to_pandas() needs pandas: `pip install pandas`; rows are in `.rows`.") from err
        return pd.DataFrame(self.rows, columns=self.columns)

    def to_csv(self, path: str) -> str:
        """Write the rows as CSV (atomically)."""
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=self.columns)
        w.writeheader()
        w.writerows(self.rows)
        _io.write_text_atomic(path, buf.getvalue())
        return path

    def to_json(self, path: str) -> str:
        """Write the rows as JSON (atomically)."""
        _io.write_json_atomic(path, {"rows": self.rows})
        return path

    def format(self, columns: Sequence[str] = ("name", "u_cov", "ci_halfwidth", "dU", "drift_band", "g_kf",
                                                "effective_rank", "effective_rank_centered")) -> str:
        """A fixed-width text table of chosen columns."""
        cols = [c for c in columns if c in self.columns]
        cells = [[_fmt(r.get(c)) for c in cols] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def plot(self, path: str | None = None):
        """Spectra (log-log, with the Wolkowicz-Styan bracket on lambda_max) and drift with its band."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        for i, (name, lam) in enumerate(self.spectra.items()):
            lam = lam[lam > 0]
            (line,) = ax[0].loglog(np.arange(1, lam.size + 1), lam, label=name)
            r = self.rows[i]
            ax[0].hlines([r["ws_lambda_max_lower"], r["ws_lambda_max_upper"]], 1, 1.6, colors=line.get_color(),
                         linestyles=":")
        ax[0].set_xlabel("rank i")
        ax[0].set_ylabel("eigenvalue of G")
        ax[0].set_title("spectra (dotted: Wolkowicz-Styan bracket on lambda_max)")
        ax[0].legend(fontsize=7)
        xs = np.arange(len(self.rows))
        du = np.array([r["dU"] for r in self.rows])
        band = np.array([r["drift_band"] for r in self.rows])
        ax[1].plot(xs, du, "o-", label="dU")
        ax[1].fill_between(xs, -band, band, alpha=0.3, label="band")
        ax[1].set_xticks(xs, [r["name"] for r in self.rows], rotation=30, fontsize=7)
        ax[1].set_title("SIGMA drift vs first set")
        ax[1].legend()
        fig.tight_layout()
        if path is not None:
            _io.save_figure_atomic(fig, path, dpi=120)
            plt.close(fig)
        return fig


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
    return str(v)


def _named_inputs(inputs) -> list[tuple[str, Any]]:
    if isinstance(inputs, (str, os.PathLike)) and os.path.isdir(inputs):
        files = sorted(f for f in os.listdir(inputs) if f.endswith((".npy", ".npz")))
        if not files:
            raise ValueError(f"folder {inputs!r} holds no .npy/.npz files.")
        return [(os.path.splitext(f)[0], os.path.join(inputs, f)) for f in files]
    if isinstance(inputs, Mapping):
        return list(inputs.items())
    if isinstance(inputs, (str, os.PathLike)) or hasattr(inputs, "shape"):
        inputs = [inputs]
    out = []
    for i, x in enumerate(inputs):
        name = os.path.splitext(os.path.basename(x))[0] if isinstance(x, (str, os.PathLike)) else f"set{i}"
        out.append((name, x))
    if not out:
        raise ValueError("`inputs` is empty; pass embedding arrays, .npy/.npz paths, or a folder of them.")
    return out


def analyze(inputs, *, subset: int | None = None, key=None, n_total: int | None = None, delta: float = 1e-3,
            rho: float = 1.0, normalize: bool = True, ridge_only: bool = False,
            null_spread: float | None = None) -> AnalysisTable:
    """SIGMA and spectral metrics of several embedding sets, as a table.

    Each set's Gram matrix is formed once for its spectra (:func:`sigma_jax.spectral.spectra`:
    uncentred and centred eigenvalues, the bounds, the Vendi score) and once on the observed
    subset for the SIGMA report.

    Args:
        inputs: a mapping ``name -> array or path``, a sequence of arrays/paths, or a folder of
            ``.npy``/``.npz`` files (sorted by name: name generations ``gen00``, ``gen01``, ...).
        subset, key, n_total, delta, rho, normalize, ridge_only: as in :func:`sigma_jax.sigma` (the
            same ``key`` for every set, so the observed positions match across sets).
        null_spread: optional re-sampling spread for the drift band (see :func:`sigma_jax.drift`).

    Example:
        >>> sets = {f"g{i}": jax.random.normal(jax.random.key(i), (300, 8)) for i in range(2)}
        >>> analyze(sets).rows[1]["name"]
        'g1'
    """
    named = _named_inputs(inputs)
    if subset is not None and key is None:
        key = jax.random.key(0)
    rows, spectra, reports = [], {}, []
    for name, x in named:
        emb = _io.load_embeddings(x) if isinstance(x, (str, os.PathLike)) else x
        rep = sigma(emb, subset=subset, key=key, n_total=n_total, delta=delta, rho=rho, normalize=normalize,
                    ridge_only=ridge_only)
        reports.append(rep)
        sp = spectral.spectra(emb, normalize=normalize)
        lam, lamc, g = np.asarray(sp.uncentred), np.asarray(sp.centred), sp.gram
        ws, gg = bounds.wolkowicz_styan(g), bounds.gershgorin(g)
        row = {"name": str(name), "n": int(emb.shape[0]), "dim": int(emb.shape[1])}
        row.update({k: v for k, v in rep.to_dict().items() if k not in ("dim",)})
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
        rows.append(row)
        spectra[str(name)] = lam
    d = drift(reports, null_spread=null_spread)
    for i, row in enumerate(rows):
        row["dU"], row["dG"], row["drift_band"] = float(d.dU[i]), float(d.dG[i]), float(d.band[i])
        row["drift_significant"] = bool(d.significant[i])
    return AnalysisTable(rows, spectra)
