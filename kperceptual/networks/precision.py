"""Numeric precision: Keras dtype policies, and whether this CPU computes bfloat16 natively.

Backend-neutral: each backend is asked for its GPUs in its own words.
"""

from __future__ import annotations

import contextlib

import keras


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AMX or AVX-512 bf16 instructions (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def _gpu_compute_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of the GPUs the running Keras backend sees (empty: none)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [tuple(tf.config.experimental.get_device_details(g).get("compute_capability",
                                                                        (0, 0)))
                for g in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [tuple(int(p) for p in str(getattr(d, "compute_capability", "0.0")).split(".")[:2])
                for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    return []


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``mixed_bfloat16`` where every device computes bf16 natively (GPUs of compute
    capability 8.0 or newer; CPUs with AMX or AVX-512 bf16), else ``float32``. On a CPU, JAX
    gets ``float32``: its bf16 steps were slower there (docs/benchmarks.md, "Training speed")."""
    if precision != "auto":
        return precision
    gpus = _gpu_compute_capabilities()
    if gpus:
        return "mixed_bfloat16" if all(c >= (8, 0) for c in gpus) else "float32"
    native = cpu_has_native_bf16() and keras.backend.backend() != "jax"
    return "mixed_bfloat16" if native else "float32"


@contextlib.contextmanager
def dtype_policy(name: str):
    """Sets Keras's global dtype policy inside the block only."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
