"""tinytorch: a pure-Python tensor library with reverse-mode autograd (no numpy, no torch inside).

    >>> import tinytorch as tt
    >>> x = tt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> (x @ x.T).sum().backward()
    >>> x.grad.tolist()
    [[8.0, 12.0], [8.0, 12.0]]

Layers: storage.py (index arithmetic) -> array.py (TinyArray: strided views over a flat list) ->
autograd.py (grad mode, recording, the backward walk) -> ops.py (ops with their backward rules) ->
tensor.py (Tensor: torch's method spellings of the ops) -> creation.py, functional.py, nn.py, optim.py.
rng.py holds the seeded Generator; no module imports one that imports it back.
"""

from subroutines import hformat, hprt, vformat, vprt  # ascii-art printing of tensors beside text
from tinytorch import functional, nn, optim
from tinytorch.array import TinyArray
from tinytorch.autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from tinytorch.creation import (
    arange,
    empty,
    eye,
    full,
    full_like,
    linspace,
    multinomial,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from tinytorch.debug import DEBUG, DebugHelper, DebugPop, DebugPush
from tinytorch.ops import (
    abs,
    argmax,
    argmin,
    cat,
    clamp,
    cos,
    exp,
    log,
    log_softmax,
    masked_fill,
    matmul,
    max,
    mean,
    min,
    relu,
    rsqrt,
    sigmoid,
    sin,
    softmax,
    sqrt,
    stack,
    std,
    sum,
    tanh,
    tril,
    triu,
    var,
    where,
)
from tinytorch.rng import Generator, default_generator, manual_seed
from tinytorch.storage import ShapeError, Size, TinyIndexError, TinyTorchError, bool_, float64, int64
from tinytorch.tensor import Tensor
from tinytorch.value import Value
from tinytorch.viz import draw_dot

float = double = float64
long = int64
bool = bool_

__all__ = [
    "Tensor", "TinyArray", "Size", "Generator", "default_generator", "manual_seed",
    "TinyTorchError", "ShapeError", "TinyIndexError",
    "float64", "float", "double", "int64", "long", "bool",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
    "tensor", "zeros", "ones", "full", "empty", "eye", "arange", "linspace", "rand", "randn", "randint", "randperm",
    "multinomial", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
    "matmul", "cat", "stack", "where", "masked_fill", "tril", "triu", "clamp", "softmax", "log_softmax",
    "argmax", "argmin", "functional", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "cos", "sin", "abs",
    "sum", "mean", "max", "min", "var", "std",
    "nn", "optim", "Value", "draw_dot", "DEBUG", "DebugHelper", "DebugPush", "DebugPop",
    "hprt", "vprt", "hformat", "vformat",
]  # fmt: skip
