"""Toy model collapse: simulation vs exact theory, replace vs accumulate.

Runs the :mod:`sigma_jax.collapse.toy` chains and writes, into ``--out`` (default ``results/toy/``):

* ``variance.png``        1-D Gaussian ``E[sigma_t^2]`` (MLE), replace vs accumulate, with theory;
* ``logdet.png``          d = 32, M = 64 Gaussian: ``E[log det Sigma_t]`` and SIGMA's ``u_cov`` drift of the
                          centred draws (embedding view), with the Bartlett law;
* ``effective_rank.png``  effective rank of ``Sigma_t`` and of the draws' Gram matrix;
* ``collision.png``       token collision probability ``E[sum p_t^2]``, with theory for both strategies;
* ``rare_token.png``      survival of a token seen once, with the exact and the branching-process laws;
* ``regression.png``      linear-regression relabelling ``E||w_t - w*||^2``;
* ``table.md``            theory vs simulation (mean +- standard error, z-score) at selected generations;
* ``metrics.json``        the curves behind the plots, and ``config.json``.

Every file is written to a temporary name in the output folder and renamed into place.

Usage (about a minute on 2 CPU cores)::

    .venv/bin/python -m experiments.toy_collapse --out results/toy
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from sigma_jax.collapse import toy  # noqa: E402

STRATS = ("replace", "accumulate")
COLORS = {"replace": "tab:red", "accumulate": "tab:blue"}
REF_EFFECTIVE_RANK = {0: 32.0, 1: 24.7, 2: 20.0, 5: 12.3, 10: 7.5}  # docs/collapse-references.md (200 chains)


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    # 1-D Gaussian
    g1_generations: int = 30
    g1_samples: int = 20
    g1_chains: int = 20000
    # d-dim Gaussian / embedding view (the reference setting of docs/collapse-references.md)
    gd_generations: int = 10
    gd_samples: int = 64
    gd_dim: int = 32
    gd_chains: int = 200
    gd_delta: float = 1e-8  # ridge for the embedding view; the SIGMA default 1e-3 is shown beside it
    # categorical
    cat_generations: int = 30
    cat_samples: int = 200
    cat_vocab: int = 50
    cat_zipf: float = 1.1
    cat_chains: int = 4000
    # rare token
    rare_generations: int = 20
    rare_samples: int = 1000
    rare_chains: int = 4000
    # regression
    reg_generations: int = 20
    reg_samples: int = 30
    reg_dim: int = 5
    reg_noise: float = 1.0
    reg_chains: int = 4000

    @classmethod
    def quick(cls) -> "Config":
        return cls(g1_chains=4000, gd_chains=64, cat_chains=1000, rare_chains=1000, reg_chains=1000,
                   g1_generations=15, cat_generations=15, rare_generations=10, reg_generations=10)


# --------------------------------------------------------------------------- atomic writes


def _atomic(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_text(path: str, text: str) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    _atomic(path, w)


def save_figure(fig, path: str) -> None:
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)


# --------------------------------------------------------------------------- helpers


def mean_se(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over chains (axis 1) of a (G + 1, C) array."""
    x = np.asarray(x, np.float64)
    return x.mean(1), x.std(1, ddof=1) / np.sqrt(x.shape[1])


def band(ax, t, x, label, color, marker="o"):
    m, se = mean_se(x)
    ax.errorbar(t, m, yerr=2 * se, fmt=marker, ms=3, capsize=2, color=color, label=label)
    return m, se


class Table:
    def __init__(self):
        self.rows = []

    def add(self, quantity, strategy, t, theory, mean, se):
        z = (mean - theory) / se if se > 0 else float("nan")
        self.rows.append((quantity, strategy, int(t), float(theory), float(mean), float(se), float(z)))

    def markdown(self) -> str:
        out = ["| quantity | strategy | t | theory | simulation (mean +- SE) | z |", "|---|---|---|---|---|---|"]
        for q, s, t, th, m, se, z in self.rows:
            out.append(f"| {q} | {s} | {t} | {th:.4g} | {m:.4g} +- {se:.2g} | {z:+.2f} |")
        return "\n".join(out)


def pick(n: int) -> list[int]:
    return sorted({1, 2, 5, 10, n} & set(range(1, n + 1)))


# --------------------------------------------------------------------------- experiments


