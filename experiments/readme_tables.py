"""README's measured tables, regenerated from the committed artefacts (JSON) -- never typed by hand.

Each table lives in README.md between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``:

* ``coverage-sigma``   -- ``docs/results/coverage_sigma.json`` (``experiments/coverage_sigma.py``);
* ``coverage-estimators`` -- ``docs/results/coverage_estimators.json`` (``experiments/coverage_estimators.py``);
* ``bench-sigma``      -- ``experiments/results/bench_sigma.json`` (``experiments/bench_sigma.py``);
* ``bench-monitor``    -- ``experiments/results/bench_monitor.json`` (``experiments/bench_monitor.py``).

(The collapse study has its own generator, ``experiments/collapse_readme.py``.)
``tests/test_readme_tables.py`` fails when README's blocks differ from what this script prints.

Usage::

    .venv/bin/python experiments/readme_tables.py            # print every block
    .venv/bin/python experiments/readme_tables.py --write    # replace README's blocks in place
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
sys.path.insert(0, ROOT)


def _load(rel):
    path = os.path.join(ROOT, rel)
    with open(path, encoding="utf-8") as f:
        return json.load(f), rel


def coverage_sigma() -> str:
    from coverage_sigma import readme_table

    data, rel = _load("docs/results/coverage_sigma.json")
    cells = data["cells"]
    trials = sorted({c["trials"] for c in cells})
    head = (f"From `{rel}` ({len(cells)} cells, {'/'.join(map(str, trials))} random subsets each, "
            f"m ∈ {{{', '.join(str(m) for m in sorted({c['m'] for c in cells}))}}}, "
            f"n_total/n_A ∈ {{{', '.join(f'{r:g}' for r in sorted({c['nratio'] for c in cells}))}}}; "
            "regenerate with `python experiments/coverage_sigma.py`).")
    return head + "\n\n" + readme_table(cells)


def bench_sigma() -> str:
    from bench_sigma import markdown_table

    data, rel = _load("experiments/results/bench_sigma.json")
    return f"From `{rel}`.\n\n" + markdown_table(data)


def bench_monitor() -> str:
    data, rel = _load("experiments/results/bench_monitor.json")
    rows = data["rows"]
    ov = {(r["d"], r["batch"], r["every"]): {v: {"median": r["overhead_pct"][v], "ci": r["overhead_ci_pct"][v]}
                                              for v in ("update", "split")} for r in rows}
    cover = {r["overhead_ci_coverage"] for r in rows}

    def fmt(o):
        ci = "" if o["ci"] is None else f" ({o['ci'][0]:+.1f} … {o['ci'][1]:+.1f})"
        return f"{o['median']:+.1f}%{ci}"

    lines = [f"From `{rel}` (`{data['command'].strip()}`, {data['date']}, {data['cpu_count']} CPUs, load average "
             f"at the end {data['load_average_at_end'][0]:.1f}; {rows[0]['repeats']} rounds of interleaved "
             "blocks of `every` steps or more; times are the median block, overheads the median over rounds of the "
             "ratio to the plain step's block in the same round, in brackets its distribution-free "
             + "/".join(f"{100 * c:.1f}%" for c in sorted(c for c in cover if c is not None))
             + " interval (order statistics); whole runs differ by more, see the script's docstring).", "",
             "| hidden × batch | every | n_A | step without | `update` in the step | overhead | "
             "`observe` + `refresh` | overhead | CPU-time overhead (update / split) | one refresh (its float64 Gram) | "
             "refresh / (every × step) (Gram alone) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms, cpu, o = r["ms_per_step"], r["cpu_overhead_pct"], ov[(r["d"], r["batch"], r["every"])]
        lines.append(f"| {r['d']} × {r['batch']} | {r['every']} | {r['n_A']} | {ms['none']:.2f} ms | "
                     f"{ms['update']:.2f} ms | {fmt(o['update'])} | {ms['split']:.2f} ms | {fmt(o['split'])} | "
                     f"{cpu['update']:+.1f}% / {cpu['split']:+.1f}% | "
                     f"{r['refresh_ms']:.1f} ms ({r['gram_ms']:.1f} ms) | "
                     f"{r['overhead_from_parts_pct']:.1f}% ({r['gram_share_pct']:.1f}%) |")

    def shape(r):
        o = ov[(r["d"], r["batch"], r["every"])]["split"]
        return f"{r['d']} × {r['batch']} every {r['every']}: {fmt(o)}"

    def verdict(r):  # against the 3% ceiling, by the interval (the median alone where there is none)
        o = ov[(r["d"], r["batch"], r["every"])]["split"]
        lo, hi = (o["median"], o["median"]) if o["ci"] is None else o["ci"]
        return "within" if hi <= 3.0 else "above" if lo > 3.0 else "unresolved"

    groups = {k: [r for r in rows if verdict(r) == k] for k in ("within", "unresolved", "above")}
    parts = []
    if groups["within"]:
        parts.append("within 3% at " + ", ".join(map(shape, groups["within"])))
    if groups["unresolved"]:
        parts.append("not separable from 3% in this run at " + ", ".join(map(shape, groups["unresolved"])))
    if groups["above"]:
        parts.append("above 3% at " + ", ".join(
            f"{shape(r)}, where the float64 Gram of its n_A = {r['n_A']} buffered rows alone is {r['gram_share_pct']:.1f}% "
            f"of {r['every']} plain steps" for r in groups["above"]))
    lines += ["", "Against the goal (at most 1%, never above 3%), with `observe` + `refresh`: " + "; ".join(parts) + "."]
    for r in data.get("lm_rows", []):
        o = {"median": r["overhead_pct"], "ci": r["overhead_ci_pct"], "ci_coverage": r["overhead_ci_coverage"]}
        lines += ["", f"The collapse pipeline's own loop (`sigma_jax.lm.train`, preset `{r['preset']}`: d_model "
                  f"{r['d_model']}, {r['rows_per_step']} hidden states per step, `update` inside a `lax.scan` of "
                  f"{r['steps_per_call']} steps, every {r['every']}, reports logged on the host): "
                  f"{r['ms_per_step']['none']:.2f} ms per step without the monitor, {r['ms_per_step']['update']:.2f} ms "
                  f"with, overhead {fmt(o)} (median over {r['repeats']} paired runs of {r['steps_per_run']} steps"
                  + ("" if o["ci"] is None else f", {100 * o['ci_coverage']:.1f}% interval") + ")."]
    return "\n".join(lines)


def coverage_estimators() -> str:
    data, rel = _load("docs/results/coverage_estimators.json")
    fams = list(data["estimators"])
    names = list(data["estimators"][fams[0]])
    k = data["trials_per_cell"]
    lines = [f"From `{rel}` (d = {data['dim']}, {data['probes']} probes × {data['steps']} Lanczos steps, deflation "
             f"{data['deflate']}, {k} trials per cell; coverage of the nominal 95% interval; `python "
             "experiments/coverage_estimators.py`).", "",
             "| family | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for fam in fams:
        lines.append(f"| {fam} | " + " | ".join(f"{100 * data['estimators'][fam][n]['coverage']:.1f}%" for n in names)
                     + " |")
    st = data["stochastic_sigma"]
    lines += ["", f"`sigma(method=\"stochastic\")` (m = {st['m']}, n_A = {st['n_sub']} of {st['n_total']}, "
              f"{st['trials']} subsets): valid {100 * st['valid_fraction']:.0f}%, coverage of the full-sample U_cov "
              f"{100 * st['coverage']:.1f}%, mean width {st['mean_width']:.2f} nats (exact path "
              f"{st['mean_width_exact_path']:.2f})."]
    return "\n".join(lines)


TABLES = {"coverage-sigma": coverage_sigma, "coverage-estimators": coverage_estimators, "bench-sigma": bench_sigma,
          "bench-monitor": bench_monitor}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def block(name: str) -> str:
    """The text README holds between the markers of ``name`` (markers included)."""
    begin, end = markers(name)
    return f"{begin}\n{TABLES[name]()}\n{end}"


def replace_block(text: str, name: str) -> str:
    begin, end = markers(name)
    a, b = text.find(begin), text.find(end)
    if a < 0 or b < a:
        raise ValueError(f"README.md lacks the markers {begin} ... {end}")
    return text[:a] + block(name) + text[b + len(end):]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help="replace README's blocks in place")
    p.add_argument("names", nargs="*", default=list(TABLES), help=f"tables (default all: {', '.join(TABLES)})")
    args = p.parse_args(argv)
    path = os.path.join(ROOT, "README.md")
    text = open(path, encoding="utf-8").read()
    for name in args.names:
        if args.write:
            text = replace_block(text, name)
        else:
            print(block(name), end="\n\n")
    if args.write:
        from sigma_jax._io import write_text_atomic

        write_text_atomic(path, text)
        print(f"wrote {len(args.names)} block(s) into README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
