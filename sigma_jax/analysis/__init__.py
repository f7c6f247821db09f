"""One-call analysis for people who think in tables (WeightWatcher-style): texts or embeddings in, report out.

::

    table = sigma_jax.analyze(["gen0.txt", "gen1.jsonl"], subset=450, key=jax.random.key(0))   # MiniLM
    table = sigma_jax.analyze({"gen0": emb0, "gen1": texts1, "gen2": "gen2.npy"}, subset=800,
                              key=jax.random.key(0), encoder="minilm", cache_dir="run/embed_cache")
    table.rows            # list of dicts, one per set (first = reference for drift)
    table.settings        # encoder config, subset, delta, key, ...
    print(table.format_drift())
    table.to_pandas()     # when pandas is installed
    table.to_csv("metrics.csv"); table.to_json("metrics.json")
    table.plot("analysis.png")                      # spectra with bounds, drift with its threshold
    write_report(table, "report.html")              # the one-page report (or .md)

Every row holds the SIGMA report (``logdet``, the paper's ``u_cov`` +/- ``ci_halfwidth``, the
calibrated interval ``estimate`` [``ci_low``, ``ci_high``] for the full-sample U_cov with
``valid`` / ``interval_reason``, ``g_kf``, sandwich, ``bias``), drift against the first set
(``dU``, ``dG``, ``dU_estimate``, ``drift_band``, ``drift_null``, ``drift_threshold``,
``drift_significant``, ``drift_defined``, ``drift_reason``), the spectral metrics of
``sigma_jax.spectral`` in both the uncentred and the centred (``*_centered``) form, the
Wolkowicz-Styan and Gershgorin brackets on the extreme eigenvalues, and where the set came
from (``source``, ``kind``, ``n_skipped``).

Modules: :mod:`~sigma_jax.analysis.sources` (reading, checking and embedding the inputs),
:mod:`~sigma_jax.analysis.compute` (:func:`analyze`), :mod:`~sigma_jax.analysis.table`
(:class:`AnalysisTable`), :mod:`~sigma_jax.analysis.page` (:func:`write_report`).
"""

from sigma_jax.analysis.compute import DEFAULT_ENCODER, analyze
from sigma_jax.analysis.page import meaning, report_html, report_markdown, settings_cells, write_report
from sigma_jax.analysis.sources import (EMBEDDING_EXTENSIONS, InputSet, check_inputs, collect_inputs, embed_inputs,
                                        user_cache_dir)
from sigma_jax.analysis.table import AnalysisTable, Cells, render_text

__all__ = ["AnalysisTable", "analyze", "write_report", "report_markdown", "report_html", "settings_cells",
           "meaning", "Cells", "render_text", "InputSet", "collect_inputs", "check_inputs", "embed_inputs",
           "user_cache_dir", "DEFAULT_ENCODER", "EMBEDDING_EXTENSIONS"]
