"""Neural-network building blocks: ``Module``, ``Parameter`` and the layers a tiny Llama needs.

``Module`` does what ``torch.nn.Module`` does for this purpose: assigning a ``Parameter`` or another
``Module`` to an attribute registers it, so ``named_parameters()`` can walk the tree and name every
weight by its path (``layers.0.attention.wq.weight``). Those names make ``state_dict`` /
``load_state_dict`` interchangeable with torch's for the same architecture. A parameter reachable under
two names (tied embeddings) is one object: ``parameters()`` yields it once, ``state_dict()`` lists both.

Layers (same constructor arguments, names and initialisation ranges as torch): ``Linear``,
``Embedding``, ``RMSNorm``, ``LayerNorm``, ``Sequential``, ``ModuleList``, activations ``Tanh``, ``ReLU``,
``SiLU``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import functional as F
from .array import TinyArray
from .debug import DEBUG
from .rng import python_rng
from .storage import float64
from .tensor import Tensor

__all__ = [
    "ModuleError",
    "Parameter",
    "Module",
    "Linear",
    "Embedding",
    "RMSNorm",
    "LayerNorm",
    "Sequential",
    "ModuleList",
    "Tanh",
    "ReLU",
    "SiLU",
]


class ModuleError(ValueError):
    """A state dict does not fit a module (missing/unexpected keys, wrong shapes), or a bad layer argument."""


class Parameter(Tensor):
    """A Tensor that a ``Module`` registers as a weight; ``requires_grad`` by default."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data)
        self.requires_grad_(requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


def _uniform(shape: tuple[int, ...], bound: float, generator: Any) -> TinyArray:
    """U(-bound, bound) numbers (torch's default for Linear weights: bound = 1 / sqrt(fan_in))."""
    rng = python_rng(generator)
    return TinyArray([rng.uniform(-bound, bound) for _ in range(math.prod(shape))], shape, dtype=float64)


def _normal(shape: tuple[int, ...], generator: Any) -> TinyArray:
    rng = python_rng(generator)
    return TinyArray([rng.gauss(0.0, 1.0) for _ in range(math.prod(shape))], shape, dtype=float64)


def _shape(x: Any) -> Any:
    return tuple(x.shape) if hasattr(x, "shape") else type(x).__name__


class Module:
    """Base class: subclasses set parameters / sub-modules as attributes and define ``forward``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise ModuleError(f"tinytorch/nn.py: {type(self).__name__}: call super().__init__() before setting {name}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.forward is not defined")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.forward(*args, **kwargs)
        if DEBUG.on(self, "forward"):  # ``with DEBUG.flags(Linear): ...`` logs every Linear's shapes
            DEBUG.debug(self, "forward", "%s -> %s", [_shape(a) for a in args], _shape(out))
        return out

    # -- the module tree -------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every sub-module, with dotted names (``""`` for self)."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs; a tied parameter comes once (under its first name) unless asked."""
        seen: set[int] = set()
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if remove_duplicate and id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget all gradients (``grad = None``, torch's default)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = Tensor(TinyArray.full(p.shape, 0.0))

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for m in self.modules():
            fn(m)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- state dicts -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Every parameter under every name it has (tied weights twice), detached but sharing storage."""
        return {name: p.detach() for name, p in self.named_parameters(remove_duplicate=False)}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> tuple[list[str], list[str]]:
        """Copy numbers into the parameters by name; returns (missing, unexpected) keys.

        Values may be tinytorch Tensors, nested lists, or any object with ``tolist()`` (a torch tensor).
        With ``strict`` (default) missing or unexpected keys raise ``ModuleError``; shapes must always match.
        """
        own = dict(self.named_parameters(remove_duplicate=False))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise ModuleError(
                f"tinytorch/nn.py: {type(self).__name__}.load_state_dict: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            if isinstance(value, Tensor):
                arr = value.data
            else:
                arr = TinyArray.from_data(value.tolist() if hasattr(value, "tolist") else value, float64)
            if tuple(arr.shape) != tuple(p.shape):
                raise ModuleError(
                    f"tinytorch/nn.py: load_state_dict: {name}: expected shape {tuple(p.shape)}, "
                    f"found {tuple(arr.shape)}"
                )
            flat = [float(v) for v in arr.flat()]
            p.data.storage[p.data.offset : p.data.offset + len(flat)] = flat  # in place: ties stay tied
        return missing, unexpected

    # -- printing --------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class Linear(Module):
    """y = x W^T + b with W (out_features, in_features), as ``torch.nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, generator: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = Parameter(_uniform((out_features, in_features), bound, generator))  # (out, in)
        self.bias = Parameter(_uniform((out_features,), bound, generator)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out)."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: integer ids (...) -> rows of ``weight`` (num_embeddings, embedding_dim), init N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, generator: Any = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(_normal((num_embeddings, embedding_dim), generator))  # (V, D)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (...) -> (..., D)."""
        return F.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class RMSNorm(Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dim (Zhang & Sennrich 2019; Llama's norm)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(TinyArray.full((dim,), 1.0))  # (D,)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., D) -> (..., D)."""
        return F.rms_norm(x, self.dim, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class LayerNorm(Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dim (biased variance, as torch)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        self.normalized_shape, self.eps = normalized_shape, eps
        self.weight = Parameter(TinyArray.full((normalized_shape,), 1.0)) if elementwise_affine else None
        self.bias = Parameter(TinyArray.full((normalized_shape,), 0.0)) if elementwise_affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        """x (..., D) -> (..., D)."""
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"({self.normalized_shape},), eps={self.eps}"


class ModuleList(Module):
    """A list of sub-modules registered under the names ``0``, ``1``, ... (``layers.0.attention...``)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        setattr(self, str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]


class Sequential(ModuleList):
    """Modules applied one after another: ``Sequential(Linear(2, 8), Tanh(), Linear(8, 1))(x)``."""

    def __init__(self, *modules: Module) -> None:
        super().__init__(modules)

    def forward(self, x: Any) -> Any:
        for m in self:
            x = m(x)
        return x


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class SiLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)
