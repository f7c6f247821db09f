"""Several hosts: start JAX's distributed runtime from environment variables."""

from __future__ import annotations

import os

import jax

__all__ = ["initialize_from_env"]


def initialize_from_env(*, auto: bool = False, timeout_s: int = 300) -> bool:
    """Start JAX's distributed runtime from environment variables (call before any other JAX use).

    Reads ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (optionally
    ``JAX_LOCAL_DEVICE_IDS``, read by JAX itself) and calls
    :func:`jax.distributed.initialize`.  Without them it does nothing and
    returns False (single process), unless ``auto=True``, which calls
    ``jax.distributed.initialize()`` with no arguments so JAX detects the
    cluster itself (SLURM, Open MPI, TPU pods, GKE).

    Returns:
        True when the distributed runtime is (now) running.

    Example:
        >>> initialize_from_env()     # no JAX_COORDINATOR_ADDRESS / ... set: single process
        False

    Launch (two hosts; the same command on both, ``JAX_PROCESS_ID`` 0 and 1)::

        JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python run.py
    """
    if _distributed_running():
        return True
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    nproc = os.environ.get("JAX_NUM_PROCESSES")
    pid = os.environ.get("JAX_PROCESS_ID")
    given = [v is not None for v in (addr, nproc, pid)]
    if any(given) and not all(given):
        raise ValueError("multi-host launch needs all of JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                         f"(got address={addr!r}, num_processes={nproc!r}, process_id={pid!r}).")
    if all(given):
        try:
            num_processes, process_id = int(nproc), int(pid)
        except ValueError:
            raise ValueError(f"JAX_NUM_PROCESSES={nproc!r} and JAX_PROCESS_ID={pid!r} must be integers.") from None
        if not 0 <= process_id < num_processes:
            raise ValueError(f"JAX_PROCESS_ID={process_id} must lie in [0, JAX_NUM_PROCESSES={num_processes}).")
        jax.distributed.initialize(coordinator_address=addr, num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=int(timeout_s))
        return True
    if auto:
        jax.distributed.initialize(initialization_timeout=int(timeout_s))
        return True
    return False


def _distributed_running() -> bool:
    try:
        from jax._src import distributed as _dist

        return _dist.global_state.client is not None
    except Exception:  # private API moved: assume not running
        return False
