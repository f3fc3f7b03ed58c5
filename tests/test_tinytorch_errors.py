"""tinytorch's error messages read like torch's: each case runs the same mistake in torch and
requires the same exception kind and the same message text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import tinytorch as tt
from tinytorch.storage import TinyTorchError


def torch_message(fn: Callable[[], object]) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        fn()
    return info.type, str(info.value)


def f64(L: object) -> object:
    return torch.float64 if L is torch else tt.float64


CASES = {
    "matmul": lambda L: L.ones(2, 3, dtype=f64(L)) @ L.ones(4, 5, dtype=f64(L)),
    "matmul_batched_rows": lambda L: L.ones(2, 3, 3, dtype=f64(L)) @ L.ones(4, 5, dtype=f64(L)),
    "broadcast": lambda L: L.ones(2, 3, dtype=f64(L)) + L.ones(2, 4, dtype=f64(L)),
    "broadcast_rank": lambda L: L.ones(5, 2, 3, dtype=f64(L)) * L.ones(4, 1, dtype=f64(L)),
    "backward_non_scalar": lambda L: (L.ones(3, dtype=f64(L), requires_grad=True) * 2).backward(),
    "backward_no_grad": lambda L: L.ones(3, dtype=f64(L)).sum().backward(),
    "inplace_leaf_add": lambda L: L.ones(3, dtype=f64(L), requires_grad=True).add_(1.0),
    "inplace_leaf_mul": lambda L: L.ones(3, dtype=f64(L), requires_grad=True).mul_(2.0),
    "inplace_leaf_zero": lambda L: L.ones(3, dtype=f64(L), requires_grad=True).zero_(),
    "inplace_leaf_fill": lambda L: L.ones(3, dtype=f64(L), requires_grad=True).fill_(2.0),
    "inplace_leaf_copy": lambda L: L.ones(3, dtype=f64(L), requires_grad=True).copy_(L.zeros(3, dtype=f64(L))),
    "index_out_of_range": lambda L: L.ones(3, 2, dtype=f64(L))[5],
    "index_out_of_range_dim1": lambda L: L.ones(3, 2, dtype=f64(L))[0, -3],
    "too_many_indices": lambda L: L.ones(3, dtype=f64(L))[0, 0],
    "dim_out_of_range": lambda L: L.ones(3, 2, dtype=f64(L)).sum(2),
    "view_invalid_size": lambda L: L.ones(2, 3, dtype=f64(L)).view(4, 2),
    "view_non_contiguous": lambda L: L.ones(2, 3, dtype=f64(L)).t().view(6),
    "cat_sizes": lambda L: L.cat([L.ones(2, 3, dtype=f64(L)), L.ones(3, 2, dtype=f64(L))], dim=1),
    "stack_sizes": lambda L: L.stack([L.ones(2, 3, dtype=f64(L)), L.ones(2, 4, dtype=f64(L))]),
    "item_many": lambda L: L.ones(2, dtype=f64(L)).item(),
    "bool_ambiguous_prefix": lambda L: bool(L.ones(2, dtype=f64(L))),
    "int_requires_grad_prefix": lambda L: L.ones(2, dtype=L.int64 if L is tt else torch.int64).requires_grad_(),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_matches_torch(name: str) -> None:
    ref_type, ref_msg = torch_message(lambda: CASES[name](torch))
    with pytest.raises(Exception) as info:
        CASES[name](tt)
    ours = str(info.value)
    assert issubclass(info.type, IndexError if issubclass(ref_type, IndexError) else RuntimeError), info.type
    assert issubclass(info.type, TinyTorchError)
    if name.endswith("_prefix"):  # we add the shape after torch's sentence
        assert ours.startswith(ref_msg), (ours, ref_msg)
    else:
        assert ours == ref_msg


def test_the_four_headline_messages() -> None:
    """The messages the issue names, spelled out (torch's wording; shapes in the text)."""
    with pytest.raises(RuntimeError, match=r"^mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x5\)$"):
        tt.ones(2, 3) @ tt.ones(4, 5)
    with pytest.raises(RuntimeError, match=r"The size of tensor a \(3\) must match the size of tensor b \(4\) at "):
        tt.ones(2, 3) + tt.ones(2, 4)
    with pytest.raises(RuntimeError, match="^grad can be implicitly created only for scalar outputs$"):
        (tt.ones(3, requires_grad=True) * 2).backward()
    with pytest.raises(RuntimeError, match=r"^a leaf Variable that requires grad is being used in an in-place"):
        tt.ones(3, requires_grad=True).add_(1.0)
    with pytest.raises(IndexError, match="^index 5 is out of bounds for dimension 0 with size 3$"):
        tt.ones(3)[5]


def test_inplace_on_leaf_is_fine_under_no_grad_and_non_leaf_is_refused() -> None:
    w = tt.ones(3, requires_grad=True)
    with tt.no_grad():
        w -= 0.5  # an optimizer step
    assert w.tolist() == [0.5, 0.5, 0.5] and w.requires_grad and w.is_leaf
    with pytest.raises(TinyTorchError, match="does not record in-place ops"):
        (w * 2).mul_(3.0)


def test_backward_gradient_shape_mismatch() -> None:
    ref_type, ref_msg = torch_message(
        lambda: (torch.ones(2, dtype=torch.float64, requires_grad=True) * 2).backward(
            torch.ones(3, dtype=torch.float64)
        )
    )
    with pytest.raises(TinyTorchError) as info:
        (tt.ones(2, requires_grad=True) * 2).backward(tt.ones(3))
    assert str(info.value).replace("tinytorch.Size", "torch.Size") == ref_msg


def test_cross_entropy_target_out_of_range() -> None:
    ref_type, ref_msg = torch_message(
        lambda: torch.nn.functional.cross_entropy(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 5]))
    )
    with pytest.raises(IndexError) as info:
        tt.functional.cross_entropy(tt.zeros(2, 3), tt.tensor([0, 5]))
    assert str(info.value) == ref_msg
