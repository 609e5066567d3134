"""Device and precision choices shared by fine-tuning and generation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from training.engine.errors import EngineError

if TYPE_CHECKING:
    import torch

Bf16Setting = Literal["auto"] | bool


def pick_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_is_fast(device: torch.device) -> bool:
    """True where bf16 matrix units make bf16 faster than fp32.

    On CPUs without AVX512-BF16 or AMX, bf16 is emulated and slower than fp32, so "auto"
    must not choose it there.
    """
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_bf16(setting: Bf16Setting, device: torch.device) -> bool:
    """Turn a config's ``bf16`` ("auto" | True | False) into a decision for ``device``."""
    if setting == "auto":
        return bf16_is_fast(device)
    if setting is True:
        import torch

        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise EngineError("bf16 was requested but this GPU does not support it.")
        return True
    return False


def peak_device_memory(device: torch.device) -> dict[str, int]:
    """``{"peak_device_memory_bytes": n}``: the most this process's tensors held on a CUDA
    device so far (torch's allocator count); nothing on a CPU, where RSS is the measure."""
    import torch

    if device.type != "cuda":
        return {}
    return {"peak_device_memory_bytes": int(torch.cuda.max_memory_allocated(device))}


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception from torch means the device ran out of memory."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    markers = ("out of memory", "can't allocate memory", "defaultcpuallocator")
    return any(marker in text for marker in markers)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def map_large_allocations(threshold: int = 1 << 20) -> None:
    """Have glibc serve every allocation of ``threshold`` bytes or more with its own memory
    map, returned to the operating system as soon as it is freed.

    By default glibc raises that threshold to 32 MB as a program frees large blocks, and
    serves smaller ones from its heap, where a training step's freed gradients and
    temporaries of many sizes stay resident, fragmented, and the next step's land on top:
    the peak grows step by step. Fresh maps cost page faults instead (about 1% of a step).
    """
    import ctypes
    from contextlib import suppress

    with suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, threshold)


def trim_heap() -> None:
    """Return the heap pages glibc holds free to the operating system.

    A training step frees hundreds of MB of gradients and temporaries of many sizes; glibc
    keeps them for reuse, fragmented, so the next step's allocations land on top and the
    process's peak grows step by step. Trimming between steps costs a few milliseconds.
    """
    import ctypes
    from contextlib import suppress

    with suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def release_memory() -> None:
    """Hand memory that a finished job freed back to the operating system.

    Python's collector breaks the cycles a model leaves behind; glibc keeps freed heap
    pages for reuse unless asked to trim, so a worker that ran one fine-tune would otherwise
    hold its peak until it exits; CUDA's caching allocator likewise keeps its blocks.
    """
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim_heap()
