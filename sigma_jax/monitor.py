r"""Spectral monitoring inside jitted training loops: SIGMA of a row sample, refreshed every ``every`` steps.

::

    monitor = spectral_monitor(every=100)
    mstate = monitor.init(dim, key=jax.random.key(0))

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))   # donate the state: its buffer is updated in place
    def train_step(params, opt_state, mstate, batch, step):
        (loss, hidden), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        mstate, report = monitor.update(mstate, hidden, step)   # no host sync
        ...
        return params, opt_state, mstate, report

**What a report rests on.**  SIGMA is built on a subsample (``n_A`` of ``n_total`` rows), and so is
the monitor.  At step ``t`` it keeps ``r = rows_per_step`` of the step's ``b`` activation rows in slot
``t mod every`` of a fixed buffer of ``every x r`` rows: one row from each of ``r`` contiguous blocks
of the batch, uniform within its block, from random words drawn with ``fold_in(key, .)`` at the
previous refresh (without a key: the row at offset ``t mod size`` of each block, a systematic sample).
When ``t mod every == 0`` (``lax.cond``, on device) it computes SIGMA's sufficient statistics of the
rows buffered in the steps ``(t - every, t]`` -- ``G_A`` by :func:`sigma_jax.gram.gram_f64` and the
band's q-moments by :func:`sigma_jax.gram.q_moments` on ``band_rows`` of them, as
:func:`sigma_jax.gram.dense_stats` does -- with ``n_total`` = the rows *seen* in those steps, and hands
them to the one assembler :func:`sigma_jax.report.report_from_stats`.  So ``n_sub`` says on how many
rows a report rests, ``n_total`` of how many, and the band, bias and calibrated interval (``estimate``,
``ci_low``, ``ci_high``, ``valid``) are the report's for a sample of ``n_sub`` of ``n_total`` rows.  The
sample is stratified (by step, and by block within a step); for exchangeable rows this does not widen
a simple random sample's variance, so the interval stays valid to first order (tested for coverage).
The first report (step 0) rests on step 0's rows alone (too few for a valid interval); ``n_rows``
counts every row seen since ``init``.

**Cost.**  Per step: gathering ``r`` rows and writing ``r x dim`` numbers (no random numbers are drawn
between refreshes; measured 2-8 us of compute at dim 256-1024).  Per refresh: the Gram of ``every r``
rows (``precision="mixed"`` forms it in float32, 1.5-3x faster, but on collapsed sets its rounding moves
the calibrated ``estimate`` by ~0.5-1 standard error, so float64 is the default), the band factor
``L^{-1}`` (shared by the q-moments of ``band_rows`` rows and the assembler) and the report's two
other Cholesky factorisations.  Eigen-based metrics cost a float64 ``eigh``
and are computed only when asked for, every ``metrics_every`` steps.  ``method="stochastic"`` replaces
the Gram and the factorisations by stochastic Lanczos quadrature on the buffered rows
(``num_probes x num_steps`` products with ``G_A``, each ``O(every r dim)``) and the band's solves by
Gauss quadrature from ``band_rows`` rows.  Measured in ``experiments/bench_monitor.py``.  Donate the
state to the jitted step (``donate_argnums``): the buffer is then written in place.

**In the step, or beside it.**  ``update`` is ``observe`` followed by ``lax.cond(step % every == 0,
refresh, ...)``: one jitted step, nothing to call apart.  The price is memory: the step's executable then
holds the refresh's float64 scratch (the buffer in float64 and a few ``dim x dim`` matrices; 34 MB more
at dim 1024).  XLA:CPU allocates an executable's scratch at every call, and above glibc's mmap
threshold (at most 32 MiB) each call gets fresh pages, so *every* step page-faults the scratch it
touches, refresh or not: measured +29-41% per step at dim 1024 on CPU in ``experiments/bench_monitor.py``
(+2% between refreshes with the threshold raised by ``MALLOC_MMAP_THRESHOLD_``).  So on CPU call the
halves apart -- ``observe`` inside the jitted step and ``refresh`` as its own jitted call every ``every``
steps::

    refresh = jax.jit(monitor.refresh, donate_argnums=0)
    for step in range(num_steps):
        params, opt_state, mstate = train_step(params, opt_state, mstate, batch, step)  # calls monitor.observe
        if step % every == 0:
            mstate, report = refresh(mstate, step)

which gives ``update``'s states and reports bit for bit.  Accelerators' pooled allocators do not
page-fault this way, and inside a ``lax.scan`` of many steps the scratch is allocated once per call.
On CPU, ``update`` warns (:class:`MonitorPerformanceWarning`, at trace time) when the exact refresh's
scratch reaches :data:`CPU_SCRATCH_WARN_BYTES`.

State and reports are float32/int32 pytrees, so they cross ``jit`` boundaries without JAX's x64 flag.
Inside ``pmap``/``shard_map`` pass ``axis_name``: each device samples ``r // axis_size`` rows of its
shard (``fold_in`` of the axis index), one ``psum`` gathers them, and the state stays replicated.
"""

