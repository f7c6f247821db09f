"""Benchmark: the in-loop monitor's cost per training step (issue 13's acceptance table).

    .venv/bin/python experiments/bench_monitor.py                  # the table, ~5 min on 2 CPU cores
    .venv/bin/python experiments/bench_monitor.py --sizes 256x256 512x512@200 --repeats 3 --out /tmp/b.json

A 3-layer tanh MLP (64 inputs -> d -> d -> d -> 1, squared loss) trained with optax adam, one
jitted step with its state donated; the monitor (``spectral_monitor(every=100)``, exact path, float64,
SIGMA only, its default ``n_A > 3d`` rows sampled from the last 100 steps) watches the last hidden layer.
Variants:

* ``none``: the plain step (the baseline);
* ``update``: ``monitor.update`` inside the step (buffer, and the refresh under ``lax.cond``);
* ``split``: ``monitor.observe`` inside the step and ``monitor.refresh`` as its own jitted call every
  ``every`` steps (the same report; see the monitor's module docstring for why it is cheaper on CPU).

Method: for each size all variants are compiled and warmed up for the same number of steps, then timed
in blocks of ``--steps`` steps (a block holds ``--steps / every`` refreshes whatever its offset), the
variants interleaved and their order rotated each round, so that machine noise hits every variant alike.
A block ends by waiting for *everything* it dispatched (parameters and monitor state: a refresh left
running would otherwise be billed to the next variant's block).  Each block starts from fresh copies of
its state: where XLA:CPU's buffers land in memory moved identical steps by up to 12% between runs
(measured), and fresh copies give every variant a new placement per block.  Per-step time = block time /
steps.  The overhead is paired: the median over rounds of ``block(variant) / block(none)`` in the same
round, minus 1, in wall time and in process CPU time, with a distribution-free interval for that median
(order statistics, :func:`median_ci`: 96.5% for 15 rounds).  It is an interval for *this run's* median:
the plain step's placement is fixed per process, and whole runs differ by more (measured: 256 x 256 at
-0.4% and -2.1%, 512 x 512 at +2.9% to +3.8% across runs).  ``ms_per_step`` is the median block, and the
minimum and the overhead of the minima are in the JSON too (the minimum rewards one lucky placement).
``refresh`` is one jitted refresh alone (min of 5) and ``from parts`` the overhead it predicts,
``refresh / (every * median step without)``; ``gram_ms`` / ``gram_share_pct`` the same for the refresh's
float64 Gram of the buffer alone, the part no exact report can skip.

``--lm PRESET`` (default ``small``, the CPU pilot's LM) also times the collapse pipeline's own training
loop, :func:`sigma_jax.lm.train` (host-sampled batches, ``steps_per_call`` steps fused in one
``lax.scan``, ``monitor.update`` inside the scan, reports logged on the host), with the preset's
``monitor_every`` and with the monitor off, in interleaved rounds of ``--lm-steps`` steps; the overhead is
paired the same way.

Measured and not pursued (see the issue's closing notes): running the refresh asynchronously, overlapped
with the next steps, gains nothing on CPU -- PJRT's CPU client runs one executable at a time, so an
independent refresh still waits its turn -- and a host thread computing the refresh with NumPy/OpenBLAS
slowed the concurrent steps by more than the refresh it took off them (+12% at 1024 x 256 against +10%).
"""

from __future__ import annotations

import os

# LAPACK (the refresh's Cholesky factorisations) single-threaded: a multithreaded OpenBLAS spins on the
# shared cores and made refreshes 10-50x slower there (as in tests/conftest.py and docs/scaling.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sigma_jax._io import write_json_atomic  # noqa: E402
from sigma_jax.collapse.presets import get_preset  # noqa: E402
from sigma_jax.gram import gram_f64  # noqa: E402
from sigma_jax.lm import Transformer, WindowSampler, train  # noqa: E402
from sigma_jax.monitor import spectral_monitor  # noqa: E402

HIGHEST = jax.lax.Precision.HIGHEST
IN_DIM = 64
VARIANTS = ("none", "update", "split")


def init_mlp(key, d: int):
    sizes = [IN_DIM, d, d, d, 1]
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (a, b), jnp.float32) / np.sqrt(a), jnp.zeros((b,), jnp.float32))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def forward(params, x):
    """(prediction (B,), last hidden layer (B, d))."""
    h = x
    for w, b in params[:-1]:
        h = jnp.tanh(jnp.matmul(h, w, precision=HIGHEST) + b)
    w, b = params[-1]
    return (jnp.matmul(h, w, precision=HIGHEST) + b)[:, 0], h


