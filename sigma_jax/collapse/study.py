r"""The study's verdicts from finished runs: control band, drift calls, seed-level intervals, early warning.

Reads only metrics rows (``{arm folder: [rows]}``, e.g. from
:func:`sigma_jax.collapse.report.load_results`) or the CSV tables written here; NumPy, SciPy
and the standard library only (no Flax, no pipeline import).

**Two nulls, a drift beyond both.**  For seed s, temperature T and generation g >= 1:

* the *sampling null* ``null_q95``: the 95% quantile of ``|dU|`` over >= 20 re-samples of
  generation 0 with other keys (:func:`sigma_jax.report.empirical_null`), and SIGMA's own
  Theorem-3 band; the row's ``threshold`` is the larger of the two;
* the *retraining null*: the ``control`` arm retrains, every generation, a fresh model on fresh
  real text of the same size with the same steps.  With ``init="fresh"`` its generations
  (generation 0 included) are exchangeable draws of one protocol, so its values pooled over
  seeds and generations give a 95% *prediction interval* for one more draw,
  ``mean +- t_{0.975, k-1} sd sqrt(1 + 1/k)`` (k values; Normal model).  For ``dU`` the pool
  is g >= 1 (dU(0) = 0 by definition; values of one seed share its generation 0, which makes
  the interval slightly narrow: ~6% in sd for 3 seeds x 3 generations); for ``bpc`` and
  ``distinct_2`` it includes generation 0.

A generation *drifts* when ``dU`` lies below ``min(-threshold, ctrl_lo)`` or above
``max(threshold, ctrl_hi)``; ``binding`` names the bound that had to be crossed (``band``,
``null`` or ``control``).  Held-out ``bpc`` and ``distinct_2`` *leave the control range* when
outside their control prediction interval.

**Early warning**, per seed: ``g_sigma`` the first generation that drifts, ``g_bpc`` /
``g_distinct2`` the first where the quality metric leaves its control range, and
``lead = g_quality - g_sigma`` (> 0: SIGMA warned first; empty when either never happened).
Generations are coarse, so the *margins* at generation 1 compare the signals finer: ``margin`` =
dU / (the bound it must cross), ``bpc_margin`` / ``d2_margin`` = distance from the centre of the
control range in half-widths; each is > 1 exactly when the signal is outside.

Example:
    >>> lo, hi = prediction_interval([0.0, 1.0, 2.0])
    >>> round(lo, 3), round(hi, 3)
    (-3.968, 5.968)
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from typing import Sequence

import numpy as np

__all__ = ["prediction_interval", "t_interval", "summary_table", "seed_intervals", "early_warning", "verdicts",
           "write_tables", "read_table", "SUMMARY_COLUMNS", "EARLY_WARNING_COLUMNS", "INTERVAL_COLUMNS"]

SUMMARY_COLUMNS = ["arm", "seed", "temperature", "generation", "u_cov", "du", "band", "null_q95", "threshold",
                   "ctrl_lo", "ctrl_hi", "binding", "drifting", "margin", "bpc", "bpc_ctrl_lo", "bpc_ctrl_hi",
                   "bpc_out", "bpc_margin", "distinct_2", "d2_ctrl_lo", "d2_ctrl_hi", "d2_out", "d2_margin",
                   "eff_rank_centred", "nll_gen0_p50", "nll_gen0_p99", "train_chars", "train_steps"]
EARLY_WARNING_COLUMNS = ["arm", "temperature", "seed", "g_sigma", "sigma_direction", "g_bpc", "g_distinct2",
                         "lead_bpc", "lead_distinct2", "sigma_margin_g1", "bpc_margin_g1", "d2_margin_g1",
                         "generations"]
INTERVAL_COLUMNS = ["arm", "temperature", "generation", "n_seeds", "du_mean", "du_hw", "bpc_mean", "bpc_hw",
                    "d2_mean", "d2_hw", "null_q95_mean", "ctrl_lo", "ctrl_hi", "n_drifting", "nll_p50_mean",
                    "nll_p99_mean", "train_chars"]
_INT = {"seed", "generation", "train_chars", "train_steps", "g_sigma", "g_bpc", "g_distinct2", "lead_bpc",
        "lead_distinct2", "generations", "n_seeds", "n_drifting"}
_BOOL = {"drifting", "bpc_out", "d2_out"}
_STR = {"arm", "binding", "sigma_direction"}


def _tq(level: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, dof))


def prediction_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Normal-model prediction interval for one more draw: ``mean +- t sd sqrt(1 + 1/k)``
    (``t`` the two-sided ``level`` quantile with k - 1 degrees of freedom); NaNs when k < 2.

    Example:
        >>> prediction_interval([1.0])
        (nan, nan)
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    k = v.size
    if k < 2:
        return (math.nan, math.nan)
    hw = _tq(level, k - 1) * float(v.std(ddof=1)) * math.sqrt(1.0 + 1.0 / k)
    return (float(v.mean()) - hw, float(v.mean()) + hw)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the t-interval half-width ``t_{k-1} sd / sqrt(k)`` across seeds (NaN half-width when k < 2).

    Example:
        >>> m, hw = t_interval([1.0, 2.0, 3.0])
        >>> m, round(hw, 3)
        (2.0, 2.484)
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return (math.nan, math.nan)
    if v.size < 2:
        return (float(v.mean()), math.nan)
    return (float(v.mean()), _tq(level, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size))


def _strategy(row: dict) -> str:
    return str(row.get("strategy", row.get("arm", "")))


def _outside(x: float, lo: float, hi: float) -> bool:
    return bool(np.isfinite(lo) and np.isfinite(hi) and (x < lo or x > hi))


def _range_margin(x: float, lo: float, hi: float) -> float:
    """|x - centre| / half-width of [lo, hi]: > 1 outside the range."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return math.nan
    return abs(x - (lo + hi) / 2.0) / ((hi - lo) / 2.0)


