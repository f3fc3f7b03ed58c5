"""Tensor: a TinyArray plus reverse-mode autograd (the tensor version of micrograd's Value).

Ops live in ``ops.py`` / ``functional.py`` (each with its backward rule) and the graph walk in
``autograd.py``; the methods here are torch's spellings of them (``x + y`` is ``ops.add(x, y)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tinytorch import ops as _ops
from tinytorch.array import TinyArray, format_values
from tinytorch.autograd import backward as _backward_pass
from tinytorch.autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from tinytorch.ops import raw_index_key
from tinytorch.rng import python_rng
from tinytorch.storage import Size, TinyTorchError, bool_, float64, int64

__all__ = ["Tensor", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled"]


class Tensor:
    """An n-d array of numbers with an optional gradient. Create with ``tinytorch.tensor(...)``."""

    __array_priority__ = 1000  # so ``2.0 * t`` reaches Tensor.__rmul__

    def __init__(self, data: Any, requires_grad: bool = False, dtype: str | None = None) -> None:
        if isinstance(data, Tensor):
            data = data.data
        if not isinstance(data, TinyArray):
            data = TinyArray.from_data(data, dtype)
        elif dtype is not None:
            data = data.astype(dtype)
        self.data: TinyArray = data
        self.grad: Tensor | None = None
        self._parents: tuple[Tensor, ...] = ()
        self._op: str = ""
        self._backward: Callable[[TinyArray], Sequence[TinyArray | None]] | None = None
        self._retain = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- facts ---------------------------------------------------------------------------------------
    @property
    def shape(self) -> Size:
        return self.data.shape

    @property
    def dtype(self) -> str:
        return self.data.dtype

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        """True for tensors not made by a recorded op (their ``.grad`` is filled by ``backward``)."""
        return self._backward is None

    def size(self, dim: int | None = None) -> Size | int:
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return self.data.numel()

    def stride(self, dim: int | None = None) -> tuple[int, ...] | int:
        return self.data.stride(dim)

    def storage_offset(self) -> int:
        return self.data.offset

    def is_contiguous(self) -> bool:
        return self.data.is_contiguous()

    def item(self) -> float | int | bool:
        return self.data.item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise TinyTorchError(f"Boolean value of Tensor with more than one value is ambiguous (shape {self.shape})")
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    __hash__ = object.__hash__  # __eq__ is elementwise, so hash by identity (as torch)

    def __repr__(self) -> str:
        body = format_values(self.tolist(), self.dtype, 7)
        extra = ""  # ints print without a decimal point, bools as True/False: the dtype shows
        if self._backward is not None:
            extra += f", grad_fn=<{self._op}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # -- autograd ------------------------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.dtype != float64:
            raise TinyTorchError(f"only Tensors of floating point dtype can require gradients (found {self.dtype})")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after ``backward`` (handy for looking inside a network)."""
        self._retain = True

    def detach(self) -> Tensor:
        """The same data (shared storage), cut from the graph."""
        return Tensor(self.data)

    def backward(self, gradient: Tensor | None = None) -> None:
        """Accumulate d self / d leaf into every leaf's ``.grad`` (``gradient`` = d loss / d self)."""
        if not self.requires_grad:
            raise TinyTorchError("element 0 of tensors does not require grad and does not have a grad_fn")
        if gradient is None:
            if self.numel() != 1:
                raise TinyTorchError("grad can be implicitly created only for scalar outputs")
            seed = TinyArray.full(self.shape, 1.0)
        else:
            seed = gradient.data if isinstance(gradient, Tensor) else TinyArray.from_data(gradient, float64)
            if seed.shape != self.shape:
                raise TinyTorchError(
                    f"Mismatch in shape: grad_output[0] has a shape of {seed.shape} and output[0] has a shape "
                    f"of {self.shape}."
                )
        _backward_pass(self, seed)

    def _accumulate_grad(self, g: TinyArray) -> None:
        """``self.grad += g`` (a fresh contiguous copy: grads never alias each other)."""
        if self.grad is None:
            self.grad = Tensor(TinyArray(g.flat(), g.shape))
        else:
            self.grad.data = self.grad.data + g

    def _new(self, data: TinyArray) -> Tensor:
        """A plain tensor holding ``data`` (ops make their outputs with it, also from a Parameter)."""
        return Tensor(data)

    # -- in-place ops (allowed on leaves only under no_grad, as in torch) ---------------------------
    def _check_inplace(self, *others: Any) -> None:
        if not is_grad_enabled():
            return
        if self.requires_grad and self.is_leaf:
            raise TinyTorchError("a leaf Variable that requires grad is being used in an in-place operation.")
        if self.requires_grad or any(isinstance(o, Tensor) and o.requires_grad for o in others):
            raise TinyTorchError("tinytorch does not record in-place ops in the graph; use the out-of-place op")

    def _assign(self, values: TinyArray) -> Tensor:
        self.data[()] = values
        return self

    def add_(self, other: Any, alpha: float = 1) -> Tensor:
        self._check_inplace(other)
        return self._assign(self.data + _raw(other) * alpha if alpha != 1 else self.data + _raw(other))

    def sub_(self, other: Any, alpha: float = 1) -> Tensor:
        return self.add_(other, -alpha)

    def mul_(self, other: Any) -> Tensor:
        self._check_inplace(other)
        return self._assign(self.data * _raw(other))

    def div_(self, other: Any) -> Tensor:
        self._check_inplace(other)
        return self._assign(self.data / _raw(other))

    def copy_(self, src: Any) -> Tensor:
        self._check_inplace(src)
        return self._assign(_raw(src) if isinstance(src, Tensor) else TinyArray.from_data(src))

    def fill_(self, value: float) -> Tensor:
        self._check_inplace(value)
        self.data[()] = _raw(value)
        return self

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def uniform_(self, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Tensor:
        self._check_inplace()
        rng = python_rng(generator)
        return self._assign(TinyArray([rng.uniform(a, b) for _ in range(self.numel())], self.shape))

    def normal_(self, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
        self._check_inplace()
        rng = python_rng(generator)
        return self._assign(TinyArray([rng.gauss(mean, std) for _ in range(self.numel())], self.shape))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._check_inplace(value)
        self.data[raw_index_key(key)] = _raw(value)

    def __iadd__(self, other: Any) -> Tensor:
        return self.add_(other)

    def __isub__(self, other: Any) -> Tensor:
        return self.sub_(other)

    def __imul__(self, other: Any) -> Tensor:
        return self.mul_(other)

    def __itruediv__(self, other: Any) -> Tensor:
        return self.div_(other)

    # -- ops (the rules live in ops.py; these are torch's method spellings) -------------------------
    def __add__(self, other: Any) -> Tensor:
        return _ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops.div(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return _ops.pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return _ops.pow(other, self)

    def __neg__(self) -> Tensor:
        return _ops.neg(self)

    def __matmul__(self, other: Tensor) -> Tensor:
        return _ops.matmul(self, other)

    def __rmatmul__(self, other: Tensor) -> Tensor:
        return _ops.matmul(other, self)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ops.eq(self, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ops.ne(self, other)

    def __lt__(self, other: Any) -> Tensor:
        return _ops.lt(self, other)

    def __le__(self, other: Any) -> Tensor:
        return _ops.le(self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _ops.gt(self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _ops.ge(self, other)

    def add(self, other: Any, alpha: float = 1) -> Tensor:
        return _ops.add(self, _ops.mul(other, alpha) if alpha != 1 else other)

    def sub(self, other: Any, alpha: float = 1) -> Tensor:
        return _ops.sub(self, _ops.mul(other, alpha) if alpha != 1 else other)

    def mul(self, other: Any) -> Tensor:
        return _ops.mul(self, other)

    def div(self, other: Any) -> Tensor:
        return _ops.div(self, other)

    def pow(self, exponent: Any) -> Tensor:
        return _ops.pow(self, exponent)

    def neg(self) -> Tensor:
        return _ops.neg(self)

    def matmul(self, other: Tensor) -> Tensor:
        return _ops.matmul(self, other)

    def square(self) -> Tensor:
        return _ops.mul(self, self)

    def exp(self) -> Tensor:
        return _ops.unary(self, "exp")

    def log(self) -> Tensor:
        return _ops.unary(self, "log")

    def sqrt(self) -> Tensor:
        return _ops.unary(self, "sqrt")

    def rsqrt(self) -> Tensor:
        return _ops.unary(self, "rsqrt")

    def tanh(self) -> Tensor:
        return _ops.unary(self, "tanh")

    def sigmoid(self) -> Tensor:
        return _ops.unary(self, "sigmoid")

    def relu(self) -> Tensor:
        return _ops.unary(self, "relu")

    def cos(self) -> Tensor:
        return _ops.unary(self, "cos")

    def sin(self) -> Tensor:
        return _ops.unary(self, "sin")

    def abs(self) -> Tensor:
        return _ops.unary(self, "abs")

    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _ops.sum(self, dim, keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _ops.mean(self, dim, keepdim)

    def max(self, dim: int | None = None, keepdim: bool = False) -> Any:
        return _ops.max(self, dim, keepdim)

    def min(self, dim: int | None = None, keepdim: bool = False) -> Any:
        return _ops.min(self, dim, keepdim)

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: int = 1):
        return _ops.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: int = 1):
        return _ops.std(self, dim, unbiased, keepdim, correction=correction)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _ops.argmax(self, dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _ops.argmin(self, dim, keepdim)

    def softmax(self, dim: int) -> Tensor:
        return _ops.softmax(self, dim)

    def log_softmax(self, dim: int) -> Tensor:
        return _ops.log_softmax(self, dim)

    def masked_fill(self, mask: Tensor, value: float) -> Tensor:
        return _ops.masked_fill(self, mask, value)

    def tril(self, diagonal: int = 0) -> Tensor:
        return _ops.tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        return _ops.triu(self, diagonal)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        return _ops.clamp(self, min, max)

    clip = clamp

    # -- shape ops (views share storage with self) --------------------------------------------------
    def view(self, *shape: int) -> Tensor:
        return _ops.view(self, *shape)

    def reshape(self, *shape: int) -> Tensor:
        return _ops.reshape(self, *shape)

    def permute(self, *dims: int) -> Tensor:
        return _ops.permute(self, *dims)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _ops.transpose(self, dim0, dim1)

    def t(self) -> Tensor:
        return _ops.transpose(self, 0, 1) if self.ndim == 2 else self

    @property
    def T(self) -> Tensor:  # noqa: N802 (torch's name)
        return _ops.permute(self, *reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:  # noqa: N802 (torch's name)
        return _ops.transpose(self, -2, -1)

    def unsqueeze(self, dim: int) -> Tensor:
        return _ops.unsqueeze(self, dim)

    def squeeze(self, dim: Any = None) -> Tensor:
        return _ops.squeeze(self, dim)

    def expand(self, *shape: int) -> Tensor:
        return _ops.expand(self, *shape)

    def expand_as(self, other: Tensor) -> Tensor:
        return _ops.expand(self, *other.shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return _ops.reshape(self, 1)
        s, e = start_dim % self.ndim, end_dim % self.ndim
        return _ops.reshape(self, *self.shape[:s], -1, *self.shape[e + 1 :])

    def contiguous(self) -> Tensor:
        return _ops.contiguous(self)

    def clone(self) -> Tensor:
        return _ops.clone(self)

    def split(self, split_size: int, dim: int = 0) -> tuple[Tensor, ...]:
        n = self.shape[dim]
        lead = (slice(None),) * (dim % self.ndim)
        return tuple(self[lead + (slice(i, i + split_size),)] for i in range(0, n, split_size))

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        return self.split(-(-self.shape[dim] // chunks), dim)

    def __getitem__(self, key: Any) -> Tensor:
        return _ops.getitem(self, key)

    # -- conversions ---------------------------------------------------------------------------------
    def to(self, *args: Any, dtype: str | None = None, **kwargs: Any) -> Tensor:
        """``to(dtype)``; devices other than "cpu" are not supported (device strings are accepted)."""
        for a in args:
            if a in (float64, int64, bool_):
                dtype = a
        return self if dtype in (None, self.dtype) else _ops.cast_to(self, dtype)

    def double(self) -> Tensor:
        return self.to(float64)

    float = double  # tinytorch has one float dtype

    def long(self) -> Tensor:
        return self.to(int64)

    def bool(self) -> Tensor:
        return self.to(bool_)


def _raw(x: Any) -> Any:
    """Tensor -> TinyArray; numbers pass through."""
    return x.data if isinstance(x, Tensor) else x