def loss_fn(params, x, y):
    pred, h = forward(params, x)
    return jnp.mean((pred - y) ** 2), h


def make_steps(monitor, tx):
    """(plain step, step with ``monitor.update``, step with ``monitor.observe``), each jitted with its state donated."""
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def plain(params, opt_state, x, y):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def monitored(params, opt_state, mstate, x, y, step):
        (loss, h), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        mstate, report = monitor.update(mstate, jax.lax.stop_gradient(h), step)
        return optax.apply_updates(params, updates), opt_state, mstate, loss, report.u_cov

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def observed(params, opt_state, mstate, x, y, step):
        (loss, h), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        mstate = monitor.observe(mstate, jax.lax.stop_gradient(h), step)
        return optax.apply_updates(params, updates), opt_state, mstate, loss

    return plain, monitored, observed


class Runner:
    """One variant: its own parameters, optimiser and monitor state, advanced block by block."""

    def __init__(self, variant: str, d: int, batch: int, every: int, data, precision: str = "float64"):
        self.variant, self.every, self.step = variant, every, 0
        xs, ys = data
        self.batches = [(xs[i], ys[i]) for i in range(xs.shape[0])]
        tx = optax.adam(1e-3)
        self.monitor = None if variant == "none" else spectral_monitor(every=every, precision=precision)
        self.plain, self.monitored, self.observed = make_steps(self.monitor, tx)
        self.refresh = None if self.monitor is None else jax.jit(self.monitor.refresh, donate_argnums=0)
        self.params = init_mlp(jax.random.key(0), d)
        self.opt_state = tx.init(self.params)
        self.mstate = None if self.monitor is None else self.monitor.init(d, key=jax.random.key(1))
        self.last = None

    def step_once(self, x, y):
        t = jnp.int32(self.step)
        if self.variant == "none":
            self.params, self.opt_state, self.last = self.plain(self.params, self.opt_state, x, y)
        elif self.variant == "update":
            self.params, self.opt_state, self.mstate, self.last, _ = self.monitored(
                self.params, self.opt_state, self.mstate, x, y, t)
        else:
            self.params, self.opt_state, self.mstate, self.last = self.observed(
                self.params, self.opt_state, self.mstate, x, y, t)
            if self.step % self.every == 0:
                self.mstate, _ = self.refresh(self.mstate, t)
        self.step += 1

    def run(self, steps: int) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of ``steps`` steps, from fresh copies of the state."""
        state = (self.params, self.opt_state, self.mstate)
        self.params, self.opt_state, self.mstate = jax.block_until_ready(jax.tree.map(jnp.copy, state))
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            self.step_once(*self.batches[self.step % len(self.batches)])
        jax.block_until_ready((self.last, self.params, self.mstate))
        return time.perf_counter() - t0, time.process_time() - c0


def median_ci(x, level: float = 0.95) -> tuple[float, float, float] | None:
    """Distribution-free interval for the median of ``x`` (i.i.d. continuous draws): ``(lo, hi, coverage)``.

    The order statistics ``[x_(k), x_(n-k+1)]`` with the largest ``k`` whose exact binomial coverage
    ``1 - 2 P(Binomial(n, 1/2) <= k - 1)`` is at least ``level`` (that coverage is returned: e.g. 96.5%
    for n = 15).  None when ``n`` is too small for any such interval (n < 6 at 95%).

    Example:
        >>> median_ci(list(range(15)))
        (3.0, 11.0, 0.96484375)
    """
    from scipy.stats import binom

    xs = np.sort(np.asarray(x, np.float64))
    n = xs.size
    best = None
    for k in range(1, n // 2 + 1):
        cover = 1.0 - 2.0 * float(binom.cdf(k - 1, n, 0.5))
        if cover < level:
            break
        best = (float(xs[k - 1]), float(xs[n - k]), cover)
    return best


def paired_overhead(times, base) -> dict:
    """Overhead (%) of ``times`` over ``base`` (the same rounds): the median over rounds of the ratio, minus 1, and
    :func:`median_ci` of it (``ci``: [lo, hi] or None, ``ci_coverage``)."""
    pct = 100.0 * (np.asarray(times) / np.asarray(base) - 1.0)
    ci = median_ci(pct)
    return {"median": float(np.median(pct)), "ci": None if ci is None else [ci[0], ci[1]],
            "ci_coverage": None if ci is None else ci[2]}


def bench_size(d: int, batch: int, *, every: int, steps: int, repeats: int, warmup: int) -> dict:
    key = jax.random.key(d * 7919 + batch)
    xs = jax.random.normal(key, (8, batch, IN_DIM), jnp.float32)
    ys = jnp.sin(jnp.sum(xs, axis=-1))
    runners = {v: Runner(v, d, batch, every, (xs, ys)) for v in VARIANTS}
    for r in runners.values():
        r.run(warmup)  # compiles, then the same warm-up for every variant (and a refresh at step 0)
    blocks, cpu = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for rnd in range(repeats):
        for v in VARIANTS[rnd % len(VARIANTS):] + VARIANTS[:rnd % len(VARIANTS)]:  # rotated order
            wall, proc = runners[v].run(steps)
            blocks[v].append(wall / steps)
            cpu[v].append(proc / steps)
    best = {v: min(ts) for v, ts in blocks.items()}
    best_cpu = {v: min(ts) for v, ts in cpu.items()}
    med = {v: float(np.median(ts)) for v, ts in blocks.items()}

    n_a = runners["split"].mstate.rows.shape[0] * runners["split"].mstate.rows.shape[1]
    refresh, gram = refresh_alone(runners["split"].monitor, d, batch, every)
    with_monitor = [v for v in VARIANTS if v != "none"]
    wall = {v: paired_overhead(blocks[v], blocks["none"]) for v in with_monitor}
    return {"d": d, "batch": batch, "every": every, "n_A": int(n_a), "steps_per_block": steps,
            "repeats": repeats, "warmup_steps": warmup,
            "ms_per_step": {v: 1e3 * t for v, t in med.items()},
            "overhead_pct": {v: wall[v]["median"] for v in with_monitor},
            "overhead_ci_pct": {v: wall[v]["ci"] for v in with_monitor},
            "overhead_ci_coverage": wall["split"]["ci_coverage"],
            "min_ms_per_step": {v: 1e3 * t for v, t in best.items()},
            "overhead_of_min_pct": {v: 100.0 * (best[v] / best["none"] - 1.0) for v in with_monitor},
            "blocks_ms_per_step": {v: [1e3 * t for t in ts] for v, ts in blocks.items()},
            "cpu_ms_per_step": {v: 1e3 * t for v, t in best_cpu.items()},
            "cpu_overhead_pct": {v: paired_overhead(cpu[v], cpu["none"])["median"] for v in with_monitor},
            "blocks_cpu_ms_per_step": {v: [1e3 * t for t in ts] for v, ts in cpu.items()},
            "refresh_ms": refresh, "gram_ms": gram,
            "gram_share_pct": 100.0 * gram / (every * 1e3 * med["none"]),
            "overhead_from_parts_pct": 100.0 * refresh / (every * 1e3 * med["none"])}


def min_time(fn, *args, repeats: int = 5) -> float:
    """Milliseconds of ``fn(*args)`` (jitted, compiled first), min over ``repeats``."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def refresh_alone(monitor, d: int, batch: int, every: int) -> tuple[float, float]:
    """Milliseconds of one jitted ``monitor.refresh`` on a full buffer, and of its float64 Gram alone (the floor:
    ``gram_f64`` of the buffered rows, as the refresh forms it)."""
    observe = jax.jit(monitor.observe, donate_argnums=0)
    x = jnp.tanh(jax.random.normal(jax.random.key(5), (batch, d), jnp.float32))
    state = monitor.init(d, key=jax.random.key(1))
    for t in range(1, every + 1):
        state = observe(state, x, jnp.int32(t))
    refresh = jax.jit(lambda s, t: monitor.refresh(s, t)[1])  # not donated: the same state each repeat
    gram = jax.jit(lambda rows: gram_f64(rows.reshape(-1, rows.shape[-1])))
    return min_time(refresh, state, jnp.int32(every)), min_time(gram, state.rows)


