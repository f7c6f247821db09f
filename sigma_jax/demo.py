"""The built-in demo: SIGMA tracks a synthetic collapse with a known mechanism.

Six generations of a Gaussian refit chain (``sigma_jax.datasets``), m = 384 like
all-MiniLM-L6-v2, n_k = 1200 "texts" per generation, a fixed observed subset
n_A = 800 (same positions every generation).  Prints the drift table and writes
``report.json`` and (with matplotlib) ``drift.png`` to the output folder.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from sigma_jax import _io, spectral
from sigma_jax.core import sigma
from sigma_jax.report import drift
from sigma_jax.datasets import collapsing_generations

__all__ = ["run_demo"]


def run_demo(out: str = "results/demo", seed: int = 0, n_generations: int = 5, n_samples: int = 1200,
             dim: int = 384, n_sub: int = 800, fit_samples: int = 2000) -> dict:
    """Run the synthetic collapse demo; prints the drift table and writes ``report.json`` (+ ``drift.png``).

    Example:
        >>> import tempfile
        >>> res = run_demo(out=tempfile.mkdtemp(), n_generations=1, n_samples=300, dim=8, n_sub=200,
        ...                fit_samples=40)   # doctest: +ELLIPSIS
        SIGMA on a synthetic collapse ...
        >>> len(res["generations"])
        2
    """
    key = jax.random.key(seed)
    gens = np.asarray(collapsing_generations(jax.random.fold_in(key, 0), n_generations=n_generations,
                                             n_samples=n_samples, dim=dim, fit_samples=fit_samples))
    subset_key = jax.random.fold_in(key, 1)  # one key: the same observed positions every generation
    reports = [sigma(g, subset=n_sub, key=subset_key) for g in gens]
    d = drift(reports)
    rows = []
    print(f"SIGMA on a synthetic collapse (Gaussian refit chain, M={fit_samples}), n_k={n_samples}, n_A={n_sub}, m={dim}")
    print(f"{'gen':>3} {'U_cov':>11} {'band':>7} {'dU':>9} {'G_KF':>9} {'eff.rank':>9} {'eff.rank(c)':>11}  collapse?")
    for g, (rep, emb) in enumerate(zip(reports, gens)):
        er = float(spectral.effective_rank(emb))
        erc = float(spectral.effective_rank(emb, center=True))
        row = dict(generation=g, **rep.to_dict(), dU=float(d.dU[g]), dG=float(d.dG[g]), drift_band=float(d.band[g]),
                   effective_rank=er, effective_rank_centered=erc)
        rows.append(row)
        flag = "yes" if (g and float(d.dU[g]) < -float(d.band[g])) else ("-" if g == 0 else "no")
        print(f"{g:>3} {row['u_cov']:>11.2f} {row['ci_halfwidth']:>7.2f} {row['dU']:>9.2f} {row['g_kf']:>9.3f} "
              f"{er:>9.1f} {erc:>11.1f}  {flag}")
    os.makedirs(out, exist_ok=True)
    _io.write_json_atomic(os.path.join(out, "report.json"), {"generations": rows, "n_sub": n_sub, "dim": dim,
                                                          "n_total": n_samples, "fit_samples": fit_samples})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"wrote {out}/report.json (install matplotlib for the plot)")
        return {"generations": rows}
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    gs = np.arange(len(rows))
    ax[0].plot(gs, d.dU, "o-", label="dU = U_cov(g) - U_cov(0)")
    ax[0].fill_between(gs, -np.asarray(d.band), np.asarray(d.band), alpha=0.3, label="95% band")
    ax[0].set_xlabel("generation")
    ax[0].set_ylabel("nats")
    ax[0].legend()
    ax[0].set_title("SIGMA drift")
    ax[1].plot(gs, [r["effective_rank"] for r in rows], "o-", label="uncentred")
    ax[1].plot(gs, [r["effective_rank_centered"] for r in rows], "s-", label="centred")
    ax[1].set_xlabel("generation")
    ax[1].set_title("effective rank (eigenvalue convention)")
    ax[1].legend()
    fig.tight_layout()
    _io.save_figure_atomic(fig, os.path.join(out, "drift.png"), dpi=120)
    plt.close(fig)
    print(f"wrote {out}/report.json and {out}/drift.png")
    return {"generations": rows}
