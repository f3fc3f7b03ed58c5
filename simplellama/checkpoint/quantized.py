"""Quantized loading: each linear weight becomes an int8 / int4 layer as it is read.

``load_for_inference(path, quantize="int4")`` never holds a float copy of the model: the readers
(``meta.py``, ``hf.py``, ``gguf.py``) parse and check the files as always and hand each weight to a
:class:`QuantizingSink` (``common.TensorSink``), which turns the linear weights (wq, wk, wv, wo,
w1, w2, w3, output) into the layers of ``quantize.py`` at once and keeps the rest float. Peak RAM:
quantized layers + float embedding and norms + the one tensor being read, because no page of the
files stays resident after its tensor (Meta and GGUF ``madvise`` them away, HF maps the file anew
per tensor; ``common.trim_heap`` returns the freed float tensors). What each input becomes::

    quantize  Meta / HF / F32, F16 GGUF        Q4_0, Q4_1 GGUF            Q8_0 GGUF
    "auto"    float (logged)                   the file's nibbles, int4   the file's int8 and
                                               g32 (Int4Linear)           scales (Int8GroupLinear)
    "int8"    Int8Linear, per output channel   Int8Linear (requantized)   as "auto"
    "int4"    Int4Linear, group ``group_size``  at g32 as "auto"          Int4Linear (requantized)

K-quants and other GGUF types are dequantized and quantized again (``quantize_gguf.py``). The
embedding table and the norms stay float in the model's dtype; a tied output projection is
quantized from the embedding table (GGUF: from its blocks). The kernels run in bf16 activations
(``quantize.py``); the rest of the model in ``dtype``.

Shapes: N output features, K input features, g group size, V vocab, D model dim.
"""

from __future__ import annotations

from typing import Any

import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from torch import nn

from LogRelay import get_relay

from ..config import ModelArgs
from ..devices import gib
from ..errors import CheckpointError
from ..model import Transformer
from ..quantize import GROUP_SIZES, Int8Linear, QuantizeError, quantize_linear
from ..quantize_gguf import gguf_linear, gguf_target
from .common import Checkpoint, RawBlocks, check_ram, trim_heap
from .keys import LAYER_WEIGHTS, expected_shape, module_of, module_shapes

__all__ = ["QUANTIZE_MODES", "LINEARS", "check_quantize", "layer_bytes", "QuantizingSink"]

log = get_relay("simplellama.checkpoint")

QUANTIZE_MODES = ("auto", "int8", "int4")
LINEARS = (*(m for m in LAYER_WEIGHTS if m.startswith(("attention.w", "feed_forward"))), "output")
KERNEL_DTYPE = torch.bfloat16  # the packed kernels' activation dtype (scales stored in it)
_EMBEDDING = "tok_embeddings.weight"
_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


def check_quantize(quantize: str | None, group_size: int) -> str | None:
    """``quantize`` if it names a mode (None: no quantization), else one line naming it."""
    if quantize is None:
        return None
    if quantize not in QUANTIZE_MODES:
        raise QuantizeError(
            f"quantize: expected None, 'auto', 'int8' or 'int4', found {quantize!r}"
        )
    if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
        sizes = ", ".join(map(str, GROUP_SIZES))
        raise QuantizeError(f"group_size: expected one of {sizes}, found {group_size!r}")
    return quantize


def layer_bytes(kind: str, N: int, K: int, group_size: int, float_itemsize: int) -> int:
    """Bytes an (N, K) weight takes as ``kind`` (``gguf_target``'s names): packed weight + scales.

    int8: N K + a bf16 scale per row; int4: N K / 2 + a bf16 scale and zero per group; "q4":
    int4 at g = 32; "q8" (``Int8GroupLinear``): 2K nibbles per row + scales of 2K/32 groups.
    """
    return {
        "float": N * K * float_itemsize,
        "int8": N * K + 2 * N,
        "int4": N * K // 2 + 4 * N * K // group_size,
        "q4": N * K // 2 + 4 * N * K // 32,
        "q8": N * K + 8 * N * K // 32,
    }[kind]