def summary_table(results: dict, level: float = 0.95) -> list:
    """One record per (arm, seed, temperature, generation) with the control band and the drift call.

    Args:
        results: ``{arm folder: [metrics rows]}`` of one or more runs.
        level: level of the control prediction intervals.

    Returns:
        Dicts with :data:`SUMMARY_COLUMNS`, sorted by temperature, arm, seed, generation.

    Example:
        >>> def row(s, seed, g, du, bpc):
        ...     return {"strategy": s, "seed": seed, "temperature": 0.7, "generation": g, "dU": du, "band": 0.5,
        ...             "null_q95": 2.0, "threshold": 2.0, "sigma_sub": {"u_cov": -100.0 + du}, "bpc_heldout": bpc,
        ...             "distinct_2": 0.5, "eff_rank_centred": 50.0, "nll_gen0_bits": {"p50": 2.0, "p99": 4.0},
        ...             "train_chars": 1000, "train_steps": 10}
        >>> res = {f"control_s{s}": [row("control", s, g, [0, 1, -1][g] * (s - 1), 2.0 + 0.01 * s) for g in range(3)]
        ...        for s in range(3)}
        >>> res["replace_s0"] = [row("replace", 0, g, -10.0 * g, 2.0 + g) for g in range(3)]
        >>> last = summary_table(res)[-1]
        >>> last["arm"], last["generation"], last["drifting"], last["binding"], last["bpc_out"]
        ('replace', 2, True, 'control', True)
    """
    rows = [r for rs in results.values() for r in rs]
    ctrl = defaultdict(lambda: {"du": [], "bpc": [], "d2": []})
    for r in rows:
        if _strategy(r) == "control":
            c = ctrl[float(r["temperature"])]
            if int(r["generation"]) >= 1:
                c["du"].append(float(r["dU"]))
            c["bpc"].append(float(r["bpc_heldout"]))
            c["d2"].append(float(r["distinct_2"]))
    bands = {t: {k: prediction_interval(v, level) for k, v in c.items()} for t, c in ctrl.items()}
    nan2 = (math.nan, math.nan)
    out = []
    for r in rows:
        t, g, du = float(r["temperature"]), int(r["generation"]), float(r["dU"])
        b = bands.get(t, {})
        (lo, hi), (blo, bhi), (dlo, dhi) = b.get("du", nan2), b.get("bpc", nan2), b.get("d2", nan2)
        thr, band, q = float(r["threshold"]), float(r["band"]), float(r["null_q95"])
        drifting, binding, margin = False, "-", math.nan
        if g >= 1:
            if du < 0:
                cands = {"band": -band, "null": -q, "control": lo}
                bound = min(v for v in (-thr, lo) if np.isfinite(v))
                drifting = du < bound
                binding = min((v, k) for k, v in cands.items() if np.isfinite(v))[1]
            else:
                cands = {"band": band, "null": q, "control": hi}
                bound = max(v for v in (thr, hi) if np.isfinite(v))
                drifting = du > bound
                binding = max((v, k) for k, v in cands.items() if np.isfinite(v))[1]
            margin = du / bound if bound != 0 else math.nan
        nll = r.get("nll_gen0_bits", {})
        out.append({"arm": _strategy(r), "seed": int(r["seed"]), "temperature": t, "generation": g,
                    "u_cov": float(r["sigma_sub"]["u_cov"]), "du": du, "band": band, "null_q95": q, "threshold": thr,
                    "ctrl_lo": lo, "ctrl_hi": hi, "binding": binding, "drifting": bool(drifting), "margin": margin,
                    "bpc": float(r["bpc_heldout"]), "bpc_ctrl_lo": blo, "bpc_ctrl_hi": bhi,
                    "bpc_out": g >= 1 and _outside(float(r["bpc_heldout"]), blo, bhi),
                    "bpc_margin": _range_margin(float(r["bpc_heldout"]), blo, bhi) if g >= 1 else math.nan,
                    "distinct_2": float(r["distinct_2"]), "d2_ctrl_lo": dlo, "d2_ctrl_hi": dhi,
                    "d2_out": g >= 1 and _outside(float(r["distinct_2"]), dlo, dhi),
                    "d2_margin": _range_margin(float(r["distinct_2"]), dlo, dhi) if g >= 1 else math.nan,
                    "eff_rank_centred": float(r["eff_rank_centred"]),
                    "nll_gen0_p50": float(nll.get("p50", math.nan)), "nll_gen0_p99": float(nll.get("p99", math.nan)),
                    "train_chars": int(r["train_chars"]), "train_steps": int(r["train_steps"])})
    out.sort(key=lambda d: (d["temperature"], d["arm"] != "control", d["arm"], d["seed"], d["generation"]))
    return out


