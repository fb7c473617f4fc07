"""Where and at which precision a run computes: the device checked against this machine, autocast;
and how the process gets its memory (:func:`tune_memory`: huge pages, freed blocks kept for reuse).

Device and precision are resolved once per run and logged (``device_used``, ``precision_used``), and
both are part of a sweep's identity, because the same seed gives different numbers in bf16 and fp32.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

from synthmed.errors import SynthmedError

if TYPE_CHECKING:
    import torch

    from synthmed.config import Config

__all__ = ["HUGE_PAGES_ENV", "autocast_dtype", "cpu_has_bf16", "keep_freed_memory", "precision_name",
           "release_freed_memory", "resolve_device", "tune_memory", "use_huge_pages"]

#: PyTorch's CPU allocator backs tensors of 2 MiB and more with transparent huge pages when this is 1
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages() -> None:
    """Let PyTorch back large CPU tensors with transparent huge pages, unless the environment already says.

    A training step of the 128-px CNN allocates several large activations. The C library maps each
    one afresh and the kernel zeroes it 4 KiB page by page; huge pages cut those page faults
    (docs/training.md, "Memory from the C library", gives the measurements). PyTorch reads the variable once, at its first CPU allocation of any size (importing torch makes
    none), so this only takes effect before that: :func:`tune_memory` calls it where
    :func:`keep_freed_memory` does not apply, and the CLI calls that first thing,
    :func:`synthmed.train` and sweeps too (in time when they are the first thing a script does);
    processes a run starts inherit the variable. Where the kernel has huge pages off it changes
    nothing; ``THP_MEM_ALLOC_ENABLE=0`` opts out.
    """
    os.environ.setdefault(HUGE_PAGES_ENV, "1")


#: glibc's own malloc settings: when the environment sets any, :func:`keep_freed_memory` leaves malloc alone
GLIBC_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
TRIM_THRESHOLD = 1 << 30  # free memory kept at the top of the heap before it is given back


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed large blocks for reuse instead of handing them back to the kernel.

    By default glibc maps every block over 32 MiB afresh (``mmap``) and unmaps it when freed, so each
    of a training step's large activations arrives as fresh pages the kernel must fault in and zero
    again, step after step. With ``mallopt(M_MMAP_MAX, 0)`` large blocks come from the heap, and with
    a trim threshold of 1 GiB freed ones stay there to be reused: far fewer page faults and faster
    steps (docs/training.md gives the measurements; ``benchmarks/bench_speed.py`` measures it end to
    end). Peak memory rises, because the process keeps what it freed.

    Takes effect at once, for later allocations. Only on Linux with glibc, and only when the
    environment sets none of glibc's malloc variables (:data:`GLIBC_MALLOC_ENV`, ``GLIBC_TUNABLES``
    with ``glibc.malloc``): ``MALLOC_MMAP_MAX_=65536`` keeps glibc's default. Returns whether it applied.
    """
    import platform

    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(k in os.environ for k in GLIBC_MALLOC_ENV) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    global _KEPT
    _KEPT = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _KEPT


_KEPT = False  # whether keep_freed_memory applied in this process


def release_freed_memory() -> None:
    """After a run: hand the free pages :func:`keep_freed_memory` kept back to the kernel (``malloc_trim``).

    Within a run the kept blocks are reused step after step; across the runs of a sweep, blocks
    of other sizes (evaluation, Grad-CAM, the model export) would pile up in the heap and raise the
    process's peak memory from run to run. A no-op where freed memory is not kept.
    """
    if _KEPT:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)


def tune_memory() -> None:
    """:func:`keep_freed_memory`, else :func:`use_huge_pages`: what the CLI, ``train`` and sweeps do first.

    With freed blocks kept, huge pages no longer pay: they add peak memory and no speed beyond the
    noise (docs/training.md gives the measurements).
    """
    if not keep_freed_memory():
        use_huge_pages()


def resolve_device(config: Config) -> str:
    """``config.device`` checked against this machine (``auto``: CUDA when available)."""
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(config.device)
    except RuntimeError:
        raise SynthmedError(f"device={config.device!r} is not a torch device — use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count or count == 0:
            raise SynthmedError(f"device={config.device!r} but this machine has {count} CUDA device(s) — "
                                "use device=cpu or auto")
    elif device.type != "cpu":
        raise SynthmedError(f"device={config.device!r} is not supported — use auto, cpu, cuda or cuda:N")
    return config.device


def autocast_dtype(config: Config, device: str) -> torch.dtype | None:
    """bf16 autocast where it pays (CUDA with bf16, CPUs with AVX-512 bf16), else ``None`` (fp32)."""
    import torch

    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


def precision_name(config: Config, device: str) -> str:
    """``'bf16'`` or ``'fp32'``: the precision a run with ``config`` actually uses on ``device``."""
    return "bf16" if autocast_dtype(config, device) is not None else "fp32"


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX-512 bf16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
