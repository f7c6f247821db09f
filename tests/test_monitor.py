"""The in-loop monitor: its report is SIGMA of exactly the rows it buffered (jit, shard_map, pmap, stochastic).

Reports are stored as float32, so the one difference from the float64 offline report is that
rounding: ``|fl(x) - x| <= 2^-24 |x|`` (plus float64 rounding of a different summation order, far
below).  Tolerances below are that bound, or measured errors with their analysis.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import sigma_jax as sj
from sigma_jax import spectral
from sigma_jax.monitor import METRICS, MonitorReport, capture_hidden, spectral_monitor
from sigma_jax.gram import dense_stats
from sigma_jax.report import IntervalWarning, report_from_stats
from tests._reference import collapsed, healthy, ref_sigma, spectrum_embeddings

F32 = 2.0**-24  # relative rounding of a float32 report
SIGMA_FIELDS = ("logdet", "u_cov", "g_kf", "lower", "upper", "ci_halfwidth", "bias", "sd_q", "beta")


def window_rows(state, step, every):
    """The rows the report at ``step`` rests on, read back from the state: slots written in (step - every, step]."""
    rows, seen = [], 0
    for s in range(every):
        t = int(state.slot_step[s])
        if 0 <= t and step - every < t <= step:
            rows.append(np.asarray(state.rows[s, : int(state.slot_kept[s])], np.float64))
            seen += int(state.slot_seen[s])
    return np.concatenate(rows), seen


def assert_rows_from_batch(kept, batch):
    """Every kept row is a distinct row of its step's batch (sampling without replacement)."""
    b = np.asarray(batch, np.float32)
    hit = [np.flatnonzero((b == r.astype(np.float32)).all(axis=1)) for r in kept]
    assert all(len(h) == 1 for h in hit)
    assert len({int(h[0]) for h in hit}) == len(kept)


def assert_equals_offline(rep, rows, n_total, *, rtol=F32 + 1e-9):
    ridge_only = rows.shape[0] <= rows.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntervalWarning)  # the early windows are too small for an interval
        off = sj.sigma(rows, n_total=n_total, ridge_only=ridge_only)
    with np.errstate(invalid="ignore"):  # the reference's interval terms are NaN when n_A <= m
        ref = ref_sigma(rows, n_total=n_total)
    assert int(rep.n_sub) == rows.shape[0] and int(rep.n_total) == n_total == int(off.n_total)
    assert bool(rep.valid) == bool(off.valid) and int(rep.invalid_reason) == int(off.invalid_reason)
    fields = SIGMA_FIELDS + (("estimate", "se", "ci_low", "ci_high") if bool(off.valid) else ())
    for k in fields + ("m_eff",):
        # n_A <= m: every q_i ~ n_A, so sd(q) comes from sum q^2 - k mean^2 with cancellation ~ eps64 (mean/sd)^2
        tol = 1e-6 if ridge_only and k in ("ci_halfwidth", "sd_q", "bias") else rtol
        assert float(getattr(rep, k)) == pytest.approx(float(getattr(off, k)), rel=tol, abs=1e-30), k
    for k in fields[:9] + tuple(k for k in ("estimate", "se") if k in fields) + ("m_eff",):
        # the independent NumPy reference: float32 rounding plus cond(G_A + delta I) * eps ~ 1e-12 here
        assert float(getattr(rep, k)) == pytest.approx(ref[k], rel=rtol + 1e-10, abs=1e-9), k
    return off


def activations(rng, n, dim, spectrum=None):
    spec = np.arange(1, dim + 1) ** -0.7 if spectrum is None else spectrum
    return spectrum_embeddings(rng, n, dim, spec).astype(np.float32)