def seed_intervals(summary: list, level: float = 0.95) -> list:
    """Per (arm, temperature, generation): seed count, mean and t-interval half-width of dU, bpc and
    distinct-2 across seeds, the mean null, the control band and how many seeds drift.

    Example:
        >>> s = [{"arm": "replace", "temperature": 0.7, "generation": 1, "seed": k, "du": d, "bpc": 2.0,
        ...       "distinct_2": 0.5, "null_q95": 1.0, "ctrl_lo": -3.0, "ctrl_hi": 3.0, "drifting": d < -3,
        ...       "nll_gen0_p50": 2.0, "nll_gen0_p99": 4.0, "train_chars": 100} for k, d in enumerate([-4.0, -6.0])]
        >>> iv = seed_intervals(s)[0]
        >>> iv["n_seeds"], iv["du_mean"], round(iv["du_hw"], 2), iv["n_drifting"]
        (2, -5.0, 12.71, 2)
    """
    groups = defaultdict(list)
    for r in summary:
        groups[(r["temperature"], r["arm"], r["generation"])].append(r)
    out = []
    for (t, arm, g), rs in groups.items():
        rec = {"arm": arm, "temperature": t, "generation": g, "n_seeds": len(rs)}
        for col, tag in (("du", "du"), ("bpc", "bpc"), ("distinct_2", "d2")):
            rec[f"{tag}_mean"], rec[f"{tag}_hw"] = t_interval([r[col] for r in rs], level)
        rec["null_q95_mean"] = float(np.mean([r["null_q95"] for r in rs]))
        rec["ctrl_lo"], rec["ctrl_hi"] = rs[0]["ctrl_lo"], rs[0]["ctrl_hi"]
        rec["n_drifting"] = int(sum(bool(r["drifting"]) for r in rs))
        rec["nll_p50_mean"] = float(np.mean([r["nll_gen0_p50"] for r in rs]))
        rec["nll_p99_mean"] = float(np.mean([r["nll_gen0_p99"] for r in rs]))
        rec["train_chars"] = int(max(r["train_chars"] for r in rs))
        out.append(rec)
    out.sort(key=lambda d: (d["temperature"], d["arm"] != "control", d["arm"], d["generation"]))
    return out


