"""The one-page report of an analysis (``sigma-jax analyze --html / --md``): settings, tables, plots, meaning.

:func:`write_report` writes HTML (the plots embedded as a base64 PNG) or Markdown (the plots in a
PNG next to it), atomically.  The page holds the settings that made the numbers (encoder and its
config, subset, n_A, n_total, delta, seed), the per-set table, the drift table, the plots and a
plain-language account of what the calibrated interval covers and what it does not.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import os
from pathlib import Path

from sigma_jax import _io
from sigma_jax.analysis.table import AnalysisTable, Cells

__all__ = ["write_report", "report_markdown", "report_html", "settings_cells", "meaning"]

_FORMATS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}


def settings_cells(table: AnalysisTable) -> Cells:
    """The settings as a two-column table (encoder first, with every entry of its config).

    Example:
        >>> t = AnalysisTable([], {}, {"encoder": None, "subset": 450, "delta": 0.001})
        >>> settings_cells(t).rows[:2]
        [['encoder', 'none (all inputs are embeddings)'], ['subset n_A', '450']]
    """
    s, rows = table.settings, []
    cfg = s.get("encoder")
    if cfg is None:
        rows.append(["encoder", "none (all inputs are embeddings)"])
    else:
        name, kind = str(cfg.get("name", "?")), str(cfg.get("kind", cfg.get("class", "?")))
        rows.append(["encoder", name if kind == name else f"{name} ({kind})"])
        rows.append(["encoder: reference settings", _reference_note(cfg)])
        rows += [[f"encoder: {k}", _value(v)] for k, v in cfg.items() if k not in ("name", "kind")]
    n_sub = sorted({r["n_sub"] for r in table.rows})
    n_tot = sorted({r["n_total"] for r in table.rows})
    rows.append(["subset n_A", "all rows" if s.get("subset") is None else _value(s["subset"])])
    if table.rows:
        rows.append(["n_A used (per set)", ", ".join(map(str, n_sub))])
        rows.append(["n_total (per set)", ", ".join(map(str, n_tot))])
    labels = {"delta": "δ (ridge)", "rho": "ρ (row norm bound)", "level": "confidence level", "seed": "seed",
              "key_data": "PRNG key data", "normalize": "L2-normalise rows", "ridge_only": "ridge-only regime",
              "null_spread": "null spread (drift)", "field": "JSONL field", "column": "CSV/TSV column",
              "skip_missing": "skip rows without the field", "cache_dir": "embedding cache", "command": "command",
              "sigma_jax_version": "sigma_jax version", "created": "created"}
    for k, label in labels.items():
        if k in s:
            rows.append([label, _value(s[k])])
    return Cells(["setting", "value"], rows, [])


def _reference_note(cfg: dict) -> str:
    if cfg.get("kind") == "minilm":
        if cfg.get("reference_settings"):
            return "yes: sentence-transformers' settings for all-MiniLM-L6-v2 (256 tokens), as in the SIGMA paper"
        return (f"no: max_length {cfg.get('max_length')} (faster); texts longer than that are truncated, so numbers "
                "differ from the paper's for long texts")
    if cfg.get("semantic") is False:
        return "n/a: NOT a semantic encoder (hashed character n-grams), for smoke runs only"
    return _value(cfg.get("reference_settings", "n/a (not the paper's encoder)"))


def _value(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def meaning(table: AnalysisTable) -> list[str]:
    """Plain-language paragraphs: what the numbers are, what the interval covers, what it does not.

    Example:
        >>> t = AnalysisTable([], {}, {"encoder": None, "level": 0.95})
        >>> [p.split(".")[0] for p in meaning(t)][1]
        'What the interval covers'
    """
    s = table.settings
    pct = f"{100 * s.get('level', 0.95):g}%"
    seed = f" (seed {s['seed']})" if "seed" in s else ""
    null = s.get("null_spread")
    cfg = s.get("encoder") or {}
    observed = ("all of them (n_A = n)" if s.get("subset") is None else
                f"n_A of them at random positions drawn once{seed} and shared by every set")
    out = [
        "What the numbers are. Each set's rows (its texts embedded by the frozen encoder, L2-normalised) are an "
        f"(n × m) matrix. SIGMA observes {observed}, "
        "and reports U_cov = log det(G_A + δI) − m log n_A (Track II, sensitive) and G_KF (Track I, conservative). "
        "The paper's \"U_cov ± band\" is its first-order Theorem-3 band around that subset value; it ignores the "
        "O(m²/n_A) bias of a log-determinant taken from a subsample.",
        f"What the interval covers. \"full-sample U_cov [{pct} CI]\" is a calibrated interval for the U_cov that all "
        "n_total rows of the same set would give, U_full = log det(G_full + δI) − m log n_total. It covers the "
        "uncertainty of observing a uniformly random n_A of the n_total rows, and nothing else. Its estimate "
        "removes the subsampling bias (exact for Gaussian rows, corrected for others by a delete-one jackknife "
        "over the observed rows) and its width is a Student-t multiple of the standard error (plus a stochastic "
        "estimator's own error where one was used). U_full ridges the second moment by δ/n_total while the "
        "paper's U_cov ridges G_A by δ, so for spectra with eigenvalues below the ridge the two can differ by up "
        "to log(n_total/n_A) per such direction; 'dU estimate' compares estimates of U_full. With every row "
        "observed (n_A = n_total) the interval is the exact value, of zero width. It is shown only where it is "
        "calibrated (coverage measured in experiments/coverage_sigma.py): enough rows (n_A ≥ 3 m_eff, n_A ≥ 20 "
        "and n_A > m, where m_eff ≤ m is the effective dimension), at most 10% of the effective dimensions near the "
        "ridge δ·n_A/n_total, the per-row statistics present, and, for stochastic estimates, a small Lanczos "
        "truncation error. Elsewhere the tables give the reason instead of numbers.",
        "What it does not cover. The interval is about this batch of texts. Another batch from the same model "
        "gives another full-sample U_cov: the model's own sampling noise, which no interval from one batch can see "
        "(in this project's runs it was 5-10 times the subset band). So a drift dU between generations means "
        "something only beyond a threshold that includes a null from re-samples: sample the reference generation "
        "again with at least 19 other sampling keys, measure each, and pass "
        "sigma_jax.report.empirical_null(u_resamples, u_reference).quantile as null_spread "
        "(CLI: --null-spread). "
        + (f"This report used a null spread of {null:g} nats." if null is not None else
           "No null was given for this report: \"significant\" here says only that a drift exceeds the "
           "subsampling noise."),
    ]
    if cfg.get("semantic") is False:
        out.append("Encoder. The hashing encoder compares character n-grams, not meaning: its numbers exercise the "
                   "pipeline but say nothing about semantic diversity. Use MiniLM (the default) for conclusions.")
    elif cfg.get("kind") == "minilm" and not cfg.get("reference_settings", True):
        out.append(f"Encoder. MiniLM ran with max_length {cfg.get('max_length')} instead of sentence-transformers' "
                   "256: texts longer than that were truncated, so numbers can differ from the paper's settings.")
    return out


# --------------------------------------------------------------------------- rendering


def _md_cell(v: str) -> str:
    return v.replace("|", "\\|").replace("\n", " ")


def _md_table(cells: Cells) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in cells.header) + " |",
             "|" + "|".join("---" for _ in cells.header) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in cells.rows]
    if cells.notes:
        lines += [""] + [f"- {_md_cell(n)}" for n in cells.notes]
    return "\n".join(lines)


def report_markdown(table: AnalysisTable, *, image: str | None = None, title: str = "SIGMA report") -> str:
    """The page as Markdown; ``image`` is the (relative) path of the plots' PNG, if any.

    Example:
        >>> import jax, sigma_jax as sj
        >>> t = sj.analyze({f"g{i}": jax.random.normal(jax.random.key(i), (300, 8)) for i in range(2)})
        >>> md = report_markdown(t)
        >>> md.splitlines()[0], "## Drift relative to g0" in md
        ('# SIGMA report', True)
    """
    parts = [f"# {title}", "", "## Settings", "", _md_table(settings_cells(table)), "",
             "## Per set", "", _md_table(table.file_table()), ""]
    if table.rows:
        parts += [f"## Drift relative to {table.rows[0]['name']}", "", _md_table(table.drift_table()), ""]
    parts += ["## Plots", "", f"![spectra and drift]({image})" if image else "(no plots: they need matplotlib)", ""]
    parts += ["## What the interval means", ""]
    for p in meaning(table):
        head, _, rest = p.partition(". ")
        parts += [f"**{head}.** {rest}", ""]
    return "\n".join(parts)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;"
        "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        ".notes{font-size:.9em;color:#444}img{max-width:100%}")


def _html_table(cells: Cells) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in cells.header)
    body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>" for r in cells.rows)
    notes = "".join(f"<li>{e(n)}</li>" for n in cells.notes)
    return f"<table><tr>{head}</tr>{body}</table>" + (f"<ul class='notes'>{notes}</ul>" if notes else "")


def report_html(table: AnalysisTable, *, png: bytes | None = None, title: str = "SIGMA report") -> str:
    """The page as one self-contained HTML file; ``png`` (the plots) is embedded as base64.

    Example:
        >>> import jax, sigma_jax as sj
        >>> t = sj.analyze({f"g{i}": jax.random.normal(jax.random.key(i), (300, 8)) for i in range(2)})
        >>> page = report_html(t, png=b"not really a png")
        >>> page.startswith("<!DOCTYPE html>"), "data:image/png;base64," in page
        (True, True)
    """
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style>"
             f"</head><body><h1>{e(title)}</h1>", "<h2>Settings</h2>", _html_table(settings_cells(table)),
             "<h2>Per set</h2>", _html_table(table.file_table())]
    if table.rows:
        parts += [f"<h2>Drift relative to {e(table.rows[0]['name'])}</h2>", _html_table(table.drift_table())]
    parts.append("<h2>Plots</h2>")
    if png:
        parts.append(f"<img alt='spectra and drift' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    else:
        parts.append("<p>(no plots: they need matplotlib)</p>")
    parts.append("<h2>What the interval means</h2>")
    for p in meaning(table):
        head, _, rest = p.partition(". ")
        parts.append(f"<p><b>{e(head)}.</b> {e(rest)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(table: AnalysisTable, path: str | os.PathLike, *, title: str = "SIGMA report") -> Path:
    """Write the one-page report to ``path`` (``.html``/``.htm`` or ``.md``/``.markdown``), atomically.

    HTML embeds the plots (base64 PNG); Markdown writes them to ``<path stem>.png`` next to it.
    Without matplotlib the page says so instead of showing plots.  Records the sigma_jax version
    and the time in the page's settings (``table`` itself is left as it is).  Returns the page's path.

    Example:
        >>> import jax, os, tempfile, sigma_jax as sj
        >>> t = sj.analyze({f"g{i}": jax.random.normal(jax.random.key(i), (300, 8)) for i in range(2)})
        >>> d = tempfile.mkdtemp()
        >>> p = write_report(t, os.path.join(d, "report.md"))
        >>> sorted(os.listdir(d))
        ['report.md', 'report.png']
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"report path {str(path)!r} must end in .html or .md (the format follows the extension).")
    from sigma_jax import __version__

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    table = dataclasses.replace(table, settings={"sigma_jax_version": __version__, "created": created,
                                                 **table.settings})
    try:
        png = table.png_bytes() if table.rows else None
    except ImportError:
        png = None
    if fmt == "html":
        _io.write_text_atomic(path, report_html(table, png=png, title=title))
        return path
    image = None
    if png is not None:
        image_path = path.with_suffix(".png")
        _io.write_bytes_atomic(image_path, png)
        image = image_path.name
    _io.write_text_atomic(path, report_markdown(table, image=image, title=title))
    return path
