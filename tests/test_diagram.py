"""simplellama.diagram: the architecture picture names every parameter of a built model with its shape,
its arrows carry the shapes a real forward pass produces, and it renders to SVG without the `dot` binary."""

from __future__ import annotations

import re

import pytest
import torch

from simplellama.checkpoint import read_header
from simplellama.config import ModelArgs, preset
from simplellama.diagram import PARAMETER_SHAPES, architecture_diagram, glossary_sizes, shape_text
from simplellama.errors import ModelArgsError, ModelError
from simplellama.model import Transformer
from tests.ckpt_factory import tiny_args
from tinytorch import viz

EDGE = re.compile(r'^\s*(\w+) -> (\w+) \[label="([^"]*)"', re.MULTILINE)


def model_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Each parameter of a built Transformer (per-layer names without ``layers.N.``) and its shape."""
    with torch.device("meta"):
        state = Transformer(args).state_dict()
    return {re.sub(r"^layers\.\d+\.", "", k).removesuffix(".weight"): tuple(v.shape) for k, v in state.items()}


ARGS = {
    "tiny": tiny_args(),
    "tiny tied": tiny_args(tie_word_embeddings=True),
    "llama3.2-1b": preset("llama3.2-1b"),
    "llama3.1-405b": preset("llama3.1-405b"),
    "smollm2 (embedded)": read_header().args,
}


@pytest.mark.parametrize("name", ARGS)
def test_letters_give_the_shapes_of_a_built_model(name):
    args = ARGS[name]
    sizes = glossary_sizes(args)
    ours = {m: tuple(int(d) for d in shape_text(s, sizes).strip("()").split(", ")) for m, s in PARAMETER_SHAPES.items()}
    assert ours == model_shapes(args)


@pytest.mark.parametrize("name", ARGS)
def test_diagram_names_every_parameter_with_its_shape(name):
    args = ARGS[name]
    source = architecture_diagram(args).source
    for module, shape in model_shapes(args).items():
        text = f"{module}.weight ({', '.join(map(str, shape))})"
        assert text in source, f"{text!r} not in the diagram"
    assert f"repeated {args.n_layers} times" in source
    tied = "= tok_embeddings.weight (tied)" in source
    assert tied == args.tie_word_embeddings


def test_letters_without_args():
    source = architecture_diagram().source
    for text in ("(B, T, D)", "(H·Dh, D)", "(K·Dh, D)", "(B, H, T, S)", "(B, K, S, Dh)", "(B, T, F)", "(V, D)"):
        assert text in source
    labels = [label for _, _, label in EDGE.findall(source)]
    assert labels and not any(re.search(r"\d", label) for label in labels)  # no number on any arrow


def test_arrows_carry_the_shapes_of_a_real_forward():
    """Hooks record what each module of a tiny model outputs; the arrow leaving its box says the same."""
    args = tiny_args(n_heads=8, n_kv_heads=2)  # G = 4: K, H and G all differ
    B, T, start = 3, 5, 4
    model = Transformer(args).eval()
    modules = {
        "emb": model.tok_embeddings,
        "attn_norm": model.layers[0].attention_norm,
        "wq": model.layers[0].attention.wq,
        "wk": model.layers[0].attention.wk,
        "wv": model.layers[0].attention.wv,
        "wo": model.layers[0].attention.wo,
        "ffn_norm": model.layers[0].ffn_norm,
        "w1": model.layers[0].feed_forward.w1,
        "w3": model.layers[0].feed_forward.w3,
        "swiglu": model.layers[0].feed_forward.w2,  # its input is the SwiGLU's output
        "w2": model.layers[0].feed_forward.w2,
        "norm": model.norm,
    }
    seen: dict[tuple[str, str], tuple[int, ...]] = {}  # (node, "in" or "out") -> shape
    for node, module in modules.items():
        if node in ("attn_norm", "ffn_norm", "norm", "swiglu"):  # their output arrows carry no label
            module.register_forward_pre_hook(lambda m, a, node=node: seen.__setitem__((node, "in"), tuple(a[0].shape)))
        else:
            module.register_forward_hook(lambda m, a, o, node=node: seen.__setitem__((node, "out"), tuple(o.shape)))
    tokens = torch.randint(0, args.vocab_size, (B, T))
    model.setup_cache(B, start + T)
    model(tokens[:, :1].repeat(1, start), start_pos=0)  # fill `start` cached positions
    logits = model(tokens, start_pos=start)
    attention = model.layers[0].attention
    x = torch.randn(B, T, args.dim)
    probs = attention.probs(x, start, model.freqs_cis[start : start + T], None)

    source = architecture_diagram(args, batch=B, seq_len=T, start_pos=start).source
    labelled: dict[tuple[str, str], list[tuple[int, ...]]] = {}
    for src, dst, label in EDGE.findall(source):
        if m := re.search(r"\(([\d, ]+)\)", label):
            shape = tuple(int(d) for d in m.group(1).split(", "))
            labelled.setdefault((src, "out"), []).append(shape)
            labelled.setdefault((dst, "in"), []).append(shape)
    assert len(seen) == len(modules)
    for key, shape in seen.items():
        reshaped = [s[:2] + (torch.Size(s[2:]).numel(),) for s in labelled[key]]  # (B, T, H, Dh) -> (B, T, H*Dh)
        assert shape in labelled[key] or shape in reshaped, (key, shape, labelled[key])
    assert f"weights {tuple(probs.shape)}".replace(",)", ")") in source  # (B, H, T, S), S = start + T
    assert f"logits {tuple(logits.shape)}" in source
    assert tuple(logits.shape) == (B, T, args.vocab_size) and probs.shape[-1] == start + T


def test_renders_to_svg_without_the_dot_binary(monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)  # as on a machine without Graphviz
    svg = architecture_diagram(read_header().args, batch=1, seq_len=7).svg()
    assert "<svg" in svg and "attention.wq.weight (576, 576)" in svg and "logits (1, 7, 49152)" in svg


def test_bad_arguments_are_named():
    with pytest.raises(ModelError, match=r"architecture_diagram: batch must be None or an int >= 1, found 0"):
        architecture_diagram(batch=0)
    with pytest.raises(ModelError, match=r"start_pos must be an int >= 0, found -1"):
        architecture_diagram(start_pos=-1)
    with pytest.raises(ModelArgsError, match=r"args must be a ModelArgs or None, found dict"):
        architecture_diagram({"dim": 64})
