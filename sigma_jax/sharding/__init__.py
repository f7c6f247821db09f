r"""The Gram operator sharded across devices and hosts.

Embeddings ``A`` (n x m, rows ``v_j``) too large for one device live
*row-sharded* on a :class:`jax.sharding.Mesh`: device ``d`` holds a block
``A_d`` of rows, and

    G = A^T A = sum_d A_d^T A_d,        G V^T = sum_d A_d^T (A_d V^T),

so the exact Gram matrix is one local float64 product per device plus **one**
all-reduce (``lax.psum``), and every matrix-free product with the feature-side
operator is one local product plus one all-reduce of a (k, m) block.  All of it
runs on JAX's own SPMD runtime (``jax.shard_map`` over a mesh of all global
devices, several hosts included after ``jax.distributed.initialize``).

Three ways in:

* **whole arrays** -- :func:`shard_rows`, :func:`sharded_gram`,
  :func:`sharded_sigma`, :func:`sharded_gram_operator` take an (n, m) array
  (numpy, ``np.memmap``, JAX, or a ``.npy`` path), pad the rows to a multiple
  of the device count with zero rows and place them on the mesh;
* **collectives in the user's step** -- :func:`gram_psum`, :func:`update_psum`,
  :func:`sigma_psum`, :func:`matmat_rows_psum`, :func:`probe_key` take the
  *local* rows plus an ``axis_name`` and reduce across it.  They are plain
  traced functions built on ``lax.psum`` and serve both a user's
  ``jax.shard_map`` step and a legacy ``jax.pmap`` step (one implementation;
  the whole-array functions above are ``shard_map`` wrappers around them);
* **out of core** -- :func:`stream_gram` / :func:`stream_sigma` read a
  memory-mapped ``.npy`` or a list of ``.npy`` shard files chunk by chunk, with a
  background thread prefetching (disk read + host-to-device copy of) the next
  chunk and an optional tqdm bar, into per-device float64 accumulators that
  are all-reduced once at the end.

Padding and normalisation.  Rows are L2-normalised with a guard
(``scale = 1/||a|| if ||a|| > 0 else 0``), so zero padding rows stay zero and
contribute nothing to ``G`` nor to the Mahalanobis sums of the SIGMA band;
every count (``n_A`` in ``U_cov = S - m log n_A``, ``beta``, the band) uses the
true number of rows, never the padded one.

Float64.  Local products are formed in float64 inside a local
``jax.enable_x64`` context (see ``sigma_jax._x64``); the global flag is never
touched.  ``psum_mode="float64"`` all-reduces float64 directly (works on CPU
(also across processes, gloo) and GPU (NCCL)).  ``psum_mode="pair"`` is for
runtimes whose collectives lack float64 (e.g. TPU): each local Gram is split
into float32 ``hi + lo`` on a grid shared by all devices (one scalar ``pmax``
fixes it), so the psum of the ``hi`` parts is *exact* in float32 and only the
tiny ``lo`` parts round.  Bound, with p devices and ``s = max_{d,ij} |G_d,ij|``:
``|G_pair - G| <= 4 p^3 2^-48 s`` entrywise (7e-12 s for p = 8), against
``(p-1) 2^-24 sum_d |G_d|`` (~4e-7 relative for p = 8) for the naive
"psum the hi parts, psum the lo parts" which throws the pair's extra bits away.

Example (8 devices)::

    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    G = sharded_gram(embeddings, mesh=mesh)                        # (m, m) float64
    rep = sharded_sigma(embeddings, mesh=mesh, n_total=10**6)      # == sigma_jax.sigma(...)

    @jax.jit
    @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), P("data")), out_specs=P())
    def step(state, local_rows):                                   # inside a training loop
        return update_psum(state, local_rows, "data")
"""

from __future__ import annotations

from sigma_jax.sharding.arrays import probe_parallel, sharded_gram, sharded_sigma
from sigma_jax.sharding.collectives import (PSUM_MODES, gram_psum, matmat_rows_psum, probe_key, psum_f64,
                                            sigma_psum, sigma_stats_psum, update_psum)
from sigma_jax.sharding.multihost import initialize_from_env
from sigma_jax.sharding.operator import ShardedGramOperator, sharded_gram_operator
from sigma_jax.sharding.placement import DEFAULT_AXIS, make_mesh, shard_rows
from sigma_jax.sharding.streaming import stream_gram, stream_sigma

__all__ = [
    "DEFAULT_AXIS",
    "PSUM_MODES",
    "make_mesh",
    "shard_rows",
    "sharded_gram",
    "sharded_sigma",
    "ShardedGramOperator",
    "sharded_gram_operator",
    "gram_psum",
    "update_psum",
    "sigma_stats_psum",
    "sigma_psum",
    "matmat_rows_psum",
    "psum_f64",
    "probe_key",
    "probe_parallel",
    "stream_gram",
    "stream_sigma",
    "initialize_from_env",
]