def bench_lm(preset: str, *, steps: int, repeats: int) -> dict:
    """The collapse pipeline's LM training (:func:`sigma_jax.lm.train`) with its in-scan monitor and without.

    Each round trains a fresh copy of the same initial model for ``steps`` steps on random tokens, once per
    variant (order alternating), and logs the monitor's reports as the pipeline does.  Per-step time = the
    run's wall time / steps (compilation excluded: both variants are run once first).
    """
    from flax import nnx

    cfg = get_preset(preset)
    every = cfg.train.monitor_every
    if every < 1:
        raise ValueError(f"preset {preset!r} trains without the monitor (monitor_every = 0).")
    tcs = {"update": dataclasses.replace(cfg.train, steps=steps),
           "none": dataclasses.replace(cfg.train, steps=steps, monitor_every=0)}
    graphdef, params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))
    tokens = np.asarray(jax.random.randint(jax.random.key(2), (200_000,), 2, cfg.model.vocab_size), np.int32)
    data = WindowSampler([tokens], [1.0])

    def run(v: str) -> float:
        fresh = jax.block_until_ready(jax.tree.map(jnp.copy, params))
        log = [] if v == "update" else None
        t0 = time.perf_counter()
        jax.block_until_ready(train(jax.random.key(3), graphdef, fresh, data, tcs[v], monitor_log=log)[0])
        return (time.perf_counter() - t0) / tcs[v].total_steps

    for v in tcs:
        run(v)  # compiles
    times = {v: [] for v in tcs}
    for rnd in range(repeats):
        for v in (list(tcs) if rnd % 2 == 0 else list(tcs)[::-1]):
            times[v].append(run(v))
    ov = paired_overhead(times["update"], times["none"])
    return {"preset": preset, "d_model": cfg.model.d_model, "n_layers": cfg.model.n_layers,
            "rows_per_step": cfg.train.batch_size * cfg.model.block_size, "batch_size": cfg.train.batch_size,
            "steps_per_call": cfg.train.steps_per_call, "every": every, "steps_per_run": tcs["none"].total_steps,
            "repeats": repeats, "ms_per_step": {v: 1e3 * float(np.median(t)) for v, t in times.items()},
            "overhead_pct": ov["median"], "overhead_ci_pct": ov["ci"], "overhead_ci_coverage": ov["ci_coverage"],
            "runs_ms_per_step": {v: [1e3 * t for t in ts] for v, ts in times.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="*", default=["256x256", "512x512", "1024x256", "1024x256@400"],
                    help="hidden size x batch[@every] (default: the issue's three shapes at --every, and 1024 x 256 "
                         "refreshed every 400 steps)")
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100,
                    help="steps per timed block (rounded up to a multiple of every: each block holds the same "
                         "refreshes)")
    ap.add_argument("--repeats", type=int, default=15, help="rounds: timed blocks per variant")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up steps per variant after compiling")
    ap.add_argument("--lm", nargs="*", default=["small"],
                    help="collapse presets whose LM training is timed with and without its monitor (none: skip)")
    ap.add_argument("--lm-steps", type=int, default=200, help="training steps per timed LM run")
    ap.add_argument("--lm-repeats", type=int, default=10, help="rounds of LM runs")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "bench_monitor.json"))
    args = ap.parse_args(argv)
    rows = []
    print(f"{'hidden x batch':>15} {'every':>5} {'n_A':>6} {'without':>10} {'update':>10} {'split':>10} "
          f"{'overhead update':>16} {'overhead split':>15} {'CPU-time update/split':>22} {'refresh':>9} "
          f"{'from parts':>11}")
    for size in args.sizes:
        shape, _, every = size.lower().partition("@")
        d, b = (int(v) for v in shape.split("x"))
        every = int(every) if every else args.every
        steps = -(-args.steps // every) * every
        row = bench_size(d, b, every=every, steps=steps, repeats=args.repeats, warmup=max(args.warmup, every))
        rows.append(row)
        ms, ov, cpu = row["ms_per_step"], row["overhead_pct"], row["cpu_overhead_pct"]
        print(f"{d:>6} x {b:<6} {every:>5} {row['n_A']:>6} {ms['none']:>8.2f}ms {ms['update']:>8.2f}ms "
              f"{ms['split']:>8.2f}ms "
              f"{ov['update']:>+15.2f}% {ov['split']:>+14.2f}% {cpu['update']:>+11.2f}%/{cpu['split']:<+8.2f}% "
              f"{row['refresh_ms']:>7.1f}ms {row['overhead_from_parts_pct']:>10.2f}%", flush=True)
    lm_rows = []
    for preset in args.lm:
        row = bench_lm(preset, steps=args.lm_steps, repeats=args.lm_repeats)
        lm_rows.append(row)
        print(f"LM '{preset}' (d_model {row['d_model']}, {row['rows_per_step']} hidden states per step, every "
              f"{row['every']}, update in a lax.scan of {row['steps_per_call']} steps): "
              f"{row['ms_per_step']['none']:.2f} ms/step without, {row['ms_per_step']['update']:.2f} ms with, "
              f"overhead {row['overhead_pct']:+.2f}%", flush=True)
    info = {"command": "python experiments/bench_monitor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "jax": jax.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "device": str(jax.devices()[0]), "rows": rows, "lm_rows": lm_rows}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_json_atomic(args.out, info)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
