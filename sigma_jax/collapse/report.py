"""Plots and a short Markdown report of a collapse run (reads the arms' ``metrics.jsonl``).

Reads files only: :func:`sigma_jax._io.read_jsonl`, NumPy and matplotlib -- it never imports
Flax or the pipeline, so a finished run (or a committed study) is reported on any machine.

Figures (PNG, in the output folder):

* ``collapse_curves.png`` — four panels against generation, one line per arm:
  SIGMA drift ``dU = U_cov(g) - U_cov(0)`` with SIGMA's band (shaded) and the
  generation-0 calibrated null ``null_q95`` (dotted), held-out bits per character,
  effective rank (centred solid, uncentred dashed), word distinct-2.
* ``tail_histograms.png`` — per arm, the histogram of per-continuation NLL under the
  generation-0 model (bits/char), one line per generation (Shumailov et al.'s tails).

:func:`write_report` also writes the study tables of :mod:`sigma_jax.collapse.study`
(``summary.csv``, ``seed_intervals.csv``, ``early_warning.csv``).
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from sigma_jax._io import read_jsonl, save_figure_atomic, write_text_atomic
from sigma_jax.collapse.metrics import NLL_BINS

__all__ = ["load_results", "plot_results", "markdown_report", "write_report"]


def load_results(out_dir: str) -> dict:
    """``{arm: [rows]}`` from ``out_dir/*/metrics.jsonl``.

    Example:
        >>> def row(g, du):                       # the fields the report reads from a metrics row
        ...     return {"generation": g, "sigma_sub": {"u_cov": -80.0 + du, "ci_halfwidth": 2.0}, "dU": du,
        ...             "band": 2.0, "null_q95": 1.0, "threshold": 2.0, "binding": "band",
        ...             "below_band": du < -2.0, "above_band": du > 2.0,
        ...             "bpc_heldout": 2.5, "distinct_2": 0.9, "eff_rank_centred": 30.0, "eff_rank_uncentred": 5.0,
        ...             "nll_gen0_bits": {"mean": 2.4, "p99": 4.0, "hist": [0] * 9 + [8] + [0] * 22}}
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(out, "replace_T0.7_s0"))
        >>> with open(os.path.join(out, "replace_T0.7_s0", "metrics.jsonl"), "w") as fh:
        ...     _ = fh.write(json.dumps(row(0, 0.0)) + "\\n" + json.dumps(row(1, -5.0)) + "\\n")
        >>> res = load_results(out)
        >>> list(res), [r["generation"] for r in res["replace_T0.7_s0"]]
        (['replace_T0.7_s0'], [0, 1])
        >>> import shutil; shutil.rmtree(out)
    """
    res = {}
    for p in sorted(glob.glob(os.path.join(out_dir, "*", "metrics.jsonl"))):
        rows = read_jsonl(p)
        if rows:
            res[os.path.basename(os.path.dirname(p))] = rows
    return res


def plot_results(results: dict, out_dir: str) -> list:
    """Write the two figures; returns their paths.

    Example:
        >>> def row(g, du):                       # the fields the report reads from a metrics row
        ...     return {"generation": g, "sigma_sub": {"u_cov": -80.0 + du, "ci_halfwidth": 2.0}, "dU": du,
        ...             "band": 2.0, "null_q95": 1.0, "threshold": 2.0, "binding": "band",
        ...             "below_band": du < -2.0, "above_band": du > 2.0,
        ...             "bpc_heldout": 2.5, "distinct_2": 0.9, "eff_rank_centred": 30.0, "eff_rank_uncentred": 5.0,
        ...             "nll_gen0_bits": {"mean": 2.4, "p99": 4.0, "hist": [0] * 9 + [8] + [0] * 22}}
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> paths = plot_results({"replace_T0.7_s0": [row(0, 0.0), row(1, -5.0)]}, out)
        >>> [os.path.basename(p) for p in paths]
        ['collapse_curves.png', 'tail_histograms.png']
        >>> import shutil; shutil.rmtree(out)
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (arm, rows) in enumerate(sorted(results.items())):
        c = colors[i % len(colors)]
        g = np.array([r["generation"] for r in rows])
        du = np.array([r["dU"] for r in rows])
        band = np.array([r["band"] for r in rows])
        ax[0, 0].plot(g, du, "o-", color=c, label=arm)
        ax[0, 0].fill_between(g, du - band, du + band, color=c, alpha=0.2)
        ns = rows[0].get("null_q95", 0.0)
        ax[0, 0].axhline(-ns, color=c, ls=":", lw=1)
        ax[0, 1].plot(g, [r["bpc_heldout"] for r in rows], "o-", color=c, label=arm)
        ax[1, 0].plot(g, [r["eff_rank_centred"] for r in rows], "o-", color=c, label=f"{arm} (centred)")
        ax[1, 0].plot(g, [r["eff_rank_uncentred"] for r in rows], "s--", color=c, alpha=0.6, label=f"{arm} (uncentred)")
        ax[1, 1].plot(g, [r["distinct_2"] for r in rows], "o-", color=c, label=arm)
    ax[0, 0].axhline(0, color="k", lw=0.5)
    ax[0, 0].set(title="SIGMA drift dU = U_cov(g) - U_cov(0)\n(shaded: SIGMA band; dotted: -null_q95)",
                 xlabel="generation", ylabel="nats")
    ax[0, 1].set(title="held-out real text", xlabel="generation", ylabel="bits per character")
    ax[1, 0].set(title="effective rank exp(H) of G (embeddings)", xlabel="generation", ylabel="effective rank")
    ax[1, 1].set(title="lexical diversity", xlabel="generation", ylabel="distinct-2 (words)")
    from matplotlib.ticker import MaxNLocator
    for a in ax.flat:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    p = os.path.join(out_dir, "collapse_curves.png")
    save_figure_atomic(fig, p, dpi=110)
    plt.close(fig)
    paths.append(p)

    arms = sorted(results)
    fig, ax = plt.subplots(1, len(arms), figsize=(5.5 * len(arms), 4), squeeze=False)
    centers = (np.asarray(NLL_BINS[:-1]) + np.asarray(NLL_BINS[1:])) / 2
    top = max((i for rows in results.values() for r in rows
               for i, h in enumerate(r["nll_gen0_bits"]["hist"]) if h), default=len(centers) - 1)
    for a, arm in zip(ax[0], arms):
        a.set_xlim(0, NLL_BINS[min(top + 2, len(NLL_BINS) - 1)])
        for r in results[arm]:
            h = np.asarray(r["nll_gen0_bits"]["hist"], float)
            a.semilogy(centers, np.maximum(h / max(h.sum(), 1), 1e-4), label=f"gen {r['generation']}")
        a.set(title=f"{arm}: NLL under generation 0", xlabel="bits per character", ylabel="fraction of texts")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    p = os.path.join(out_dir, "tail_histograms.png")
    save_figure_atomic(fig, p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def markdown_report(results: dict, config: dict | None = None, figures: list | None = None) -> str:
    """A per-arm table of the main numbers and a one-line verdict per arm.

    Example:
        >>> def row(g, du):                       # the fields the report reads from a metrics row
        ...     return {"generation": g, "sigma_sub": {"u_cov": -80.0 + du, "ci_halfwidth": 2.0}, "dU": du,
        ...             "band": 2.0, "null_q95": 1.0, "threshold": 2.0, "binding": "band",
        ...             "below_band": du < -2.0, "above_band": du > 2.0,
        ...             "bpc_heldout": 2.5, "distinct_2": 0.9, "eff_rank_centred": 30.0, "eff_rank_uncentred": 5.0,
        ...             "train_chars": 1000,
        ...             "nll_gen0_bits": {"mean": 2.4, "p99": 4.0, "hist": [0] * 9 + [8] + [0] * 22}}
        >>> md = markdown_report({"replace_T0.7_s0": [row(0, 0.0), row(1, -5.0)]})
        >>> md.splitlines()[0]
        '# Model-collapse run'
        >>> print([ln for ln in md.splitlines() if ln.startswith("| 1 ")][0])
        | 1 | -85.0 ± 2.0 | -5.0 | 1.0 | 2.0 (band) | below | 2.500 | 0.900 | 30.0 / 5.00 | 2.40 / 4.00 | 1000 |
        >>> "first at generation 1" in md
        True
    """
    lines = ["# Model-collapse run", ""]
    if config:
        exp = config.get("experiment", config)
        seeds = config.get("seeds", {})
        lines += [f"- preset `{exp.get('name')}`, corpus `{exp.get('corpus')}`, init `{exp.get('init')}`, "
                  f"n_k = {exp.get('n_measure')}, n_A = {exp.get('n_sub')} (fixed indices, stored), "
                  f"delta = {exp.get('delta')}, null: {exp.get('null_keys')} re-samples of generation 0"]
        for seed, rec in sorted(seeds.items()):
            enc = rec.get("encoder", {})
            fb = f" — FALLBACK from `{enc.get('requested')}`: {enc.get('fallback')}" if enc.get("fallback") else ""
            lines.append(f"- seed {seed}: encoder {enc.get('name')} (m = {enc.get('dim')}){fb}; "
                         f"n_A / m = {rec.get('regime', {}).get('ratio')}")
    lines += ["- U_cov on the fixed subset; band = SIGMA's band of dU (sigma_jax.drift); null = the 95% quantile of "
              "|U_cov - U_cov(0)| over re-samples of generation 0 with other keys; threshold = max(band, null) "
              "(which one binds in brackets). The control band across seeds is in summary.csv.",
              "- effective rank = exp(spectral entropy) of G = AᵀA of the L2-normalised embeddings, centred "
              "(rows minus mean) / uncentred; distinct-2 on words; NLL in bits/char under generation 0; "
              "train_chars = characters of the generation's training set.", ""]
    for arm, rows in sorted(results.items()):
        lines += [f"## {arm}", "",
                  "| gen | U_cov ± band | dU | null | threshold | verdict | bpc | distinct-2 | eff. rank (c / unc) "
                  "| NLL₀ mean / p99 | train_chars |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            s = r["sigma_sub"]
            verdict = "below" if r["below_band"] else ("above" if r["above_band"] else "within")
            if r["generation"] == 0:
                verdict = "-"
            lines.append(f"| {r['generation']} | {s['u_cov']:.1f} ± {s['ci_halfwidth']:.1f} | {r['dU']:+.1f} | "
                         f"{r['null_q95']:.1f} | {r['threshold']:.1f} ({r['binding']}) | {verdict} | "
                         f"{r['bpc_heldout']:.3f} | {r['distinct_2']:.3f} | "
                         f"{r['eff_rank_centred']:.1f} / {r['eff_rank_uncentred']:.2f} | "
                         f"{r['nll_gen0_bits']['mean']:.2f} / {r['nll_gen0_bits']['p99']:.2f} | {r['train_chars']} |")
        first = next((r["generation"] for r in rows if r["below_band"]), None)
        lines += ["", f"Drift below max(band, null) first at generation {first}." if first is not None
                  else "Drift never left max(band, null) downwards in this run.", ""]
    if figures:
        lines += [f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in figures] + [""]
    return "\n".join(lines)


def write_report(out_dir: str) -> tuple[str, list]:
    """Plots, ``report.md`` and the study tables (``summary.csv``, ``seed_intervals.csv``,
    ``early_warning.csv``) for the run in ``out_dir``; returns (report path, figure paths).

    Example:
        >>> def row(g, du):                       # the fields the report reads from a metrics row
        ...     return {"generation": g, "sigma_sub": {"u_cov": -80.0 + du, "ci_halfwidth": 2.0}, "dU": du,
        ...             "band": 2.0, "null_q95": 1.0, "threshold": 2.0, "binding": "band", "below_band": du < -2.0,
        ...             "above_band": du > 2.0, "bpc_heldout": 2.5, "distinct_2": 0.9, "eff_rank_centred": 30.0,
        ...             "eff_rank_uncentred": 5.0, "train_chars": 1000, "train_steps": 10, "strategy": "replace",
        ...             "seed": 0, "temperature": 0.7,
        ...             "nll_gen0_bits": {"mean": 2.4, "p50": 2.4, "p99": 4.0, "hist": [0] * 9 + [8] + [0] * 22}}
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(out, "replace_T0.7_s0"))
        >>> with open(os.path.join(out, "replace_T0.7_s0", "metrics.jsonl"), "w") as fh:
        ...     _ = fh.write(json.dumps(row(0, 0.0)) + "\\n" + json.dumps(row(1, -5.0)) + "\\n")
        >>> path, figs = write_report(out)
        >>> os.path.basename(path), len(figs), os.path.exists(os.path.join(out, "summary.csv"))
        ('report.md', 2, True)
        >>> import shutil; shutil.rmtree(out)
    """
    from sigma_jax.collapse.study import write_tables

    results = load_results(out_dir)
    if not results:
        raise ValueError(f"no metrics.jsonl under {out_dir!r}.")
    cfg = None
    cp = os.path.join(out_dir, "config.json")
    if os.path.exists(cp):
        with open(cp, encoding="utf-8") as fh:
            cfg = json.load(fh)
    figs = plot_results(results, out_dir)
    write_tables(results, out_dir)
    path = os.path.join(out_dir, "report.md")
    write_text_atomic(path, markdown_report(results, cfg, figs))
    return path, figs