def test_report_is_sigma_of_the_buffered_rows(rng):
    """Each refresh equals offline SIGMA (sj.sigma and a NumPy float64 reference) of the rows of its window."""
    dim, every, r, b = 12, 5, 6, 16
    mon = spectral_monitor(every=every, rows_per_step=r, band_rows=64, metrics=("effective_rank", "lambda_min"))
    state = mon.init(dim, key=jax.random.key(int(rng.integers(2**31))))
    update = jax.jit(mon.update, donate_argnums=0)
    batches, checked = {}, 0
    for step in range(16):
        batches[step] = activations(rng, b, dim)
        state, rep = update(state, batches[step], step)
        slot = step % every
        assert_rows_from_batch(np.asarray(state.rows[slot, :r]), batches[step])
        if step % every:
            assert int(rep.step) == step - slot  # carried between refreshes
            continue
        rows, seen = window_rows(state, step, every)
        assert seen == b * min(step + 1, every) and int(rep.n_rows) == b * (step + 1)
        off = assert_equals_offline(rep, rows, seen)
        assert bool(rep.exact) and int(rep.step) == int(rep.metrics_step) == step
        lam = np.asarray(spectral.eigenvalues(rows))
        assert float(rep.effective_rank) == pytest.approx(float(spectral.effective_rank(lam)), rel=F32 + 1e-9)
        assert float(rep.lambda_min) == pytest.approx(float(lam.min()), rel=F32 + 1e-6, abs=1e-12)
        assert np.isnan(float(rep.participation_ratio))  # not asked for
        assert float(rep.u_cov_debiased) == pytest.approx(float(off.u_cov_debiased), rel=1e-6)
        checked += 1
    assert checked == 4
    d = rep.to_dict(metrics=("effective_rank",))
    assert d["n_sub"] == every * r and d["step"] == 15 and "participation_ratio" not in d