def early_warning(summary: list) -> list:
    """Per (arm, temperature, seed) of every non-control arm: the first drifting generation, the
    first where bpc / distinct-2 leave the control range, and SIGMA's lead (> 0: earlier).

    Example:
        >>> s = [{"arm": "replace", "temperature": 0.7, "seed": 0, "generation": g, "drifting": g >= 1,
        ...       "du": -5.0 * g, "bpc_out": g >= 2, "d2_out": False} for g in range(4)]
        >>> ew = early_warning(s)[0]
        >>> ew["g_sigma"], ew["g_bpc"], ew["lead_bpc"], ew["g_distinct2"], ew["lead_distinct2"]
        (1, 2, 1, None, None)
    """
    groups = defaultdict(list)
    for r in summary:
        if r["arm"] != "control":
            groups[(r["temperature"], r["arm"], r["seed"])].append(r)
    out = []
    for (t, arm, seed), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["generation"])

        def first(flag):
            return next((r["generation"] for r in rs if r["generation"] >= 1 and r[flag]), None)

        gs, gb, gd = first("drifting"), first("bpc_out"), first("d2_out")
        g1 = next((r for r in rs if r["generation"] == 1), {})
        direction = None if gs is None else ("down" if next(r for r in rs if r["generation"] == gs)["du"] < 0 else "up")
        out.append({"arm": arm, "temperature": t, "seed": seed, "g_sigma": gs, "sigma_direction": direction,
                    "g_bpc": gb, "g_distinct2": gd,
                    "lead_bpc": None if gs is None or gb is None else gb - gs,
                    "lead_distinct2": None if gs is None or gd is None else gd - gs,
                    "sigma_margin_g1": g1.get("margin", math.nan), "bpc_margin_g1": g1.get("bpc_margin", math.nan),
                    "d2_margin_g1": g1.get("d2_margin", math.nan),
                    "generations": max(r["generation"] for r in rs)})
    out.sort(key=lambda d: (d["temperature"], d["arm"], d["seed"]))
    return out


