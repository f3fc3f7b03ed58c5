"""Which device and dtype to run on: one choice, shared by ``Llama.build``, the CLI and each rank.

fp16 matmuls on CPU are slow or missing, and bf16 needs recent GPUs: ``pick_dtype`` chooses a dtype
that works on the device and logs it. Under torchrun, ``cuda`` means this rank's GPU
(``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os

import torch

from LogRelay import get_relay

from .errors import DeviceError

__all__ = ["DTYPES", "pick_device", "pick_dtype"]

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