def test_observe_then_refresh_equals_update(rng):
    """The split API (``observe`` in the step, ``refresh`` as its own jitted call) gives update's states and reports
    bit for bit, and the in-step half carries none of the refresh's float64 scratch memory."""
    dim, every, r, b = 10, 4, 12, 24
    mon = spectral_monitor(every=every, rows_per_step=r, band_rows=30, metrics=("stable_rank",))
    st_u = st_s = mon.init(dim, key=jax.random.key(int(rng.integers(2**31))))
    update, observe = jax.jit(mon.update), jax.jit(mon.observe)
    refresh = jax.jit(mon.refresh, donate_argnums=0)
    for step in range(9):
        x = activations(rng, b, dim)
        st_u, rep_u = update(st_u, x, step)
        st_s = observe(st_s, x, step)
        if step % every == 0:
            st_s, rep_s = refresh(st_s, step)
            for a, c in zip(jax.tree.leaves(rep_u), jax.tree.leaves(rep_s)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
        for a, c in zip(jax.tree.leaves(st_u), jax.tree.leaves(st_s)):
            if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
                a, c = jax.random.key_data(a), jax.random.key_data(c)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    assert int(st_s.report.step) == 8 and bool(np.isfinite(float(st_s.report.stable_rank)))
    # update's step holds the refresh's scratch (a few m x m float64 arrays); observe's holds about one step's rows
    big = 96
    st = spectral_monitor(every=2, rows_per_step=big + 1).init(big)
    xb = jnp.zeros((2 * big, big), jnp.float32)
    temp = {name: jax.jit(fn).lower(st, xb, 1).compile().memory_analysis().temp_size_in_bytes
            for name, fn in (("observe", spectral_monitor(every=2, rows_per_step=big + 1).observe),
                             ("update", spectral_monitor(every=2, rows_per_step=big + 1).update))}
    assert temp["observe"] < 8 * big * big < temp["update"], temp


def test_update_warns_where_it_page_faults_on_cpu():
    """A large exact refresh inside the step on CPU: a MonitorPerformanceWarning naming observe + refresh (traced
    only); small monitors, observe and the stochastic path do not warn."""
    from sigma_jax.monitor import MonitorPerformanceWarning

    dim = 1024
    mon = spectral_monitor(every=100, method="exact")
    st = mon.init(dim, key=jax.random.key(0))
    x = jax.ShapeDtypeStruct((256, dim), jnp.float32)
    with pytest.warns(MonitorPerformanceWarning, match="monitor.observe"):
        jax.eval_shape(mon.update, st, x, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MonitorPerformanceWarning)
        jax.eval_shape(mon.observe, st, x, 1)
        small = spectral_monitor(every=100)
        jax.eval_shape(small.update, small.init(256, key=jax.random.key(0)), jnp.zeros((256, 256)), 1)
        sto = spectral_monitor(every=100, method="stochastic")
        jax.eval_shape(sto.update, sto.init(dim, key=jax.random.key(0)), x, 1)


def test_band_rows_sample_and_mixed_precision(rng):
    """band_rows < buffer: moments of a random row sample; precision="mixed": float32 products (measured error)."""
    dim, every, r, b = 16, 4, 24, 48
    x = [activations(rng, b, dim) for _ in range(5)]
    reps = {}
    for prec in ("float64", "mixed"):
        mon = spectral_monitor(every=every, rows_per_step=r, band_rows=40, precision=prec)
        st = mon.init(dim, key=jax.random.key(3))
        up = jax.jit(mon.update)
        for t, xb in enumerate(x):
            st, reps[prec] = up(st, xb, t)
    rows, seen = window_rows(st, 4, every)
    off = sj.sigma(rows, n_total=seen)
    ex, mx = reps["float64"], reps["mixed"]
    for k in ("logdet", "u_cov", "g_kf", "upper"):  # the Gram and log-dets do not depend on the band sample
        assert float(getattr(ex, k)) == pytest.approx(float(getattr(off, k)), rel=F32 + 1e-9), k
        # mixed: G_A entries carry ~n_A eps32 |v|^2 errors -> logdet errors ~1e-6 here (measured 2e-7); 10x margin
        assert float(getattr(mx, k)) == pytest.approx(float(getattr(off, k)), abs=5e-6), k
    # sd_q from 40 of 96 rows: same population, within sampling error of the all-rows value (rel. se ~ 1/sqrt(80))
    assert float(ex.sd_q) == pytest.approx(float(off.sd_q), rel=0.4)
    assert float(ex.sd_q) != pytest.approx(float(off.sd_q), rel=1e-6)  # really a sample


def test_mixed_precision_error_on_healthy_and_collapsed_sets(rng):
    """precision="mixed" (float32 Gram of the buffer) against the float64 default on the same buffered rows, in the
    monitor's regime (n_A ~ 3m of n_total = 100 n_A / 3): on a healthy random-basis set the difference is below the
    report's float32 storage; on a collapsed one (rank m/8, noise 1e-4: eigenvalues ~1e-7 below the band ridge
    eps = delta n_A / n_total ~ 3e-5) the Gram's ~1e-7 rounding moves each of those log(lambda + eps) terms by ~1e-3.
    Measured (m = 64 / 256): u_cov 2.6e-3 / 6.8e-3, estimate 0.11 / 0.15 (~0.5-1 se), m_eff 0.30 / 0.52.
    That is why the default stays float64; tolerances are 10x the m = 64 measurement."""
    dim, n_a, n_total = 64, 200, 6400
    mons = {p: spectral_monitor(every=1, rows_per_step=n_a, precision=p) for p in ("float64", "mixed")}
    for kind, x, tol in (("healthy", healthy(rng, n_total, dim), dict(u_cov=4 * F32, estimate=4 * F32, m_eff=4 * F32)),
                         ("collapsed", collapsed(rng, n_total, dim), dict(u_cov=3e-2, estimate=1.1, m_eff=3.0))):
        reps = {p: jax.jit(mon.update)(mon.init(dim, key=jax.random.key(3)), x.astype(np.float32), 0)[1]
                for p, mon in mons.items()}
        ex, mx = reps["float64"], reps["mixed"]
        assert bool(ex.valid) and bool(mx.valid), kind
        for k, t in tol.items():
            scale = abs(float(getattr(ex, k))) if kind == "healthy" else 1.0
            assert abs(float(getattr(mx, k)) - float(getattr(ex, k))) <= t * scale, (kind, k)
        if kind == "collapsed":  # really an approximation there (so the float64 default is needed)
            assert abs(float(mx.estimate) - float(ex.estimate)) > 1e-3


def test_jit_equals_eager_and_strided_choice_without_key(rng):
    dim, every = 6, 3
    mon = spectral_monitor(every=every, rows_per_step=4, metrics=("participation_ratio",))
    xs = [activations(rng, 12, dim) for _ in range(4)]
    st_e, st_j = mon.init(dim), mon.init(dim)
    up = jax.jit(mon.update)
    for t, xb in enumerate(xs):
        st_e, rep_e = mon.update(st_e, xb, t)
        st_j, rep_j = up(st_j, xb, t)
        # no key: the strided rows o, o + s, .. with s = 12 // 4 = 3 and o = t mod 3
        np.testing.assert_array_equal(np.asarray(st_j.rows[t % every]), xs[t][t % 3 + 3 * np.arange(4)])
    for a, b in zip(jax.tree.leaves(rep_e), jax.tree.leaves(rep_j)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-7)
    assert int(rep_j.step) == 3 and float(rep_j.participation_ratio) > 1.0


def test_shard_map_and_pmap(rng):
    """axis_name: with every row kept the sharded monitor equals the single-device one; with sampling each
    device contributes r / 8 rows of its own shard and the report is SIGMA of the gathered rows."""
    n_dev, dim, every = 8, 10, 2
    batches = [activations(rng, n_dev * 5, dim) for _ in range(3)]
    common = dict(every=every, metrics=("effective_rank",), rows_per_step=n_dev * 5)
    mon, mon_ax = spectral_monitor(**common), spectral_monitor(**common, axis_name="data")
    single = mon.init(dim)
    for t, b in enumerate(batches):
        single, ref = mon.update(single, b, t)

    mesh = jax.make_mesh((n_dev,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    step_sm = jax.jit(jax.shard_map(mon_ax.update, mesh=mesh, in_specs=(P(), P("data"), P()), out_specs=(P(), P())))
    st = mon_ax.init(dim)
    for t, b in enumerate(batches):
        st, rep_sm = step_sm(st, jnp.asarray(b), t)
    step_pm = jax.pmap(mon_ax.update, axis_name="data", in_axes=(None, 0, None), out_axes=(None, None))
    st = mon_ax.init(dim)
    for t, b in enumerate(batches):
        st, rep_pm = step_pm(st, b.reshape(n_dev, -1, dim), t)
    for rep in (rep_sm, rep_pm):
        assert int(rep.n_rows) == int(ref.n_rows) == 3 * n_dev * 5 and int(rep.n_sub) == int(ref.n_sub) == 80
        for k in SIGMA_FIELDS + ("effective_rank",):
            assert float(getattr(rep, k)) == pytest.approx(float(getattr(ref, k)), rel=2 * F32), k

    # sampling: 16 rows per step = 2 from each device's 5
    mon_s = spectral_monitor(every=every, rows_per_step=16, axis_name="data")
    step_s = jax.jit(jax.shard_map(mon_s.update, mesh=mesh, in_specs=(P(), P("data"), P()), out_specs=(P(), P())))
    st = mon_s.init(dim, key=jax.random.key(7))
    for t, b in enumerate(batches):
        st, rep = step_s(st, jnp.asarray(b), t)
        kept = np.asarray(st.rows[t % every])
        for d in range(n_dev):
            assert_rows_from_batch(kept[2 * d: 2 * d + 2], b[5 * d: 5 * d + 5])
    rows, seen = window_rows(st, 2, every)
    assert seen == every * n_dev * 5
    assert_equals_offline(rep, rows, seen)


def test_stochastic_path_on_rotated_inputs(rng):
    """method="stochastic" on rows with a power-law spectrum in a random basis: log-dets within a few of their
    standard errors of the exact monitor on the same buffer (same key -> same rows), errors that match the
    spread over keys, and the Gauss-quadrature band equal to the exact band of the same band rows."""
    dim, every, r, b = 48, 2, 64, 96
    spec = np.arange(1, dim + 1) ** -1.0
    xs = [activations(rng, b, dim, spec) for _ in range(3)]
    opts = dict(every=every, rows_per_step=r, band_rows=32, metrics=("effective_rank", "participation_ratio"))
    ex = spectral_monitor(**opts, method="exact")
    sto = spectral_monitor(**opts, method="stochastic", num_probes=16, num_steps=24, band_steps=24)
    up_ex, up_sto = jax.jit(ex.update), jax.jit(sto.update)
    z, z_up, ratios = [], [], []
    for seed in range(8):
        s_ex, s_sto = ex.init(dim, key=jax.random.key(seed)), sto.init(dim, key=jax.random.key(seed))
        for t, xb in enumerate(xs):
            s_ex, r_ex = up_ex(s_ex, xb, t)
            s_sto, r_sto = up_sto(s_sto, xb, t)
        np.testing.assert_array_equal(np.asarray(s_ex.rows), np.asarray(s_sto.rows))
        assert not bool(r_sto.exact) and int(r_sto.num_matvecs) == 16 * 24 + 32 * 24
        z.append((float(r_sto.logdet) - float(r_ex.logdet)) / float(r_sto.logdet_stderr))
        z_up.append((float(r_sto.upper) - float(r_ex.upper)) / float(r_sto.upper_stderr))
        # 24 Lanczos steps on cond(G_A + delta I) ~ 1e2: the quadratic forms have converged (measured 1e-6)
        assert float(r_sto.sd_q) == pytest.approx(float(r_ex.sd_q), rel=1e-4)
        ratios.append([float(getattr(r_sto, k)) / float(getattr(r_ex, k)) for k in opts["metrics"]])
    z, z_up, ratios = np.asarray(z), np.asarray(z_up), np.asarray(ratios)
    # metrics from the same 16 probes (no standard error reported): unbiased up to Jensen / Lanczos terms, so
    # their mean over 8 keys lies within 3.5 standard errors of the mean (+ 3% for those terms) of the truth
    err = np.abs(ratios.mean(0) - 1.0)
    assert np.all(err < 3.5 * ratios.std(0, ddof=1) / np.sqrt(len(ratios)) + 0.03), (ratios.mean(0), ratios.std(0))
    # reported standard errors match the spread: sum of 8 squared z ~ chi2_8 (0.1% / 99.9% quantiles 0.86 / 26.1)
    # (se from 16 probes is itself noisy, so allow 2x either way beyond the quantiles)
    for zz in (z, z_up):
        assert np.all(np.abs(zz) < 5) and 0.4 < np.sum(zz**2) < 52


def test_band_covers_sigma_of_all_rows_seen(rng):
    """Over many periods of fresh activations, the report's interval covers SIGMA's u_cov of ALL rows seen in
    the period at the nominal rate; the sandwich [lower, upper] always holds.  Runs on the report's
    calibrated interval (ci_low / ci_high / valid) and on the debiased Theorem-3 band u_cov_debiased +- ci_halfwidth."""
    dim, every, r, b, periods = 4, 8, 16, 64, 400
    mon = spectral_monitor(every=every, rows_per_step=r, band_rows=every * r)
    state = mon.init(dim, key=jax.random.key(11))
    spec = np.array([1.0, 0.6, 0.3, 0.1])
    x = jnp.asarray(activations(rng, periods * every * b, dim, spec).reshape(periods * every, b, dim))

    @jax.jit
    def run(state, x):
        def body(st, xs):
            xb, t = xs
            st, rep = mon.update(st, xb, t)
            return st, rep
        return jax.lax.scan(body, state, (x, jnp.arange(1, periods * every + 1, dtype=jnp.int32)))[1]

    reps = jax.tree.map(lambda v: np.asarray(v)[every - 1::every], run(state, x))  # steps every, 2 every, ..
    full = jax.jit(jax.vmap(lambda rows: report_from_stats(dense_stats(rows))))(x.reshape(periods, -1, dim))
    truth = np.asarray(full.u_cov, np.float64)
    logdet_full = np.asarray(full.logdet, np.float64)
    assert np.all(reps.n_sub == every * r) and np.all(reps.n_total == every * b)
    tol = 1e-5 * np.abs(logdet_full)  # float32 storage of lower / upper
    assert np.all(reps.lower <= logdet_full + tol) and np.all(logdet_full <= reps.upper + tol)
    nominal, sd = 0.95, np.sqrt(0.95 * 0.05 / periods)
    lo, hi = reps.u_cov - reps.bias - reps.ci_halfwidth, reps.u_cov - reps.bias + reps.ci_halfwidth
    cover = np.mean((lo <= truth) & (truth <= hi))
    assert abs(cover - nominal) < 3.5 * sd, cover
    ok = np.asarray(reps.valid, bool)
    assert ok.mean() > 0.5
    inside = (np.asarray(reps.ci_low) <= truth) & (truth <= np.asarray(reps.ci_high))
    rate, n_ok = inside[ok].mean(), ok.sum()
    assert abs(rate - float(reps.level[0])) < 3.5 * np.sqrt(nominal * (1 - nominal) / n_ok), rate


class TinyMLP(nnx.Module):
    def __init__(self, rngs, dim):
        self.hidden = nnx.Linear(8, dim, rngs=rngs)
        self.out = nnx.Linear(dim, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))[..., 0]


def test_flax_training_loop_and_metric_cadence(rng):
    """Inside an nnx.jit train step; eigen-based metrics every metrics_every steps, SIGMA every `every`."""
    dim, every = 16, 3
    model = TinyMLP(nnx.Rngs(0), dim)
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    mon = spectral_monitor(every=every, metrics_every=2 * every, metrics=("stable_rank",), rows_per_step=8)
    mstate = mon.init(dim, key=jax.random.key(0))

    @nnx.jit
    def train_step(model, opt, mstate, x, y, step):
        def loss_fn(m):
            pred, hidden = capture_hidden(m, x, include=lambda p: p == "hidden.__call__")
            return jnp.mean((pred - y) ** 2), hidden["hidden.__call__"]

        (loss, h), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        opt.update(model, grads)
        return loss, *mon.update(mstate, jnp.tanh(h), step)

    for step in range(10):
        x = rng.normal(size=(12, 8)).astype(np.float32)
        loss, mstate, rep = train_step(model, opt, mstate, x, np.sin(x.sum(1)).astype(np.float32), step)
        if step % every == 0:
            rows, seen = window_rows(mstate, step, every)
            assert_equals_offline(rep, rows, seen)
            if step % (2 * every) == 0:
                assert int(rep.metrics_step) == step
                lam = np.asarray(spectral.eigenvalues(rows))
                assert float(rep.stable_rank) == pytest.approx(float(spectral.stable_rank(lam)), rel=F32 + 1e-9)
            else:
                assert int(rep.metrics_step) == step - every
    assert int(rep.step) == 9 and isinstance(rep, MonitorReport)


def test_lm_training_logs_the_monitor():
    """sigma_jax.lm.train: the monitor inside the scan-fused step; train_monitor rows keep their names."""
    from sigma_jax.lm import ModelConfig, TrainConfig, Transformer, WindowSampler, train

    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, block_size=8)
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    data = WindowSampler([np.arange(2000) % 90 + 2], [1.0])
    tc = TrainConfig(steps=20, batch_size=4, steps_per_call=10, monitor_every=10)
    log = []
    train(jax.random.key(1), graphdef, params, data, tc, monitor_log=log)
    per_step = tc.batch_size * cfg.block_size
    assert [e["step"] for e in log] == [0, 10]
    for e in log:
        assert e["n_rows"] == (e["step"] + 1) * per_step
        assert np.isfinite(e["u_cov"]) and np.isfinite(e["logdet"]) and 1.0 <= e["effective_rank"] <= 16.0
    r = 5  # ceil((3 * 16 + 1) / 10)
    assert (log[0]["n_sub"], log[0]["n_total"]) == (r, per_step)
    assert (log[1]["n_sub"], log[1]["n_total"]) == (10 * r, 10 * per_step) and log[1]["ci_halfwidth"] > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown metrics"):
        spectral_monitor(metrics=("rankme",))
    with pytest.raises(ValueError, match="every"):
        spectral_monitor(every=0)
    with pytest.raises(ValueError, match="metrics_every"):
        spectral_monitor(every=10, metrics_every=15)
    with pytest.raises(ValueError, match="method"):
        spectral_monitor(method="fast")
    with pytest.raises(ValueError, match="precision"):
        spectral_monitor(precision="bf16")
    with pytest.raises(ValueError, match="delta"):
        spectral_monitor(delta=0.0)
    with pytest.raises(ValueError, match="n_A > m"):
        spectral_monitor(every=4, rows_per_step=2).init(8)
    with pytest.raises(ValueError, match="key"):
        spectral_monitor(every=4, method="stochastic").init(8)
    mon = spectral_monitor(every=2)
    with pytest.raises(ValueError, match="activations"):
        mon.update(mon.init(4), np.ones((3, 5), np.float32), 0)
    st = mon.init(4)
    assert int(st.report.step) == -1 and np.isnan(float(st.report.u_cov)) and set(METRICS) <= set(st.report._fields)