from __future__ import annotations

import collections
import math
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import estimators as _est
from sigma_jax.estimators import stochastic_sigma as _sto
from sigma_jax import gram as _gram
from sigma_jax import spectral as _spectral
from sigma_jax._x64 import f64, x64
from sigma_jax.report import (MIN_ROWS_PER_DIM, LogdetEstimates, SigmaReport, SigmaStats, check_scalars,
                              report_from_stats, report_shifts, row_moments)

__all__ = ["MonitorState", "MonitorReport", "SpectralMonitor", "spectral_monitor", "capture_hidden", "METRICS",
           "METHODS", "MonitorPerformanceWarning"]

#: Spectral metrics of ``G_A`` a monitor can report (``sigma_jax.spectral`` conventions, rows as normalised).
METRICS = ("effective_rank", "spectral_entropy", "participation_ratio", "stable_rank", "lambda_max", "lambda_min")
METHODS = ("exact", "stochastic", "auto")
#: ``method="auto"`` uses the stochastic path from this dimension on (when the monitor has a key): the
#: offline crossover of ``sigma_jax.estimators`` (not re-measured for the monitor's buffer).
AUTO_STOCHASTIC_DIM = _est.AUTO_CROSSOVER_M

_SPECTRUM_METRICS = {  # each a function of the (descending or not) eigenvalues of G_A, computed once
    "effective_rank": _spectral.effective_rank,
    "spectral_entropy": _spectral.spectral_entropy,
    "participation_ratio": _spectral.participation_ratio,
    "stable_rank": _spectral.stable_rank,
    "lambda_max": jnp.max,
    "lambda_min": jnp.min,
}
_EXTRA_FIELDS = ("n_rows", "step", "metrics_step")
#: ``update`` warns on CPU when the exact refresh's float64 scratch (estimated as the buffer in float64 plus two
#: ``dim x dim`` float64 matrices) reaches this many bytes: with the training step's own scratch it then crosses
#: glibc's mmap threshold (at most 32 MiB) and every step page-faults (see "In the step, or beside it").
CPU_SCRATCH_WARN_BYTES = 16 * 2**20
_ROWS, _BAND, _PROBES = 0, 1, 2  # fold_in purposes of a step's key


class MonitorPerformanceWarning(UserWarning):
    """A monitor configuration known to be slow where it runs (the message names the faster way)."""


# --------------------------------------------------------------------------- report and state