def _raw_shape(raw: RawBlocks) -> tuple[int, int]:
    """(N, K) of a GGUF weight from its row bytes and its type's block size."""
    N, row = raw.data.shape[0], raw.data.shape[-1]
    if raw.qtype.name in _FLOAT_TYPES:
        return N, row
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(raw.qtype)]
    return N, row // size * block


class QuantizingSink:
    """A ``TensorSink`` that quantizes linear weights as the readers stream them.

    Args:
        mode: ``"auto"``, ``"int8"`` or ``"int4"`` (see the module docstring).
        group_size: inputs per int4 scale and zero.
        device: where the quantized layers (and, later, the model) go.
        dtype: float dtype of the embedding and norms (None: as stored; GGUF float32).

    After loading, :meth:`build_model` makes the ``Transformer`` from the checkpoint and
    ``layers`` (module name -> quantized layer).
    """

    def __init__(
        self, mode: str, group_size: int, device: torch.device, dtype: torch.dtype | None
    ) -> None:
        self.mode, self.group_size, self.device, self.dtype = mode, group_size, device, dtype
        self.layers: dict[str, nn.Module] = {}
        self.source, self.args, self.stored = "", None, None
        self.embedding: RawBlocks | None = None  # a GGUF embedding's blocks, for a tied output

    def _kind(self, key: str) -> str:
        """What the linear weight ``key`` becomes (``layer_bytes``' names)."""
        if self.stored is None:  # Meta / HF: float tensors
            return "float" if self.mode == "auto" else self.mode
        qtype = self.stored.get(key) or self.stored.get(_EMBEDDING, "F32")  # tied: the table's
        return gguf_target(qtype, self.mode, self.group_size)

    def check_ram(
        self,
        source: str,
        args: ModelArgs,
        cache_device: torch.device | str | None,
        itemsize: int,
        stored: dict[str, str] | None = None,
    ) -> None:
        """Check every layer's shape against the kernels, then the quantized size against RAM."""
        self.source, self.args, self.stored = source, args, stored
        shapes, g, L = module_shapes(args), self.group_size, args.n_layers
        keys = [f"layers.0.{m}.weight" for m in LINEARS[:-1]]  # Meta / HF: one kind per module
        if stored is not None:  # GGUF: types may differ per layer (K-quant mixes)
            keys = [k for k in stored if k is not None and module_of(k) in LINEARS[:-1]]
        parts = {"quantized weights": 0, "float weights": 0}
        for key in [*keys, "output.weight"]:
            N, K = shapes[module_of(key)]
            kind = self._kind(key)
            self._check_shape(key.removesuffix(".weight"), kind, N, K)
            count = L if stored is None and key != "output.weight" else 1
            n_bytes = count * layer_bytes(kind, N, K, g, itemsize)
            parts["float weights" if kind == "float" else "quantized weights"] += n_bytes
        V, D = shapes["tok_embeddings"]
        parts["float weights"] += (V * D + (2 * L + 1) * D) * itemsize  # embedding, norms
        largest = max(s[0] * s[1] for s in shapes.values() if len(s) == 2)
        parts["largest tensor being read"] = 4 * largest  # float32, or GGUF blocks unpacked
        check_ram(source, parts, args, cache_device, itemsize)

    def _check_shape(self, layer: str, kind: str, N: int, K: int) -> None:
        """One line naming the layer whose shape the chosen kernel cannot take."""
        cpu = self.device.type == "cpu"
        if kind == "int4" and K % self.group_size:
            raise QuantizeError(
                f"{self.source}: {layer}: group_size {self.group_size} does not divide its "
                f"input features K = {K}; use a group size dividing K or quantize='int8'"
            )
        if kind == "int8" and K % 16:
            raise QuantizeError(f"{self.source}: {layer}: int8 needs input features K a multiple "
                                f"of 16 (torch's kernel), found K = {K}")  # fmt: skip
        if kind in ("int4", "q4", "q8") and cpu and N % 16:
            raise QuantizeError(f"{self.source}: {layer}: int4 on CPU needs output features N a "
                                f"multiple of 16 (torch's packing), found N = {N}")  # fmt: skip

    def __call__(self, key: str, weight: torch.Tensor | RawBlocks) -> torch.Tensor:
        """A quantized layer kept aside (and a ``meta`` stand-in returned), or the float tensor."""
        raw = weight if isinstance(weight, RawBlocks) else None
        if module_of(key) not in LINEARS:
            if key == _EMBEDDING and raw is not None:
                self.embedding = raw  # memory-mapped: costs nothing until read again
            return self._float(weight)
        found = _raw_shape(raw) if raw is not None else tuple(weight.shape)
        if found != expected_shape(key, self.args):  # check_state_dict reports it, by name
            return torch.empty(found, device="meta")
        layer = self.quantize(key, weight)
        if layer is None:  # "auto" on a float GGUF tensor
            return self._float(weight)
        self.layers[key.removesuffix(".weight")] = layer
        del weight
        trim_heap()  # the float tensor just read is freed: give its pages back before the next
        return torch.empty(found, device="meta")

    def _float(self, weight: torch.Tensor | RawBlocks) -> torch.Tensor:
        if isinstance(weight, RawBlocks):
            return weight.dequantize(self.dtype or torch.float32)
        # a copy: a tensor viewing the file's mapping (safetensors, torch.load(mmap=True)) would
        # keep every page read from it resident, the quantized weights' too
        return weight.to(self.dtype or weight.dtype, copy=True)

    def quantize(self, key: str, weight: torch.Tensor | RawBlocks) -> nn.Module | None:
        """The layer for one weight (None: stays float); errors name the file and the tensor."""
        name = weight.name if isinstance(weight, RawBlocks) else key
        try:
            if not isinstance(weight, RawBlocks):
                return quantize_linear(weight, self.mode, self.group_size, self.device)
            if weight.qtype.name in _FLOAT_TYPES:  # through check_weight, then our formulas
                if self.mode == "auto":
                    return None
                w = weight.dequantize(torch.float32)
                return quantize_linear(w, self.mode, self.group_size, self.device)
            layer = gguf_linear(weight.data, weight.qtype, self.mode, self.group_size,
                                self.device, KERNEL_DTYPE)  # fmt: skip
        except QuantizeError as e:
            raise QuantizeError(f"{self.source}: {name}: {e}") from None
        scales = layer.scale if isinstance(layer, Int8Linear) else layer.scale_and_zero
        if not bool(torch.isfinite(scales).all()):
            raise CheckpointError(f"{self.source}: {name}: a block's scale is inf or nan; "
                                  "expected finite values")  # fmt: skip
        return layer

    def build_model(self, ckpt: Checkpoint, device: torch.device) -> Transformer:
        """The ``Transformer`` with the quantized layers and the checkpoint's float tensors."""
        args, sd = ckpt.args, ckpt.state_dict
        model = Transformer(args, device="meta", dtype=sd[_EMBEDDING].dtype)
        if args.tie_word_embeddings and "output" not in self.layers:
            layer = self.quantize("output.weight", self.embedding or sd[_EMBEDDING])
            if layer is not None:
                self.layers["output"] = layer
        for name, layer in self.layers.items():
            model.set_submodule(name, layer)
        floats = {k: t for k, t in sd.items() if k.removesuffix(".weight") not in self.layers}
        model.load_state_dict(floats, strict=False, assign=True)
        if args.tie_word_embeddings and isinstance(model.output, nn.Linear):
            model.output.weight = model.tok_embeddings.weight  # "auto" on a float table
        model = model.to(device)
        meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if meta:
            raise CheckpointError(f"{ckpt.path}: {meta[0]} was not loaded (internal error)")
        ckpt.state_dict = {}  # the model holds the weights; no stand-ins left behind
        _log_summary(ckpt, model, self.layers)
        return model.eval()


def _log_summary(ckpt: Checkpoint, model: nn.Module, layers: dict[str, Any]) -> None:
    kinds: dict[str, int] = {}
    for layer in layers.values():
        name = type(layer).__name__
        if hasattr(layer, "group_size") and name == "Int4Linear":
            name += f" g{layer.group_size}"
        kinds[name] = kinds.get(name, 0) + 1
    n_bytes = sum(t.nbytes for t in [*model.parameters(), *model.buffers()])
    shown = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none (all float)"
    log.info("%s: quantized layers: %s; model %s in all", ckpt.path, shown, gib(n_bytes))
