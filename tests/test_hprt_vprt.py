"""hprt / vprt (and hformat / vformat, which return the text): ascii-art blocks side by side or stacked.

References: the values torch / numpy hold (parsed back from the text), Python's ``print`` for ``sep``/``end``/``file``,
and ``format_tensors``, which draws the same tensors through the same functions.
"""

from __future__ import annotations

import doctest
import io

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import subroutines
import tinytorch
from subroutines import format_tensors, hformat, hprt, vformat, vprt

# printable text without newlines or trailing spaces (trailing spaces of a row are stripped)
line = st.text(st.characters(codec="ascii", categories=["L", "N", "P", "S"]), max_size=8)
block = st.lists(line, min_size=1, max_size=4).map("\n".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(block, min_size=1, max_size=4), st.sampled_from([" ", " | ", "", "\t"]))
def test_hformat_puts_every_block_at_its_column_tops_aligned(blocks, sep):
    rows = hformat(*blocks, sep=sep).split("\n")
    lines = [b.split("\n") for b in blocks]
    assert len(rows) == max(map(len, lines))
    assert all(row == row.rstrip() for row in rows)  # no trailing blanks
    col, total = 0, sum(max(map(len, b)) + len(sep) for b in lines)
    for j, b in enumerate(lines):
        width = max(map(len, b))
        for i, row in enumerate(rows):
            row = row.ljust(total)
            cell = b[i] if i < len(b) else ""  # a shorter block leaves its column blank below (top aligned)
            assert row[col : col + len(cell)] == cell
            assert row[col + len(cell) : col + width].strip() == ""
            if j < len(lines) - 1:  # then the separator (its trailing blanks stripped at the end of a row)
                gap, rest = row[col + width : col + width + len(sep)], row[col + width + len(sep) :]
                assert gap == sep if rest.strip() else gap.rstrip() == sep.rstrip()
        col += width + len(sep)


@settings(max_examples=100, deadline=None)
@given(st.lists(block, min_size=1, max_size=4), st.sampled_from(["\n", "\n\n", "\n---\n"]))
def test_vformat_stacks_blocks_left_aligned(blocks, sep):
    assert vformat(*blocks, sep=sep) == sep.join(blocks)
    assert vformat(*blocks).split("\n") == [x for b in blocks for x in b.split("\n")]


def values(text: str) -> list[list[float]]:
    return [[float(v) for v in row.split()] for row in text.split("\n")]


def test_tensors_are_drawn_as_their_values():
    x = torch.randn(3, 4, dtype=torch.float64)
    for drawn in (x, x.numpy(), tinytorch.tensor(x.tolist()), tinytorch.tensor(x.tolist()).data):
        np.testing.assert_allclose(values(hformat(drawn, precision=6)), x.tolist(), atol=1e-6)
        assert hformat(drawn) == hformat(x)  # torch, numpy, tinytorch Tensor and TinyArray: the same text
    ints = np.arange(12).reshape(3, 4)
    assert values(vformat(ints)) == ints.tolist() and hformat(torch.from_numpy(ints)) == hformat(ints)
    assert values(hformat(torch.tensor([1.5, -2.0], requires_grad=True))) == [[1.5, -2.0]]  # no autograd needed


def test_mixed_arguments_side_by_side_and_nested():
    x = torch.arange(6.0).reshape(2, 3)
    out = hformat("x =", vformat(tuple(x.shape), x), 7, 2.5, np.array([1, 2]), sep="  ").split("\n")
    assert out[0].split() == ["x", "=", "(2,", "3)", "7", "2.5000", "1", "2"]  # every block starts on the top row
    assert out[0].index("(2, 3)") == len("x =  ")  # the shape stacked over the values, beside the name
    assert out[1].startswith(" " * len("x =  ")) and values(out[1].strip()) == [x[0].tolist()]
    assert values(out[2].strip()) == [x[1].tolist()] and len(out) == 3
    assert vformat("name", x.shape, x).split("\n")[:2] == ["name", "(2, 3)"]  # torch.Size drawn as a tuple
    assert vformat(tinytorch.tensor([[1.0]]).shape) == "(1, 1)"


def test_long_axes_are_elided_like_format_tensors():
    x = torch.arange(100).reshape(10, 10)
    rows = hformat(x, max_items=4).split("\n")
    assert rows[2] == "..." and rows[0].split() == ["0", "1", "...", "8", "9"] and len(rows) == 5


def test_format_tensors_is_built_from_hformat_and_vformat():
    x, y = torch.randn(2, 3), torch.arange(3)
    assert format_tensors(x=x, y=y, gap=2) == hformat(
        vformat("x (2, 3) float32", x), vformat("y (3,) int64", y), sep="  "
    )
    assert format_tensors(x=x, y=y, layout="vertical") == vformat(
        vformat("x (2, 3) float32", x), vformat("y (3,) int64", y), sep="\n\n"
    )


def test_print_keywords_behave_as_prints(capsys):
    args = ("a\nbb", 3, torch.tensor([[1, 2], [3, 4]]))
    buf = io.StringIO()
    hprt(*args, sep=" | ", file=buf)
    vprt(*args, file=buf, end="<end>")
    assert buf.getvalue() == hformat(*args, sep=" | ") + "\n" + vformat(*args) + "<end>"
    hprt("one", "line")
    vprt("one", "line", sep=" ")
    print("one", "line")  # the reference: strings without newlines print as print prints them
    out = capsys.readouterr().out.split("\n")
    assert out[0] == out[1] == out[2] == "one line"


def test_exported_from_tinytorch_and_the_docstring_example_runs():
    assert (tinytorch.hprt, tinytorch.vprt, tinytorch.hformat, tinytorch.vformat) == (hprt, vprt, hformat, vformat)
    result = doctest.testmod(subroutines)
    assert result.attempted >= 1 and result.failed == 0