def verdicts(intervals: list, warnings_: list) -> list:
    """A plain verdict per (arm, temperature): drift in how many seeds, from which generation.

    Returns ``(arm, temperature, text)`` tuples; ``"no detectable drift"`` where no seed drifted.

    Example:
        >>> iv = [{"arm": "accumulate", "temperature": 1.0, "generation": 1, "n_seeds": 3, "n_drifting": 0,
        ...        "du_mean": -1.0, "du_hw": 2.0}]
        >>> ew = [{"arm": "accumulate", "temperature": 1.0, "seed": s, "g_sigma": None, "g_bpc": None,
        ...        "g_distinct2": None} for s in range(3)]
        >>> print(verdicts(iv, ew)[0][2])
        no detectable drift: dU stayed within the null and the control band in 3 seeds x 1 generation; held-out bpc
        left the control range in 0 of 3 seeds
    """
    out = []
    keys = sorted({(r["arm"], r["temperature"]) for r in intervals})
    for arm, t in keys:
        ivs = sorted((r for r in intervals if r["arm"] == arm and r["temperature"] == t and r["generation"] >= 1),
                     key=lambda r: r["generation"])
        if not ivs:
            continue
        n = ivs[-1]["n_seeds"]
        last = ivs[-1]
        if arm == "control":
            k = sum(r["n_drifting"] for r in ivs)
            text = (f"the retraining null itself: {k} of {n * len(ivs)} control generations fall outside the "
                    f"control band (about 5% expected)")
            out.append((arm, t, text))
            continue
        ews = [e for e in warnings_ if e["arm"] == arm and e["temperature"] == t]
        firsts = sorted(e["g_sigma"] for e in ews if e["g_sigma"] is not None)
        q_bad = sum(1 for e in ews if e["g_bpc"] is not None)
        if not firsts:
            text = (f"no detectable drift: dU stayed within the null and the control band in {_n(n, 'seed')} x "
                    f"{_n(len(ivs), 'generation')}")
        else:
            all_from = next((r["generation"] for r in ivs if r["n_drifting"] == r["n_seeds"]), None)
            word = "collapse" if last["du_mean"] < 0 else "upward drift"
            hw = "" if not np.isfinite(last["du_hw"]) else f" ± {last['du_hw']:.1f}"
            text = (f"{word} detected in {len(firsts)} of {_n(n, 'seed')} (first at generation {firsts[0]}"
                    + (f"; all seeds from generation {all_from}" if all_from is not None and n > 1 else "")
                    + f"); mean dU at generation {last['generation']} = "
                    + f"{last['du_mean']:+.1f}{hw} nats".replace("-", "−"))
            if len(firsts) < n:
                text = "inconclusive: " + text
        text += f"; held-out bpc left the control range in {q_bad} of {_n(n, 'seed')}"
        out.append((arm, t, text))
    return out


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _csv_text(records: list, columns: list) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in records:
        w.writerow([_fmt(r.get(c)) for c in columns])
    return buf.getvalue()


def write_tables(results: dict, out_dir: str, level: float = 0.95) -> list:
    """Write ``summary.csv``, ``seed_intervals.csv`` and ``early_warning.csv`` into ``out_dir``; returns their paths.

    Example:
        >>> import tempfile
        >>> r = {"strategy": "replace", "seed": 0, "temperature": 0.7, "generation": 0, "dU": 0.0, "band": 0.0,
        ...      "null_q95": 1.0, "threshold": 1.0, "sigma_sub": {"u_cov": -9.0}, "bpc_heldout": 2.0,
        ...      "distinct_2": 0.5, "eff_rank_centred": 5.0, "train_chars": 10, "train_steps": 1}
        >>> paths = write_tables({"replace_T0.7_s0": [r]}, tempfile.mkdtemp())
        >>> [os.path.basename(p) for p in paths]
        ['summary.csv', 'seed_intervals.csv', 'early_warning.csv']
    """
    from sigma_jax._io import write_text_atomic

    summ = summary_table(results, level)
    tables = [("summary.csv", summ, SUMMARY_COLUMNS), ("seed_intervals.csv", seed_intervals(summ, level),
                                                         INTERVAL_COLUMNS),
              ("early_warning.csv", early_warning(summ), EARLY_WARNING_COLUMNS)]
    paths = []
    for name, recs, cols in tables:
        p = os.path.join(out_dir, name)
        write_text_atomic(p, _csv_text(recs, cols))
        paths.append(p)
    return paths


def read_table(path: str) -> list:
    """A CSV written by :func:`write_tables`, with its columns' types restored (empty cells: None / NaN).

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
        >>> _ = open(p, "w").write("arm,seed,du,drifting,g_bpc\\nreplace,0,-1.5,true,\\n")
        >>> read_table(p)
        [{'arm': 'replace', 'seed': 0, 'du': -1.5, 'drifting': True, 'g_bpc': None}]
    """
    out = []
    with open(path, encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            row = {}
            for k, v in rec.items():
                if k in _STR:
                    row[k] = v if v != "" else None
                elif k in _BOOL:
                    row[k] = v == "true"
                elif k in _INT:
                    row[k] = int(v) if v != "" else None
                else:
                    row[k] = float(v) if v != "" else math.nan
            out.append(row)
    return out