class MonitorReport(collections.namedtuple("_MonitorReportFields",
                                           SigmaReport._fields + METRICS + _EXTRA_FIELDS)):
    """One monitor report: the fields of :class:`sigma_jax.report.SigmaReport`, the metrics, bookkeeping.

    Attributes:
        (every field of SigmaReport): the report of the rows buffered in the steps ``(step - every, step]``,
            assembled by :func:`sigma_jax.report.report_from_stats` (``n_sub`` of ``n_total`` rows).
        effective_rank, spectral_entropy, participation_ratio, stable_rank, lambda_max, lambda_min:
            spectral metrics of that ``G_A`` (NaN unless chosen; see ``metrics_step``).
        n_rows: rows seen since ``init`` (all devices).
        step: the step of the report (-1 before the first).
        metrics_step: the step whose ``G_A`` the metrics describe (-1 before the first).

    Floats are float32 (the report is rounded once when stored), counts int32.  SigmaReport's
    properties (``u_cov_interval``, ``u_cov_debiased``, ...) work on it too; :attr:`sigma` is the
    SigmaReport itself.
    """

    __slots__ = ()

    @property
    def sigma(self) -> SigmaReport:
        """The :class:`sigma_jax.report.SigmaReport` part."""
        return SigmaReport(*(getattr(self, f) for f in SigmaReport._fields))

    def __getattr__(self, name):  # SigmaReport's properties
        if name.startswith("_") or not hasattr(SigmaReport, name):
            raise AttributeError(f"'MonitorReport' object has no attribute {name!r}")
        return getattr(self.sigma, name)

    def to_dict(self, metrics: Sequence[str] | None = None) -> dict:
        """Plain Python numbers (for JSON) of an unbatched report; ``metrics`` limits the metric fields.

        Floats are written as the shortest decimals of their float32 values (``delta`` reads 0.001).
        """
        out = self.sigma.to_dict()
        for name in METRICS if metrics is None else metrics:
            out[name] = float(np.asarray(getattr(self, name)))
        for name in _EXTRA_FIELDS:
            out[name] = int(np.asarray(getattr(self, name)))
        return {k: float(str(np.float32(v))) if type(v) is float else v for k, v in out.items()}


_INT_FIELDS = tuple(f for f in MonitorReport._fields if f in SigmaReport._INT_FIELDS or f in _EXTRA_FIELDS)
_BOOL_FIELDS = tuple(f for f in MonitorReport._fields if f in SigmaReport._BOOL_FIELDS)
_FLOAT_FIELDS = tuple(f for f in MonitorReport._fields if f not in _INT_FIELDS + _BOOL_FIELDS)


def _pack(report: MonitorReport):
    """A report as three arrays (float32, int32, bool): three leaves in the state, not forty (each leaf of a
    jitted step's arguments and results costs about a microsecond of dispatch)."""
    return (jnp.stack([jnp.asarray(getattr(report, f), jnp.float32) for f in _FLOAT_FIELDS]),
            jnp.stack([jnp.asarray(getattr(report, f), jnp.int32) for f in _INT_FIELDS]),
            jnp.stack([jnp.asarray(getattr(report, f), jnp.bool_) for f in _BOOL_FIELDS]))


def _unpack(packed) -> MonitorReport:
    fields = {}
    for names, arr in zip((_FLOAT_FIELDS, _INT_FIELDS, _BOOL_FIELDS), packed):
        fields.update({f: arr[..., i] for i, f in enumerate(names)})
    return MonitorReport(**fields)


class MonitorState(NamedTuple):
    """Monitor state: a pytree of a few float32/int32/bool arrays and the PRNG key.

    Attributes:
        rows: (every, r, dim) float32 buffer; slot ``t mod every`` holds the rows kept at step ``t``.
        slots: (3, every) int32: per slot, the step that wrote it (-1: empty), the rows kept and the
            rows seen at that step (all devices); also as ``slot_step``, ``slot_kept``, ``slot_seen``.
        n_rows: int32, rows seen since ``init``.
        key: the PRNG key of the row choice, band rows and probes (None: systematic choice, exact path).
        words: (every, r) uint32 random words of the row choice of the steps until the next refresh,
            drawn at each refresh from ``fold_in(fold_in(key, step), 0)`` (at ``init`` with step -1), so a
            step draws no random numbers of its own; None without a key.
        packed: the last :class:`MonitorReport` as (float32, int32, bool) arrays; read it as ``report``.
    """

    rows: jax.Array
    slots: jax.Array
    n_rows: jax.Array
    key: Any
    words: Any
    packed: tuple

    @property
    def report(self) -> MonitorReport:
        """The last report."""
        return _unpack(self.packed)

    @property
    def slot_step(self):
        return self.slots[0]

    @property
    def slot_kept(self):
        return self.slots[1]

    @property
    def slot_seen(self):
        return self.slots[2]


class SpectralMonitor(NamedTuple):
    """Pure functions, like an optax ``GradientTransformation``.

    ``init(dim, key=None) -> MonitorState``; ``update(state, activations, step) -> (state, MonitorReport)``
    (buffer and, when ``step % every == 0``, refresh, in one jitted step).  ``update`` is ``observe``
    followed by a ``lax.cond`` on ``refresh``; the two halves can also be called apart:
    ``observe(state, activations, step) -> state`` inside the training step and
    ``refresh(state, step) -> (state, MonitorReport)`` as its own jitted call every ``every`` steps (see
    "Cost" in the module docstring for why that is cheaper on CPU).
    """

    init: Callable[..., MonitorState]
    update: Callable[..., tuple[MonitorState, MonitorReport]]
    observe: Callable[..., MonitorState]
    refresh: Callable[..., tuple[MonitorState, MonitorReport]]


