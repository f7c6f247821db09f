"""The analysis table: rows of metrics per set, the settings that made them, writers, text tables and plots.

Cells are formatted in one place (:meth:`AnalysisTable.file_table`, :meth:`AnalysisTable.drift_table`)
and rendered as fixed-width text here (the command line) or as Markdown / HTML by
:mod:`sigma_jax.analysis.page`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from sigma_jax import _io

__all__ = ["AnalysisTable", "Cells", "render_text"]


class Cells(NamedTuple):
    """A formatted table: a header, rows of strings, and numbered notes (``[1] ...``) the cells refer to."""

    header: list[str]
    rows: list[list[str]]
    notes: list[str]


def render_text(cells: Cells) -> str:
    """Fixed-width text: right-aligned columns, then the notes.

    Example:
        >>> print(render_text(Cells(["set", "dU"], [["g0", "0.000"], ["g1", "-1.5 [1]"]], ["[1] a note"])))
        set        dU
         g0     0.000
         g1  -1.5 [1]
        [1] a note
    """
    widths = [max(len(h), *(len(r[i]) for r in cells.rows)) if cells.rows else len(h)
              for i, h in enumerate(cells.header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(cells.header, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells.rows]
    return "\n".join(lines + list(cells.notes))


def _nats(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
    return str(v)


class _Notes:
    """Numbers distinct note texts in order of first use."""

    def __init__(self):
        self.texts: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"

    def lines(self) -> list[str]:
        return [f"[{i + 1}] {t}" for i, t in enumerate(self.texts)]


@dataclasses.dataclass
class AnalysisTable:
    """Rows of metrics (one per set; the first is the drift reference), eigenvalues for plots, and settings.

    ``settings`` records what made the numbers: the encoder's config (``None`` without texts),
    ``subset``, ``n_total``, ``delta``, ``rho``, ``normalize``, ``ridge_only``, ``level``,
    ``null_spread``, the PRNG key's data, and for texts ``field``/``column``/``cache_dir``.
    """

    rows: list[dict[str, Any]]
    spectra: dict[str, np.ndarray]
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

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
        """Write the settings and rows as JSON (atomically)."""
        _io.write_json_atomic(path, {"settings": self.settings, "rows": self.rows})
        return path

    def format(self, columns: Sequence[str] = ("name", "u_cov", "ci_halfwidth", "estimate", "ci_low", "ci_high", "dU",
                                                "drift_threshold", "g_kf", "effective_rank",
                                                "effective_rank_centered")) -> str:
        """A fixed-width text table of chosen row columns (raw numbers; :meth:`format_drift` is the readable one)."""
        cols = [c for c in columns if c in self.columns]
        return render_text(Cells(cols, [[_fmt(r.get(c)) for c in cols] for r in self.rows], []))

    # ----------------------------------------------------------------------- readable tables

    @property
    def level_pct(self) -> str:
        level = self.rows[0].get("level", 0.95) if self.rows else 0.95
        return f"{100 * level:g}%"

    def interval_cell(self, row: dict, notes: _Notes) -> str:
        """``estimate [ci_low, ci_high]``, or ``n/a [k]`` with the reason as note k."""
        if row.get("valid"):
            return f"{_nats(row['estimate'])} [{_nats(row['ci_low'])}, {_nats(row['ci_high'])}]"
        return "n/a " + notes.ref("no calibrated interval: " + (row.get("interval_reason") or "invalid"))

    def file_table(self) -> Cells:
        """Per set: source, rows (skipped texts), n_A / n_total, m, the paper's U_cov ± band, the
        calibrated interval for the full-sample U_cov, G_KF and effective ranks."""
        notes = _Notes()
        header = ["set", "source", "n (skipped)", "n_A / n_total", "m", "U_cov ± band (paper)",
                  f"full-sample U_cov [{self.level_pct} CI]", "G_KF", "eff. rank unc. / cent."]
        rows = []
        for r in self.rows:
            skipped = r.get("n_skipped", 0)
            rows.append([
                r["name"], str(r.get("source", "")), f"{r['n']}" + (f" ({skipped})" if skipped else ""),
                f"{r['n_sub']} / {r['n_total']}", str(r["dim"]),
                f"{_nats(r['u_cov'])} ± {_nats(r['ci_halfwidth'])}", self.interval_cell(r, notes), _nats(r["g_kf"]),
                f"{r['effective_rank']:.1f} / {r['effective_rank_centered']:.1f}",
            ])
        return Cells(header, rows, notes.lines())

    def drift_table(self) -> Cells:
        """Per set, relative to the first: dU (paper), dG, the bias-corrected dU estimate, the threshold
        (the larger of the calibrated band and the null, when given) and significance, or why it is undefined."""
        notes = _Notes()
        with_null = any(math.isfinite(r.get("drift_null", math.nan)) for r in self.rows)
        header = ["set", "U_cov ± band", "dU (paper)", "dG", "dU estimate", "band (calibrated)"]
        header += ["null", "threshold", "significant"] if with_null else ["significant"]
        rows = []
        for i, r in enumerate(self.rows):
            if i == 0:
                verdict = "reference"
            elif r.get("drift_defined"):
                verdict = "yes" if r.get("drift_significant") else "no"
            else:
                verdict = "undefined " + notes.ref(r.get("drift_reason") or "no threshold")
            ref = i == 0   # no threshold for the reference itself
            row = [r["name"], f"{_nats(r['u_cov'])} ± {_nats(r['ci_halfwidth'])}", _nats(r["dU"]), _nats(r["dG"]),
                   _nats(r.get("dU_estimate")), "—" if ref else _nats(r.get("drift_band"))]
            if with_null:
                row += ["—" if ref else _nats(r.get("drift_null")), "—" if ref else _nats(r.get("drift_threshold"))]
            rows.append(row + [verdict])
        extra = []
        if len(self.rows) > 1:
            extra.append(f"significant: |dU estimate| (|dU| where no band is defined) beyond the threshold, the larger "
                         f"of the calibrated {self.level_pct} band and the null from re-samples"
                         + ("" if with_null else " (none given)") + ".")
        return Cells(header, rows, notes.lines() + extra)

    def format_drift(self) -> str:
        """The drift table as fixed-width text (what ``sigma-jax analyze`` prints).

        Example:
            >>> import jax, sigma_jax as sj
            >>> sets = {f"g{i}": jax.random.normal(jax.random.key(i), (300, 8)) for i in range(2)}
            >>> print(sj.analyze(sets).format_drift())   # doctest: +ELLIPSIS
             set  U_cov ± band  dU (paper)  ...  significant
              g0  ...
        """
        return render_text(self.drift_table())

    # ----------------------------------------------------------------------- plots

    def figure(self):
        """Spectra (log-log, with the Wolkowicz-Styan bracket on lambda_max) and drift with its threshold."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        for i, (name, lam) in enumerate(self.spectra.items()):
            lam = lam[lam > 0]
            (line,) = ax[0].loglog(np.arange(1, lam.size + 1), lam, label=name)
            r = self.rows[i]
            ax[0].hlines([r["ws_lambda_max_lower"], r["ws_lambda_max_upper"]], 1, 1.6, colors=line.get_color(),
                         linestyles=":")
        delta = float(self.settings.get("delta", 1e-3))
        ax[0].axhline(delta, color="k", lw=0.5, ls="--")
        ax[0].set_ylim(bottom=delta * 1e-3)  # eigenvalues far below the ridge are numerically zero for SIGMA
        ax[0].set_xlabel("rank i")
        ax[0].set_ylabel("eigenvalue of G")
        ax[0].set_title("spectra (dotted: Wolkowicz-Styan bracket on lambda_max; dashed: delta)", fontsize=9)
        ax[0].legend(fontsize=7)
        xs = np.arange(len(self.rows))
        du = np.array([r["dU"] for r in self.rows])
        est = np.array([r.get("dU_estimate", np.nan) for r in self.rows], float)
        thr = np.array([r.get("drift_threshold", np.nan) for r in self.rows], float)
        ax[1].plot(xs, du, "o-", label="dU (paper)")
        if np.isfinite(est[1:]).any():
            ax[1].plot(xs, est, "s", mfc="none", label="dU estimate (bias-corrected)")
        if np.isfinite(thr[1:]).any():
            ax[1].fill_between(xs, -thr, thr, alpha=0.3, label="threshold")
        ax[1].axhline(0.0, color="k", lw=0.5)
        ax[1].set_xticks(xs, [r["name"] for r in self.rows], rotation=30, fontsize=7)
        ax[1].set_ylabel("nats")
        ax[1].set_title("SIGMA drift vs first set" + ("" if np.isfinite(thr[1:]).any() else " (no threshold defined)"),
                        fontsize=9)
        ax[1].legend(fontsize=7)
        fig.tight_layout()
        return fig

    def png_bytes(self, dpi: int = 120) -> bytes:
        """The :meth:`figure` as PNG bytes (for reports that embed it)."""
        import matplotlib.pyplot as plt

        fig = self.figure()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        plt.close(fig)
        return buf.getvalue()

    def plot(self, path: str | None = None):
        """Draw :meth:`figure`; with ``path``, write it atomically (format from the extension) and close it."""
        import matplotlib.pyplot as plt

        fig = self.figure()
        if path is not None:
            _io.save_figure_atomic(fig, path, dpi=120)
            plt.close(fig)
        return fig
