"""Which device and dtype to run on, and whether an allocation fits there.

fp16 matmuls on CPU are slow or missing, and bf16 needs recent GPUs: ``pick_dtype`` chooses a dtype
that works on the device and logs it. Under torchrun, ``cuda`` means this rank's GPU
(``cuda:LOCAL_RANK``).

``check_memory`` compares an estimate (weights, KV cache, RoPE table) with the memory available
before anything is allocated, so a config that cannot fit is refused with both numbers instead of
ending in the OS's OOM kill ("Killed"). On the CPU "available" is the least of the kernel's
``MemAvailable``, the cgroup's limit (containers) and the address-space limit (``ulimit -v``).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import torch

from LogRelay import get_relay

from .errors import DeviceError, InsufficientMemoryError

__all__ = ["DTYPES", "pick_device", "pick_dtype", "available_memory", "check_memory", "gib"]

log = get_relay("simplellama.devices")

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as given, else CUDA when available, else CPU; ``cuda`` under torchrun:
    ``cuda:LOCAL_RANK``."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {str(device)!r} requested but torch.cuda.is_available() is False"
        )
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """A dtype that works on ``device``: float32 on CPU (fp16 matmuls are slow or missing there),
    bfloat16 on CUDA when supported, else float16. An explicit ``dtype`` (or its name) wins."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise DeviceError(f"dtype: expected one of {', '.join(DTYPES)}, found {dtype!r}")
        dtype = DTYPES[dtype]
    if dtype is None:
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif device.type == "mps":
            dtype = torch.float16
        else:
            dtype = torch.float32
        log.info("dtype: %s picked for device %s", dtype, device)
    return dtype


def _proc_kib(path: str, key: str) -> int | None:
    """A ``key: N kB`` line of a /proc file, in bytes (None where there is no /proc)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit (None: no limit or no cgroup)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def _cpu_available() -> int | None:
    room = [_proc_kib("/proc/meminfo", "MemAvailable"), _cgroup_room()]
    if room[0] is None:  # no /proc (macOS): free pages
        try:
            room[0] = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    vm = _proc_kib("/proc/self/status", "VmSize")
    if soft != resource.RLIM_INFINITY and vm is not None:
        room.append(max(soft - vm, 0))
    known = [r for r in room if r is not None]
    return min(known) if known else None


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes that can still be allocated on ``device`` (default CPU); None when unknown."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cpu":
        return _cpu_available()
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[0]
    return None  # meta (nothing is allocated), mps, ...


def gib(n: int) -> str:
    """``n`` bytes as GiB (or MiB when small), for messages."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_memory(
    what: str, parts: dict[str, int], device: torch.device | str | None = None, hint: str = ""
) -> int:
    """Raise :class:`InsufficientMemoryError` unless ``parts`` (name -> bytes) fit on ``device``.

    Args:
        what: the allocation, for the message (e.g. ``"Transformer(args)"`` or a checkpoint path).
        parts: what the total is made of, e.g. ``{"weights": ..., "KV cache": ...}``.
        device: where they go; "meta" needs nothing.
        hint: what to lower, appended to the message.

    Returns:
        The total in bytes.
    """
    total = sum(parts.values())
    device = torch.device("cpu" if device is None else device)
    if device.type == "meta" or total == 0:
        return total
    avail = available_memory(device)
    if avail is not None and total > avail:
        shown = " + ".join(f"{name} {gib(n)}" for name, n in parts.items() if n)
        raise InsufficientMemoryError(
            f"{what}: needs {gib(total)} ({shown}) on {device}, {gib(avail)} available"
            + (f"; {hint}" if hint else "")
        )
    log.debug("%s: %s on %s, %s available", what, gib(total), device, avail)
    return total