def run(cfg: Config, out: str) -> dict:
    os.makedirs(out, exist_ok=True)
    root = jax.random.key(cfg.seed)
    keys = {name: jax.random.fold_in(root, i) for i, name in enumerate(
        ["g1", "gd", "cat", "rare", "reg"])}
    table, metrics, timings = Table(), {}, {}

    # ---- 1-D Gaussian variance
    t0 = time.time()
    g, m = cfg.g1_generations, cfg.g1_samples
    t = np.arange(g + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    metrics["variance"] = {}
    for i, s in enumerate(STRATS):
        v = toy.gaussian_chain(jax.random.fold_in(keys["g1"], i), n_generations=g, n_samples=m,
                               n_chains=cfg.g1_chains, strategy=s)
        th = toy.gaussian_variance_theory(g, m, strategy=s)
        mean, se = band(ax, t, v, f"{s} (simulation)", COLORS[s])
        ax.plot(t, th, "-", color=COLORS[s], lw=1, label=f"{s} (theory)")
        for k in pick(g):
            table.add("E[sigma_t^2], 1-D MLE", s, k, th[k], mean[k], se[k])
        metrics["variance"][s] = {"theory": th.tolist(), "mean": mean.tolist(), "se": se.tolist()}
    ax.set(xlabel="generation t", ylabel="E[sigma_t^2]", yscale="log",
           title=f"1-D Gaussian, MLE refit, M={m}, {cfg.g1_chains} chains")
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(out, "variance.png"))
    timings["variance"] = time.time() - t0

    # ---- d-dim Gaussian: log det, SIGMA u_cov drift, effective rank
    t0 = time.time()
    g, m, d = cfg.gd_generations, cfg.gd_samples, cfg.gd_dim
    t = np.arange(g + 1)
    views = {s: toy.embedding_view(jax.random.fold_in(keys["gd"], i), n_generations=g, n_samples=m,
                                   n_chains=cfg.gd_chains, dim=d, strategy=s, delta=cfg.gd_delta)
             for i, s in enumerate(STRATS)}
    # the same replace chains measured with SIGMA's default ridge: u_cov saturates once the eigenvalues of
    # G_A = M Sigma_hat approach delta (here after ~8 generations)
    paper = toy.embedding_view(jax.random.fold_in(keys["gd"], 0), n_generations=g, n_samples=m,
                               n_chains=cfg.gd_chains, dim=d, strategy="replace", delta=1e-3)
    law = toy.gaussian_logdet_theory(g, m, d)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    metrics["logdet"] = {"theory_replace": law.tolist()}
    for s, v in views.items():
        mean, se = band(ax, t, v.logdet_model, f"{s}: log det Sigma_t", COLORS[s])
        mu, su = band(ax, t, v.drift, f"{s}: SIGMA dU (u_cov drift)", COLORS[s], marker="x")
        metrics["logdet"][s] = {"logdet_mean": mean.tolist(), "logdet_se": se.tolist(),
                                "dU_mean": mu.tolist(), "dU_se": su.tolist()}
        if s == "replace":
            for k in pick(g):
                table.add(f"E[log det Sigma_t], d={d}, M={m}", s, k, law[k], mean[k], se[k])
                table.add("SIGMA dU_t = u_cov_t - u_cov_0", s, k, law[k], mu[k], su[k])
        du = v.u_cov - v.logdet_model
        dm, ds = mean_se(du)
        table.add("u_cov_t - log det Sigma_t (Bartlett offset)", s, g, v.offset, dm[g], ds[g])
    mp, sp = band(ax, t, paper.drift, "replace: SIGMA dU, delta=1e-3", "tab:orange", marker="+")
    metrics["logdet"]["replace_delta_1e-3"] = {"dU_mean": mp.tolist(), "dU_se": sp.tolist()}
    for k in pick(g):
        table.add("SIGMA dU_t with delta=1e-3 (ridge floor)", "replace", k, law[k], mp[k], sp[k])
    ax.plot(t, law, "k-", lw=1, label=f"theory (replace): {law[1]:.2f} t")
    ax.set(xlabel="generation t", ylabel="nats", title=f"log-det drift, d={d}, M={m}, {cfg.gd_chains} chains, "
           f"delta={cfg.gd_delta:g}")
    ax.legend(fontsize=7)
    save_figure(fig, os.path.join(out, "logdet.png"))

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    metrics["effective_rank"] = {}
    for s, v in views.items():
        mean, se = band(ax, t, v.model_effective_rank, f"{s}: Sigma_t", COLORS[s])
        me, _ = band(ax, t, v.effective_rank, f"{s}: centred draws' Gram", COLORS[s], marker="x")
        metrics["effective_rank"][s] = {"model_mean": mean.tolist(), "model_se": se.tolist(),
                                        "draws_mean": me.tolist()}
        if s == "replace":
            for k, ref in REF_EFFECTIVE_RANK.items():
                if k <= g:
                    table.add("effective rank of Sigma_t (reference run, 1 d.p.)", s, k, ref, mean[k], se[k])
    ax.plot(list(REF_EFFECTIVE_RANK), list(REF_EFFECTIVE_RANK.values()), "ks", mfc="none", label="reference values")
    ax.set(xlabel="generation t", ylabel="effective rank (exp entropy)", title=f"effective rank, d={d}, M={m}")
    ax.legend(fontsize=7)
    save_figure(fig, os.path.join(out, "effective_rank.png"))
    timings["gaussian_d"] = time.time() - t0

    # ---- categorical: collision probability
    t0 = time.time()
    g, n, vsz = cfg.cat_generations, cfg.cat_samples, cfg.cat_vocab
    t = np.arange(g + 1)
    p0 = 1.0 / np.arange(1, vsz + 1) ** cfg.cat_zipf
    p0 /= p0.sum()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    metrics["collision"] = {}
    for i, s in enumerate(STRATS):
        p = np.asarray(toy.categorical_chain(jax.random.fold_in(keys["cat"], i), p0, n_generations=g, n_samples=n,
                                             n_chains=cfg.cat_chains, strategy=s), np.float64)
        th = toy.collision_probability_theory(p0, g, n, strategy=s)
        mean, se = band(ax, t, (p ** 2).sum(-1), f"{s} (simulation)", COLORS[s])
        ax.plot(t, th, "-", color=COLORS[s], lw=1, label=f"{s} (theory)")
        for k in pick(g):
            table.add(f"E[sum p_t^2], Zipf({cfg.cat_zipf}) V={vsz}, n={n}", s, k, th[k], mean[k], se[k])
        support = (p > 0).sum(-1).mean(1)
        metrics["collision"][s] = {"theory": th.tolist(), "mean": mean.tolist(), "se": se.tolist(),
                                   "mean_support": support.tolist()}
        if s == "replace":
            table.add("E[#tokens alive], one step", s, 1, toy.expected_support_theory(p0, n), support[1],
                      (p[1] > 0).sum(-1).std(ddof=1) / np.sqrt(cfg.cat_chains))
    ax.set(xlabel="generation t", ylabel="E[sum_k p_t[k]^2]", title=f"collision probability, n={n}")
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(out, "collision.png"))

    # ---- rare token survival
    g, n = cfg.rare_generations, cfg.rare_samples
    t = np.arange(g + 1)
    p0 = np.array([1.0 / n, 1.0 - 1.0 / n])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    metrics["rare_token"] = {}
    for i, s in enumerate(STRATS):
        p = np.asarray(toy.categorical_chain(jax.random.fold_in(keys["rare"], i), p0, n_generations=g, n_samples=n,
                                             n_chains=cfg.rare_chains, strategy=s), np.float64)
        alive = (p[:, :, 0] > 0).astype(np.float64)
        th = toy.rare_token_survival_theory(1, g, n, strategy=s)
        mean, se = band(ax, t, alive, f"{s} (simulation)", COLORS[s])
        ax.plot(t, th, "-", color=COLORS[s], lw=1, label=f"{s} (exact, n={n})")
        for k in pick(g):
            table.add(f"P(token seen once alive), n={n}", s, k, th[k], mean[k], se[k])
        metrics["rare_token"][s] = {"theory": th.tolist(), "mean": mean.tolist(), "se": se.tolist()}
    ax.plot(t, toy.rare_token_survival_theory(1, g), "k:", lw=1, label="branching law 1 - q_t")
    ax.set(xlabel="generation t", ylabel="P(alive)", title="rare-token survival (count 1)")
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(out, "rare_token.png"))
    timings["categorical"] = time.time() - t0

    # ---- regression relabelling
    t0 = time.time()
    g = cfg.reg_generations
    t = np.arange(g + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    metrics["regression"] = {}
    for i, s in enumerate(STRATS):
        e = toy.regression_chain(jax.random.fold_in(keys["reg"], i), n_generations=g, n_samples=cfg.reg_samples,
                                 n_chains=cfg.reg_chains, dim=cfg.reg_dim, noise=cfg.reg_noise, strategy=s)
        th = toy.regression_error_theory(g, n_samples=cfg.reg_samples, dim=cfg.reg_dim, noise=cfg.reg_noise,
                                         strategy=s)
        mean, se = band(ax, t, e, f"{s} (simulation)", COLORS[s])
        ax.plot(t, th, "-", color=COLORS[s], lw=1, label=f"{s} (theory)")
        for k in pick(g):
            table.add(f"E||w_t - w*||^2, T={cfg.reg_samples}, d={cfg.reg_dim}", s, k, th[k], mean[k], se[k])
        metrics["regression"][s] = {"theory": th.tolist(), "mean": mean.tolist(), "se": se.tolist()}
    ax.set(xlabel="generation t", ylabel="E||w_t - w*||^2", title="linear-regression relabelling")
    ax.legend(fontsize=8)
    save_figure(fig, os.path.join(out, "regression.png"))
    timings["regression"] = time.time() - t0

    md = table.markdown()
    save_text(os.path.join(out, "table.md"), md + "\n")
    save_text(os.path.join(out, "metrics.json"), json.dumps({"metrics": metrics, "timings_s": timings,
                                                             "table": table.rows}, indent=1))
    save_text(os.path.join(out, "config.json"), json.dumps(dataclasses.asdict(cfg), indent=1))
    return {"table": md, "timings": timings, "rows": table.rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/toy", help="output folder (default results/toy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer chains and generations (a smoke run)")
    args = ap.parse_args(argv)
    cfg = Config.quick() if args.quick else Config()
    cfg = dataclasses.replace(cfg, seed=args.seed)
    t0 = time.time()
    res = run(cfg, args.out)
    print(res["table"])
    zs = np.array([r[-1] for r in res["rows"]])
    print(f"\n{len(zs)} comparisons, max |z| = {np.nanmax(np.abs(zs)):.2f}; wrote plots to {args.out}/ "
          f"in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
