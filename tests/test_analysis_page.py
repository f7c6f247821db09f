"""The one-page report (sigma_jax.analysis.page): settings, tables, plots and the interval's meaning, HTML and MD."""

import base64
import html
import re

import jax
import numpy as np
import pytest

import sigma_jax as sj
from sigma_jax.analysis import settings_cells, write_report
from tests._textgen import CountingEncoder, random_texts, vocabulary


@pytest.fixture(scope="module")
def table():
    """Three generations of texts, the last two narrower; n_A = 40 of 80 at m = 16: too few rows for a calibrated
    interval where m_eff is near 16, enough where the vocabulary shrank it."""
    rng = np.random.default_rng(20261201)
    vocab = vocabulary(rng)
    gens = {"gen0": random_texts(rng, 80, vocab), "gen1": random_texts(rng, 80, vocab[:3]),
            "gen2": random_texts(rng, 80, vocab[:2])}
    t = sj.analyze(gens, encoder=CountingEncoder(dim=16), subset=40, key=jax.random.key(1), null_spread=2.5,
                   progress=False)
    t.settings["seed"] = 1
    return t


def test_html_page_holds_settings_tables_plot_and_meaning(table, tmp_path):
    assert [r["valid"] for r in table.rows] == [False, True, True]   # a reason instead of numbers, and numbers
    page = write_report(table, tmp_path / "report.html").read_text()
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    for must in ("encoder: dim", "NOT a semantic encoder", "subset n_A", "n_A used (per set)", "n_total (per set)",
                 "δ (ridge)", "seed", "null spread (drift)", "U_cov ± band (paper)", "full-sample U_cov [95% CI]",
                 "Drift relative to gen0", "threshold", "What the interval covers", "What it does not cover",
                 "null from re-samples", "empirical_null", "This report used a null spread of 2.5 nats"):
        assert must in text, must
    for r in table.rows:   # invalid intervals: the reason, not numbers
        if not r["valid"]:
            assert "no calibrated interval: " + r["interval_reason"] in text
        else:
            assert f"{r['estimate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" in text
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1))
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert not [p for p in tmp_path.iterdir() if p.name != "report.html"]   # one self-contained file


def test_markdown_page_with_png_next_to_it(table, tmp_path):
    md = write_report(table, tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG") and "![spectra and drift](r.png)" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| gen")]
    assert len(rows) == 6   # per-set table and drift table
    cells = table.file_table()
    assert rows[0] == "| " + " | ".join(cells.rows[0]) + " |"
    assert "**What it does not cover.**" in md
    with pytest.raises(ValueError, match=r"must end in .html or .md"):
        write_report(table, tmp_path / "r.pdf")


def test_settings_name_the_encoders_reference_settings():
    for cfg, note in (({"kind": "minilm", "name": "all-MiniLM-L6-v2", "max_length": 256, "reference_settings": True},
                       "yes: sentence-transformers' settings"),
                      ({"kind": "minilm", "name": "all-MiniLM-L6-v2", "max_length": 128, "reference_settings": False},
                       "no: max_length 128 (faster); texts longer than that are truncated")):
        rows = dict(settings_cells(sj.analysis.AnalysisTable([], {}, {"encoder": cfg})).rows)
        assert rows["encoder"] == "all-MiniLM-L6-v2 (minilm)" and rows["encoder: reference settings"].startswith(note)
        assert rows["encoder: max_length"] == str(cfg["max_length"])