def _stored(tree):
    """Cast a report to the state's dtypes: float32, int32, bool (crosses jit boundaries without x64)."""
    def cast(x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(jnp.float32)
        if jnp.issubdtype(x.dtype, jnp.integer):
            return x.astype(jnp.int32)
        return x
    return jax.tree.map(cast, tree)


def _step_key(key, step, purpose: int):
    return jax.random.fold_in(jax.random.fold_in(key, step), purpose)


def _sample_positions(key, n: int, k: int):
    """``k`` distinct positions of ``n``, uniformly at random: the top-k of n random words."""
    return jax.lax.top_k(jax.random.bits(key, (n,), jnp.uint32), k)[1]


def _stratified_positions(b: int, k: int, words=None, step=None):
    """One row from each of ``k`` contiguous blocks of the ``b`` rows (block j: rows ``[j b // k, (j+1) b // k)``).

    With ``k`` random ``words`` the row is uniform in its block (up to a modulo bias < size / 2^32);
    without, the row at offset ``step mod size`` (a systematic sample that moves with the step).
    """
    starts = (np.arange(k) * b) // k
    sizes = (np.arange(1, k + 1) * b) // k - starts
    if words is not None:
        off = (words % jnp.asarray(sizes, jnp.uint32)).astype(jnp.int32)
    else:
        off = step % jnp.asarray(sizes, jnp.int32)
    return jnp.asarray(starts, jnp.int32) + off


def _row_words(key, step, every: int, r: int):
    return jax.random.bits(_step_key(key, step, _ROWS), (every, r), jnp.uint32)


# --------------------------------------------------------------------------- the constructor


def spectral_monitor(every: int = 100, metrics: Sequence[str] = (), *, rows_per_step: int | None = None,
                     band_rows: int | None = None, delta: float = 1e-3, rho: float = 1.0, level: float = 0.95,
                     normalize: bool = True, axis_name: Any = None, method: str = "auto",
                     precision: str = "float64", metrics_every: int | None = None, num_probes: int = 16,
                     num_steps: int = 32, deflate: int = 0, band_steps: int = 24) -> SpectralMonitor:
    """Build a spectral monitor (see the module docstring for what a report rests on and what it costs).

    Args:
        every: refresh the report when ``step % every == 0``; it covers the steps ``(step - every, step]``.
        metrics: names from :data:`METRICS` (eigen-based: computed only when asked for).
        rows_per_step: rows kept per step, ``r``.  The default ``ceil((3 dim + 1) / every)`` buffers
            ``n_A > 3 dim`` rows, the fewest for which the report's calibrated interval can be valid
            (:data:`sigma_jax.report.MIN_ROWS_PER_DIM`).  The interval shrinks like ``sqrt(dim / n_A)``;
            the refresh costs ``O(n_A dim^2)``.
        band_rows: rows (a random sample of the buffer) whose q-moments give the band, bias and interval;
            default 256 (exact path: a GEMM of 256 rows) or ``2 num_probes`` (stochastic: a Lanczos run each).
        delta, rho, level: SIGMA's ridge, squared-norm bound and confidence level.
        normalize: L2-normalise each activation row (as SIGMA does for sentence embeddings).
        axis_name: a ``pmap``/``shard_map`` axis (or tuple of axes) the batch is split over; None outside.
        method: ``"exact"`` (float64 Gram and Cholesky), ``"stochastic"`` (Lanczos quadrature on the
            buffered rows; needs a key) or ``"auto"`` (stochastic from ``dim >= 4096`` when there is a key).
        precision: ``"float64"`` or ``"mixed"`` for the buffer's Gram (see :func:`sigma_jax.gram.gram_f64`).
        metrics_every: compute the metrics every this many steps (a multiple of ``every``; default ``every``).
        num_probes, num_steps, deflate: SLQ size of the stochastic path.
        band_steps: Lanczos steps per band row in the stochastic path.

    Returns:
        :class:`SpectralMonitor` with ``init(dim, key=None)`` and ``update(state, activations, step)``.

    Example:
        >>> mon = spectral_monitor(every=2, metrics=("effective_rank",), rows_per_step=4)
        >>> st = mon.init(3, key=jax.random.key(0))
        >>> st, rep = mon.update(st, jax.random.normal(jax.random.key(1), (8, 3)), 0)
        >>> int(rep.n_sub), int(rep.n_total), int(rep.n_rows), 1.0 <= float(rep.effective_rank) <= 3.0
        (4, 8, 8, True)
    """
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}.")
    band_default = band_rows is None
    if band_default:
        band_rows = 256 if method != "stochastic" else 2 * num_probes
    for name, v in (("every", every), ("band_rows", band_rows), ("num_probes", num_probes),
                    ("num_steps", num_steps), ("band_steps", band_steps)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (2 if name in ("band_rows",
                                                                                            "num_probes") else 1):
            raise ValueError(f"`{name}` must be a Python int >= {2 if name in ('band_rows', 'num_probes') else 1}, "
                             f"got {v!r}.")
    if rows_per_step is not None and (not isinstance(rows_per_step, (int, np.integer)) or rows_per_step < 1):
        raise ValueError(f"`rows_per_step` must be None or a positive int, got {rows_per_step!r}.")
    if not isinstance(deflate, int) or deflate < 0:
        raise ValueError(f"`deflate` must be a non-negative int, got {deflate!r}.")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    if precision not in _gram.PRECISIONS:
        raise ValueError(f"`precision` must be one of {_gram.PRECISIONS}, got {precision!r}.")
    metrics_every = every if metrics_every is None else metrics_every
    if not isinstance(metrics_every, int) or metrics_every < every or metrics_every % every:
        raise ValueError(f"`metrics_every` must be a multiple of `every`={every}, got {metrics_every!r}.")
    check_scalars(delta, rho, level)
    delta, rho, level = float(delta), float(rho), float(level)

    def rows_for(dim: int) -> int:
        if rows_per_step is not None:
            return int(rows_per_step)
        return max(1, math.ceil((MIN_ROWS_PER_DIM * dim + 1) / every))

    def stochastic_for(dim: int, key) -> bool:
        return method == "stochastic" or (method == "auto" and key is not None and dim >= AUTO_STOCHASTIC_DIM)

    # ------------------------------------------------------------------ producers of SigmaStats

    def exact_stats(flat, mask, n_sub, n_total, pos):
        g = _gram.gram_f64(flat, normalize=normalize, precision=precision, mask=mask)
        rows, w = (flat, mask) if pos is None else (flat[pos], mask[pos])
        with x64():  # traced int counts: the band ridge delta n_A / n_total is formed in float64
            # L^{-1} at the band ridge, formed once: the q-moments and the assembler's tr R, tr R^2 share it
            inv_l = _gram.band_factor(g, delta, n_sub, n_total)
            q = _gram.q_moments(rows, g, delta=delta, n_sub=n_sub, n_total=n_total, normalize=normalize, mask=w,
                                inv_l=inv_l)
        q_count = n_sub if pos is None else jnp.sum(w).astype(jnp.int32)
        return SigmaStats(g, None, q, q_count, n_sub, n_total, flat.shape[1], None, inv_l)

    def stochastic_stats(flat, mask, n_sub, n_total, pos, key):
        """The traces of :mod:`sigma_jax.estimators.stochastic_sigma` by SLQ on the buffered rows (counts may
        be traced, rows masked); the band's forms by Gauss quadrature from ``band_rows`` rows."""
        dim, dtype = flat.shape[1], flat.dtype
        op = _gram.gram_operator(flat * mask[:, None], delta=delta, normalize=normalize)
        k_defl, k_probe = jax.random.split(key)
        steps = min(num_steps, dim - deflate)
        space = _est.top_eigenspace(k_defl, op, deflate, dtype=dtype) if deflate else None
        probes = _est.sample_probes(k_probe, num_probes, dim, "rademacher", dtype)
        tri = _est.lanczos(op.matmat_rows, probes, steps, deflation=None if space is None else space.vectors)
        rows, w = (flat, mask) if pos is None else (flat[pos], mask[pos])
        with x64():
            shifts = report_shifts(delta, f64(n_sub), f64(n_total), rho)
            fns = _sto.report_trace_fns(delta, shifts)
            rv = space.values if space is not None else jnp.zeros((0,), jnp.float64)
            offsets = jnp.stack([jnp.sum(f(f64(rv))) for f in fns])
            value, stderr = _sto.quadrature_traces(tri, fns, offsets)
            h = max(steps // 2, 1)  # truncation guard: the same run after s/2 steps
            value_half, _ = _sto.quadrature_traces(type(tri)(tri.alphas[:, :h], tri.betas[:, :h], tri.norms, None,
                                                              tri.residual), fns, offsets)
            v = _gram.normalized_rows64(rows, normalize, w).astype(dtype)  # masked rows are 0: q = 0
        b_nodes, b_weights = _est.ritz(_est.lanczos(op.matmat_rows, v, min(band_steps, dim)))
        with x64():
            # h_i = v_i^T (G_A + eps I)^{-1} v_i, eps the band ridge; nodes are eigenvalues + delta (Gauss: from below)
            inv = 1.0 / (b_nodes - delta + shifts[2])
            form = jnp.sum(jnp.where(b_weights > 0, b_weights * inv, 0.0), axis=1)
            q = row_moments(f64(n_sub) * form, n_sub)
            mv_probes = num_probes * steps + (space.num_matvecs if space is not None else 0)
            logdets = LogdetEstimates(value, stderr, jnp.abs(value - value_half),
                                      jnp.asarray(mv_probes + v.shape[0] * min(band_steps, dim), jnp.int32),
                                      jnp.zeros((), jnp.float64))
            nodes, weights = _est.ritz(tri)
            quad = _est.Quadrature(nodes, weights, rv, f64(op.trace()), jnp.asarray(mv_probes, jnp.int32),
                                   jnp.asarray(dim, jnp.int32))
        q_count = n_sub if pos is None else jnp.sum(w).astype(jnp.int32)
        dof = min(num_probes, v.shape[0]) - 1
        return SigmaStats(None, logdets, q, q_count, n_sub, n_total, dim, dof), quad

    # ------------------------------------------------------------------ metrics of a spectrum

    def spectrum_metrics(g):
        """The chosen metrics from the eigenvalues of ``G_A``, computed once.  Call inside x64()."""
        lam = jnp.maximum(jnp.linalg.eigvalsh(g), jnp.zeros((), g.dtype))
        return {name: f64(_SPECTRUM_METRICS[name](lam)) for name in metrics}

    def quadrature_metrics(quad):
        """The chosen metrics from the stochastic path's quadrature of ``G_A + delta I``.  Call inside x64()."""
        value = lambda quantity: f64(_est.quadrature_estimate(quad, quantity, shift=-delta).value)  # noqa: E731
        live = quad.weights > 0
        top = jnp.max(jnp.concatenate([jnp.where(live, quad.nodes, -jnp.inf).ravel(), quad.ritz_values])) - delta
        low = jnp.min(jnp.where(live, quad.nodes, jnp.inf)) - delta
        table = {"effective_rank": lambda: value(_est.effective_rank()),
                 "spectral_entropy": lambda: value(_est.spectral_entropy()),
                 "participation_ratio": lambda: value(_est.participation_ratio()),
                 "stable_rank": lambda: (quad.trace - delta * quad.dim) / top,  # lambda_max: largest Ritz value
                 "lambda_max": lambda: top, "lambda_min": lambda: low}
        return {name: table[name]() for name in metrics}

    # ------------------------------------------------------------------ the refresh

    def refresh(state: MonitorState, step) -> MonitorReport:
        n_slots, r, dim = state.rows.shape
        live = (state.slot_step >= 0) & (state.slot_step > step - every) & (state.slot_step <= step)
        kept = jnp.where(live, state.slot_kept, 0)
        mask = (jnp.arange(r)[None, :] < kept[:, None]).reshape(-1).astype(jnp.float32)
        n_sub, n_total = jnp.sum(kept), jnp.sum(jnp.where(live, state.slot_seen, 0))
        flat = state.rows.reshape(-1, dim)
        stochastic = stochastic_for(dim, state.key)
        k = 2 * num_probes if stochastic and band_default else band_rows  # "auto" may pick the stochastic path
        pos = None
        if k < flat.shape[0]:
            pos = (_sample_positions(_step_key(state.key, step, _BAND), flat.shape[0], k)
                   if state.key is not None else jnp.arange(k) * (flat.shape[0] // k))
        nan = jnp.full((), jnp.nan, jnp.float32)
        old = {name: getattr(state.report, name) for name in METRICS}
        if stochastic:
            stats, quad = stochastic_stats(flat, mask, n_sub, n_total, pos, _step_key(state.key, step, _PROBES))
            with x64():
                values = _stored(quadrature_metrics(quad))
            metrics_step = step
        else:
            stats = exact_stats(flat, mask, n_sub, n_total, pos)
            values, metrics_step = {}, state.report.metrics_step
            if metrics:
                def fresh(g):
                    with x64():
                        return _stored(spectrum_metrics(g)), step
                values, metrics_step = jax.lax.cond(step % metrics_every == 0, fresh,
                                                    lambda g: ({k: old[k] for k in metrics}, metrics_step),
                                                    stats.gram)
        rep = report_from_stats(stats, delta=delta, rho=rho, level=level)
        out = MonitorReport(*rep, *(values.get(name, nan) for name in METRICS), state.n_rows, step, metrics_step)
        return _stored(out)

    # ------------------------------------------------------------------ init / update

    def init(dim: int, key=None) -> MonitorState:
        dim = int(dim)
        if dim < 1:
            raise ValueError(f"`dim` must be a positive integer, got {dim}.")
        r = rows_for(dim)
        if r * every <= dim:
            raise ValueError(f"the monitor buffers rows_per_step * every = {r} * {every} = {r * every} rows, but "
                             f"SIGMA needs more rows than dimensions (n_A > m = {dim}): raise `rows_per_step` to "
                             f">= {dim // every + 1} or `every`.")
        if method == "stochastic" and key is None:
            raise ValueError("method='stochastic' draws random probes: pass `key` (e.g. `init(dim, "
                             "key=jax.random.key(0))`).")
        slots = jnp.stack([jnp.full((every,), -1, jnp.int32), jnp.zeros((every,), jnp.int32),
                           jnp.zeros((every,), jnp.int32)])
        words = None if key is None else _row_words(key, jnp.int32(-1), every, r)
        state = MonitorState(jnp.zeros((every, r, dim), jnp.float32), slots, jnp.zeros((), jnp.int32), key, words,
                             None)
        placeholder = _pack(_unpack(tuple(jnp.zeros((len(f),), dt) for f, dt in (
            (_FLOAT_FIELDS, jnp.float32), (_INT_FIELDS, jnp.int32), (_BOOL_FIELDS, jnp.bool_)))))
        shapes = jax.eval_shape(lambda s: refresh(s._replace(packed=placeholder), jnp.int32(0)), state)
        empty = jax.tree.map(lambda s: jnp.full(s.shape, _empty_value(s.dtype), s.dtype), shapes)
        empty = empty._replace(dim=jnp.asarray(dim, empty.dim.dtype), step=jnp.int32(-1),
                               metrics_step=jnp.int32(-1), n_rows=jnp.int32(0))
        return state._replace(packed=_pack(empty))

    def observe(state: MonitorState, activations, step) -> MonitorState:
        """Buffer step ``step``'s rows of ``activations`` (no refresh): the in-step half of ``update``."""
        n_slots, r, dim = state.rows.shape
        if activations.ndim < 1 or activations.shape[-1] != dim:
            raise ValueError(f"`activations` must end in the monitored dim {dim}, got shape "
                             f"{tuple(activations.shape)}.")
        rows = activations.reshape(-1, dim)
        b = rows.shape[0]
        step = jnp.asarray(step, jnp.int32)
        n_dev = 1 if axis_name is None else int(jax.lax.psum(1, axis_name))
        r_local = r // n_dev
        if r_local < 1:
            raise ValueError(f"`rows_per_step`={r} must be at least the number of devices on `axis_name` ({n_dev}).")
        k = min(r_local, b)
        if k == b:
            picked = rows
        elif state.key is not None:  # device i uses words [i r_local, i r_local + k) of the step's slot
            first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * r_local
            words = jax.lax.dynamic_slice_in_dim(state.words[step % every], first, k)
            picked = rows[_stratified_positions(b, k, words)]
        else:
            picked = rows[_stratified_positions(b, k, step=step)]
        picked = picked.astype(jnp.float32)
        if axis_name is not None:  # gather every device's rows; psum keeps the state replicated
            slots = jnp.zeros((n_dev, k, dim), jnp.float32).at[jax.lax.axis_index(axis_name)].set(picked)
            picked = jax.lax.psum(slots, axis_name).reshape(n_dev * k, dim)
        if picked.shape[0] < r:
            picked = jnp.concatenate([picked, jnp.zeros((r - picked.shape[0], dim), jnp.float32)])
        slot = step % every
        written = jnp.stack([step, jnp.int32(n_dev * k), jnp.int32(n_dev * b)])
        return state._replace(rows=state.rows.at[slot].set(picked), slots=state.slots.at[:, slot].set(written),
                              n_rows=state.n_rows + n_dev * b)

    def fresh(state: MonitorState, step):
        """(packed report, next row-choice words) of a refresh at ``step``."""
        words = None if state.key is None else _row_words(state.key, step, every, state.rows.shape[1])
        return _pack(refresh(state, step)), words

    def refresh_now(state: MonitorState, step) -> tuple[MonitorState, MonitorReport]:
        """Refresh the report at ``step`` (normally ``step % every == 0``) from the rows buffered in
        ``(step - every, step]``: the other half of ``update``, to run as its own jitted call."""
        step = jnp.asarray(step, jnp.int32)
        packed, words = fresh(state, step)
        return state._replace(packed=packed, words=words), _unpack(packed)

    def update(state: MonitorState, activations, step) -> tuple[MonitorState, MonitorReport]:
        n_slots, r, dim = state.rows.shape
        scratch = 8 * (n_slots * r * dim + 2 * dim * dim)
        if (scratch >= CPU_SCRATCH_WARN_BYTES and jax.default_backend() == "cpu"
                and not stochastic_for(dim, state.key)):
            warnings.warn(f"on CPU, `update` puts the refresh's float64 scratch (~{scratch / 2**20:.0f} MiB at dim "
                          f"{dim}) into the training step, and XLA:CPU then page-faults it on every step (measured "
                          "+29-41% per step at dim 1024).  Call `monitor.observe` inside the jitted step and "
                          "`monitor.refresh` as its own jitted call every `every` steps instead (the same reports); "
                          "inside a `lax.scan` of many steps `update` is fine.", MonitorPerformanceWarning,
                          stacklevel=2)
        step = jnp.asarray(step, jnp.int32)
        state = observe(state, activations, step)
        packed, words = jax.lax.cond(step % every == 0, lambda s: fresh(s, step), lambda s: (s.packed, s.words),
                                     state)
        return state._replace(packed=packed, words=words), _unpack(packed)

    return SpectralMonitor(init, update, observe, refresh_now)


def _empty_value(dtype):
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.nan
    return False if dtype == jnp.bool_ else 0


# --------------------------------------------------------------------------- flax helper


def capture_hidden(model, *args, include: Callable[[str], bool] | None = None, **kwargs):
    """Run a ``flax.nnx`` model and return ``(output, {path: activation})`` of its submodules.

    Uses ``nnx.capture(..., method_outputs=nnx.Intermediate)`` so the model needs no
    ``sow`` calls.  ``include`` filters the dotted paths (e.g. ``lambda p: p.startswith("blocks")``).
    Works inside ``jit``; feed the chosen activation to ``monitor.update``.

    Example:
        >>> from flax import nnx
        >>> lin = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> out, hidden = capture_hidden(lin, jnp.ones((4, 3)))
        >>> hidden["__call__"].shape
        (4, 2)
    """
    from flax import nnx

    out, inter = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(*args, **kwargs)
    flat = {}
    for path, value in nnx.to_flat_state(inter):
        name = ".".join(str(p) for p in path)
        v = value.get_value() if hasattr(value, "get_value") else getattr(value, "value", value)
        if isinstance(v, tuple) and len(v) == 1:
            v = v[0]
        if hasattr(v, "shape") and (include is None or include(name)):
            flat[name] = v
    return out, flat
