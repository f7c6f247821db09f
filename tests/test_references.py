"""The reference values the code hard-codes are the ones in ``docs/`` (so the docs and the tests cannot drift).

``docs/collapse-references.md`` holds the recipes, exact oracles and published numbers of the model-collapse
literature; ``docs/metric-conventions.md`` the definitions and closed forms of the spectral metrics.  For
every value that a test, an experiment or a docstring hard-codes from them, this file checks

1. that the doc states the value (parsed from the doc's own sentence, not copied here);
2. that the value is right: equal to the closed form at the doc's rounding, or, for numbers from a
   simulation, within 3 combined standard errors (plus half the last printed digit) of a fresh one;
3. that every place which hard-codes it still uses the doc's value.

It also checks that the code cites these docs by a path that exists in the repository.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from sigma_jax import spectral
from sigma_jax.collapse import toy

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE_DOCS = ("collapse-references.md", "sigma-method.md", "metric-conventions.md")
NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


def _doc(name: str) -> str:
    path = DOCS / name
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: the code and tests cite it"
    return path.read_text()


def _source(relpath: str) -> str:
    return (ROOT / relpath).read_text()


def _find(pattern: str, text: str, what: str) -> re.Match:
    match = re.search(pattern, text)
    assert match, f"{what}: no sentence matching {pattern!r} (was the doc or the code reworded?)"
    return match


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(NUMBER, text)]


def _assert_hard_coded(relpath: str, literal: str) -> None:
    src = " ".join(_source(relpath).split())
    assert literal in src, f"{relpath} no longer contains {literal!r}, the value docs/ states"


def _fmt(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


# --------------------------------------------------------------------------- docs/collapse-references.md


def test_bartlett_logdet_drift_per_generation():
    doc = " ".join(_doc("collapse-references.md").split())
    m = _find(rf"\(d=(\d+), M=(\d+): ({NUMBER}) per generation\)", doc, "collapse-references.md, d-dim Gaussian")
    d, n, rate = int(m[1]), int(m[2]), float(m[3])
    assert round(float(toy.gaussian_logdet_theory(1, n, d)[1]), 2) == rate
    assert round(toy.wishart_logdet_offset(n, d), 2) == rate
    _assert_hard_coded("tests/test_toy.py", f"toy.gaussian_logdet_theory(3, {n}, {d})[1] == pytest.approx({rate:g},")
    _assert_hard_coded("sigma_jax/collapse/toy/theory.py", f"(d = {d}, M = {n}: {rate:g} per generation.)")
    _assert_hard_coded("sigma_jax/collapse/toy/theory.py", f"round(wishart_logdet_offset({n}, {d}), 2) # the docs' "
                                                           f"{rate:g} per generation {rate:g}")


def test_rare_token_survival_values():
    doc = " ".join(_doc("collapse-references.md").split())
    m = _find(rf"\(c = 1: ((?:{NUMBER}, )+{NUMBER}) at k = ((?:\d+, )+\d+)\)", doc, "collapse-references.md, rare token")
    values, gens = _numbers(m[1]), [int(g) for g in _numbers(m[2])]
    assert len(values) == len(gens), m[0]
    exact = toy.rare_token_survival_theory(1, max(gens))[gens]
    np.testing.assert_array_equal(np.round(exact, 3), values)  # the doc prints the branching law to 3 d.p.
    gens_lit = "[" + ", ".join(map(str, gens)) + "]"
    _assert_hard_coded("tests/test_toy.py", f"s[{gens_lit}], [{_fmt(values)}]")
    _assert_hard_coded("sigma_jax/collapse/toy/theory.py", f"(count 1: {_fmt(values)} at t = {', '.join(map(str, gens))})")


def _experiment_constants():
    """REF_EFFECTIVE_RANK and the Config defaults of experiments/toy_collapse.py, read without importing it
    (it needs matplotlib)."""
    tree = ast.parse(_source("experiments/toy_collapse.py"))
    ref, config = None, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "REF_EFFECTIVE_RANK" for t in node.targets):
            ref = ast.literal_eval(node.value)
        if isinstance(node, ast.ClassDef) and node.name == "Config":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and item.value is not None:
                    config[item.target.id] = ast.literal_eval(item.value)
    assert ref is not None, "experiments/toy_collapse.py no longer defines REF_EFFECTIVE_RANK"
    return ref, config


def test_effective_rank_reference_run():
    doc = " ".join(_doc("collapse-references.md").split())
    m = _find(rf"Reference \((\d+) chains, Sigma_0 = I_(\d+), eigenvalue-entropy effective rank\): M=(\d+): "
              rf"((?:(?:{NUMBER}, )*{NUMBER} \(t=[\d,]+\)(?:, )?)+)", doc, "collapse-references.md, effective-rank reference")
    chains, d, n = int(m[1]), int(m[2]), int(m[3])
    ref = {}
    for vals, gens in re.findall(rf"((?:{NUMBER}, )*{NUMBER}) \(t=([\d,]+)\)", m[4]):
        ref.update(zip(map(int, gens.split(",")), _numbers(vals)))
    assert len(ref) >= 3, m[4]

    # the experiment that plots these numbers uses the doc's values and setting
    exp_ref, config = _experiment_constants()
    assert exp_ref == ref, f"experiments/toy_collapse.py REF_EFFECTIVE_RANK = {exp_ref}, the doc says {ref}"
    assert (config["gd_chains"], config["gd_dim"], config["gd_samples"]) == (chains, d, n), "reference setting"
    assert config["gd_generations"] >= max(ref)

    # the doc's numbers agree with a fresh run: |mean - ref| <= 3 sqrt(se_run^2 + se_ref^2) + rounding
    c = 1000
    run = toy.gaussian_run(jax.random.key(7), n_generations=max(ref), n_samples=n, n_chains=c, dim=d)
    lam = np.linalg.eigvalsh(np.asarray(run.covariances, np.float64))
    p = lam / lam.sum(-1, keepdims=True)
    er = np.exp(-(p * np.log(p)).sum(-1))  # (G + 1, C) eigenvalue-entropy effective rank of Sigma_t
    for t, value in ref.items():
        mean, sd = er[t].mean(), er[t].std(ddof=1)
        tol = 3 * sd * math.sqrt(1 / c + 1 / chains) + 0.05 + 1e-9
        assert abs(mean - value) <= tol, f"effective rank at t={t}: doc {value}, fresh run {mean:.3f} (tol {tol:.3f})"


# --------------------------------------------------------------------------- docs/metric-conventions.md


def test_vendi_readme_example():
    doc = " ".join(_doc("metric-conventions.md").split())
    m = _find(rf"samples \[([\d,]+)\] with k\(a,b\) = exp\(-\|a-b\|\) gives ~({NUMBER})", doc,
              "metric-conventions.md, Vendi example")
    s, value = np.array(_numbers(m[1])), float(m[2])
    k = np.exp(-np.abs(s[:, None] - s[None, :]))
    assert round(float(spectral.vendi_score_from_kernel(k)), 1) == value
    _assert_hard_coded("tests/test_spectral.py", f"np.array([{', '.join(f'{x:.1f}' for x in s)}])")
    _assert_hard_coded("tests/test_spectral.py", f"vendi_score_from_kernel(k)) == pytest.approx({value:.1f},")


def test_rankme_epsilon():
    doc = " ".join(_doc("metric-conventions.md").split())
    eps = float(_find(rf"RankMe\) \| [^|]*\(eps = ({NUMBER})\)", doc, "metric-conventions.md, RankMe")[1])
    assert inspect.signature(spectral.effective_rank).parameters["eps"].default == eps


# --------------------------------------------------------------------------- citations


def _cited(pattern: str):
    for folder in ("sigma_jax", "tests", "experiments", "notebooks"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".md", ".ipynb") and path.is_file():
                for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    for match in re.finditer(pattern, line):
                        yield f"{path.relative_to(ROOT)}:{lineno}", match


def test_citations_point_at_docs():
    names = "|".join(re.escape(n) for n in REFERENCE_DOCS)
    cites = list(_cited(rf"([\w./-]*?)({names})"))
    assert cites, "no citation of the reference docs found: has the search pattern gone stale?"
    for where, match in cites:
        prefix, name = match[1], match[2]
        assert prefix in ("", "docs/"), f"{where} cites {prefix}{name}; the file is docs/{name}"
        assert (DOCS / name).is_file(), f"{where} cites docs/{name}, which does not exist"


@pytest.mark.parametrize("name", REFERENCE_DOCS)
def test_reference_docs_say_where_they_came_from(name):
    lines = _doc(name).splitlines()
    assert lines[0].startswith("# ") and lines[2].startswith("> Origin:"), f"docs/{name}: title, then its origin"
