"""Quantized loading (``checkpoint/quantized.py``): weights quantized while they stream from the files.

References we did not write: ``gguf.quants.dequantize`` of the file's own bytes (llama.cpp's block
formats) for GGUF inputs; for float inputs the published formulas, applied here to the float weights
(int8 absmax per row, int4 min/max per group); the fp32 model from the float loader (tested against
transformers and Meta's code elsewhere). Bounds, with u = 2^-8 bf16's unit roundoff (scales are
stored in bf16):

* int8: scale = absmax / 127, inflated by 2^-7 and rounded up: |w - w~| <= scale / 2 <= absmax / 254 (1 + 2^-6).
* int4: scale = (max - min) / 15 likewise, zero = min + 8 scale rounded: |w - w~| <= scale / 2 + u |zero|.
* GGUF blocks carried as they are: only d (and m) are rounded from fp16 to bf16. Q4_0 x = d (q - 8):
  |err| <= 8 u |d|; Q4_1 x = d q + m, stored as (q - 8) d + (m + 8 d): |err| <= u (8 |d| + |m + 8 d|);
  Q8_0 x = d q: |err| <= u |d| |q| <= 128 u |d|.
* logits: each quantized layer within its bound teacher-forced, and the whole model against float64 on
  the dequantized weights within the summed rounding bound (``check_layers`` of test_quantize.py, its
  derivation there); against the fp32 model that bound plus the first-order sum of each layer's weight
  error term ||(|x| @ E^T)|| / ||x W^T||.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize
from test_quantize import U, check_layers, float_linears, reference_model, relative_error, weight_error_bound

from simplellama.checkpoint import convert, default_model_path, load_for_inference, load_model
from simplellama.generation import Llama
from simplellama.quantize import Int4Linear, Int8GroupLinear, Int8Linear, quantize_linear
from tests.ckpt_factory import random_state_dict, tiny_args, write_hf, write_meta

LINEARS = ("attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1", "feed_forward.w2",
           "feed_forward.w3")  # fmt: skip
TOKENS = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(1))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_state_dict(args, seed=0):
    """Weights at a realistic scale (|logits| ~ 1), as test_convert_gguf.py's."""
    sd = random_state_dict(args, seed)
    return {k: v if v.ndim == 1 or k.startswith("tok_") else v * 0.25 for k, v in sd.items()}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Every input format, each holding the same kind of tiny model."""
    root = tmp_path_factory.mktemp("ckpts")
    args = tiny_args()
    sd = small_state_dict(args)
    paths = {"meta": root / "meta", "meta2": root / "meta2", "hf": root / "hf"}
    write_meta(paths["meta"], args, sd=sd)
    write_meta(paths["meta2"], args, n_shards=2, sd=sd)
    write_hf(paths["hf"])
    for t in ("F32", "Q8_0", "Q4_0"):
        paths[t] = convert(paths["meta"], root / f"tiny.{t}.gguf", to="gguf", outtype=t)
    tied = tiny_args(tie_word_embeddings=True)
    write_meta(root / "tied", tied, sd=small_state_dict(tied))
    paths["tied"] = root / "tied"
    return paths


def linear_names(model) -> list[str]:
    return [f"layers.{i}.{m}" for i in range(len(model.layers)) for m in LINEARS] + ["output"]


# ---- weights ----------------------------------------------------------------------------------------------


def formula_bound(w: torch.Tensor, mode: str, group_size: int) -> torch.Tensor:
    """The published formulas' error bound for each weight of w (N, K), computed from w alone."""
    w = w.double()
    if mode == "int8":
        scale = w.abs().amax(1, keepdim=True) / 127 * (1 + 2**-6)  # (N, 1)
        return (scale / 2).expand_as(w)
    N, K = w.shape
    groups = w.reshape(N, K // group_size, group_size)
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = (hi - lo) / 15 * (1 + 2**-6)
    bound = scale / 2 + U * (lo + 8 * scale).abs() * (1 + U)
    return bound.expand_as(groups).reshape(N, K)


@pytest.mark.parametrize("fmt", ["meta", "meta2", "hf", "F32"])
@pytest.mark.parametrize("mode, group_size", [("int8", 32), ("int4", 32)])
def test_float_checkpoints_quantized_by_the_formulas(ckpts, fmt, mode, group_size):
    """Streamed layers = the formulas on the float loader's weights (within their bound), and exactly the
    post-hoc quantization of the same weight: shards, q/k order and names all land where they belong.
    (Group 64: TINY's w2 has K = 96, refused in test_bad_inputs.py; Llama.build below runs it.)"""
    floats = dict(load_model(ckpts[fmt])[0].named_modules())
    model = load_model(ckpts[fmt], quantize=mode, group_size=group_size)[0]
    layers = dict(model.named_modules())
    kind = Int8Linear if mode == "int8" else Int4Linear
    for name in linear_names(model):
        layer, w = layers[name], floats[name].weight.detach()
        assert type(layer) is kind, f"{fmt} {name}: {type(layer).__name__}"
        got = layer.dequantize(torch.float64)
        excess = ((got - w.double()).abs() - formula_bound(w, mode, group_size)).max()
        assert excess <= 0, f"{fmt} {name}: error above the formula's bound by {excess:.3g}"
        post_hoc = quantize_linear(w, mode, group_size).dequantize(torch.float64)
        assert torch.equal(got, post_hoc), f"{fmt} {name}"
    for name in ("tok_embeddings", "norm", "layers.1.ffn_norm"):  # float, as the float loader's
        assert torch.equal(layers[name].weight, floats[name].weight), name


def gguf_tensors(path) -> dict:
    """Meta module name -> gguf ReaderTensor of the file's linear weights."""
    from simplellama.checkpoint.keys import gguf_to_meta_name

    return {gguf_to_meta_name(t.name).removesuffix(".weight"): t for t in gguf.GGUFReader(path).tensors}


def block_bound(t) -> torch.Tensor:
    """The bf16 rounding of the block scales (module docstring), per weight, from the file's bytes."""
    name, raw = t.tensor_type.name, np.asarray(t.data)
    size = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}[name]
    blocks = raw.reshape(raw.shape[0], -1, size)
    d = torch.from_numpy(blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float64)).abs()
    if name == "Q4_0":
        bound = 8 * U * d
    elif name == "Q4_1":
        m = torch.from_numpy(blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float64))
        bound = U * (8 * d + (m + 8 * d).abs() * (1 + 2**-20))
    else:
        bound = 128 * U * d
    return bound.repeat_interleave(32, dim=1)


def check_blocks(model, path, names) -> None:
    tensors, layers = gguf_tensors(path), dict(model.named_modules())
    tensors.setdefault("output", tensors["tok_embeddings"])  # tied: the output is the table's blocks
    for name in names:
        t, layer = tensors[name], layers[name]
        expected = Int8GroupLinear if t.tensor_type.name == "Q8_0" else Int4Linear
        assert type(layer) is expected, f"{path.name} {name}: {type(layer).__name__} for {t.tensor_type.name}"
        ref = torch.from_numpy(dequantize(t.data, t.tensor_type)).double()
        excess = ((layer.dequantize(torch.float64) - ref).abs() - block_bound(t)).max()
        assert excess <= 0, f"{path.name} {name}: above the bf16 scale rounding by {excess:.3g}"


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0"])
def test_gguf_blocks_kept_as_written(ckpts, fmt):
    """Our writer's Q8_0 / Q4_0 files under "auto" (and int4 at group 32 for Q4_0): gguf's dequantize."""
    model = load_model(ckpts[fmt], quantize="auto")[0]
    check_blocks(model, ckpts[fmt], linear_names(model))
    assert model.tok_embeddings.weight.dtype == torch.float32
    if fmt == "Q4_0":
        check_blocks(load_model(ckpts[fmt], quantize="int4")[0], ckpts[fmt], linear_names(model))


def test_embedded_q4_1_file_kept_as_written():
    """llama.cpp's SmolLM2 file under "auto": Q4_1 and Q8_0 blocks as stored; the tied output from token_embd."""
    path = default_model_path()
    model = load_model(path, quantize="auto")[0]
    names = [n for n in linear_names(model) if n.startswith(("layers.0.", "layers.15.", "layers.29.", "output"))]
    check_blocks(model, path, names)
    t = gguf_tensors(path)["tok_embeddings"]
    table = torch.from_numpy(dequantize(t.data, t.tensor_type))
    assert torch.equal(model.tok_embeddings.weight, table)  # the lookup table stays float, as the float loader's


def test_float_gguf_stays_float_under_auto(ckpts):
    model = load_model(ckpts["F32"], quantize="auto")[0]
    assert all(type(m) is torch.nn.Linear for n, m in model.named_modules() if n in linear_names(model))
    reference = load_model(ckpts["F32"])[0]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_auto_on_a_float_checkpoint_and_none_are_the_float_loader(ckpts):
    reference = load_model(ckpts["meta"])[0].state_dict()
    for quantize in (None, "auto"):
        sd = load_model(ckpts["meta"], quantize=quantize)[0].state_dict()
        assert sd.keys() == reference.keys() and all(torch.equal(sd[k], reference[k]) for k in sd)


# ---- logits -------------------------------------------------------------------------------------------------


def weight_term(model, floats) -> float:
    """Sum over layers of ||sqrt(x^2 @ E^2^T / 3)|| / ||x W^T||: the logits' relative error from the
    quantized weights themselves, E each layer's per-weight bound and x its input in the fp32 model. The
    standard quantization-noise model: errors independent, uniform in [-E, E] (RMS E / sqrt(3)), so a
    layer's output error has RMS sqrt(x^2 @ E^2^T / 3) (as the rounding term of check_layers); to first
    order the layers' relative errors add up."""
    layers, total = dict(model.named_modules()), 0.0
    for name, (W, x) in floats.items():
        if not isinstance(layers[name], torch.nn.Linear):
            E, x = weight_error_bound(layers[name]), x.double()
            total += ((x**2 @ (E**2).T / 3).sqrt().norm() / (x @ W.double().T).norm()).item()
    return total


@pytest.mark.parametrize("fmt", ["meta", "meta2", "hf", "F32", "Q8_0", "Q4_0", "tied"])
@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_logits_match_the_fp32_model(ckpts, fmt, mode):
    float_model = load_model(ckpts[fmt])[0]
    model = load_model(ckpts[fmt], quantize=mode)[0]
    floats = float_linears(float_model, TOKENS)
    rounding = check_layers(model, floats)  # each layer within its bound on the fp32 model's input
    weights = weight_term(model, floats)
    with torch.no_grad():
        y = model(TOKENS, start_pos=None)
        ref = reference_model(float_model, model)(TOKENS, start_pos=None)
        fp32 = float_model(TOKENS, start_pos=None)
        model.setup_cache(1, 32)
        steps = torch.cat([model(TOKENS[:1, i : i + 1], start_pos=i) for i in range(TOKENS.shape[1])], 1)
    kernels, quantized, error = relative_error(y, ref), relative_error(ref, fp32.double()), relative_error(y, fp32)
    print(f"{fmt} {mode}: logits {error:.3g} from fp32; dequantized weights in float64 {quantized:.3g} from fp32 "
          f"(bound {weights:.3g}); ours {kernels:.3g} from those (bound {rounding:.3g})")  # fmt: skip
    assert kernels <= rounding, f"{fmt} {mode}: {kernels:.3g} from the dequantized model, above {rounding:.3g}"
    assert relative_error(steps[0], ref[0]) <= rounding, f"{fmt} {mode} (packed kernels, one token a step)"
    assert quantized <= weights, f"{fmt} {mode}: quantized weights move the logits {quantized:.3g}, above {weights:.3g}"
    assert error <= rounding + weights, f"{fmt} {mode}: {error:.3g} from fp32, above {rounding + weights:.3g}"


def test_tied_embeddings_keep_a_float_table(ckpts):
    sd = torch.load(ckpts["tied"] / "consolidated.00.pth", weights_only=True)
    assert "output.weight" not in sd
    for mode in ("int8", "int4"):
        model, args = load_model(ckpts["tied"], quantize=mode)
        assert args.tie_word_embeddings and isinstance(model.output, Int8Linear if mode == "int8" else Int4Linear)
        assert torch.equal(model.tok_embeddings.weight, sd["tok_embeddings.weight"])
        post_hoc = quantize_linear(sd["tok_embeddings.weight"], mode).dequantize()
        assert torch.equal(model.output.dequantize(), post_hoc)


# ---- the embedded model: greedy tokens ------------------------------------------------------------------------


def greedy(model, prompt: list[int], steps: int) -> list[int]:
    model.setup_cache(1, len(prompt) + steps)
    with torch.no_grad():
        logits = model(torch.tensor([prompt]), start_pos=0)[0, -1]
        out = []
        for i in range(steps):
            out.append(int(logits.argmax()))
            logits = model(torch.tensor([[out[-1]]]), start_pos=len(prompt) + i)[0, -1]
    return out


def teacher_forced_agreement(model, prompt: list[int], tokens: list[int]) -> int:
    """Steps on which ``model``'s greedy token equals ``tokens`` when fed ``tokens`` (one decode step each)."""
    model.setup_cache(1, len(prompt) + len(tokens))
    with torch.no_grad():
        logits = model(torch.tensor([prompt]), start_pos=0)[0, -1]
        agree = 0
        for i, t in enumerate(tokens):
            agree += int(logits.argmax()) == t
            logits = model(torch.tensor([[t]]), start_pos=len(prompt) + i)[0, -1]
    return agree


def test_embedded_model_int8_greedy_tokens_agree_with_fp32():
    """32 greedy steps of the fp32 model; int8 (the Q4_1 blocks requantized per channel, Q8_0 kept) picks the
    same token on most of them (reported), and "auto" (the file's own blocks) too."""
    from simplellama.tokenizer import load_tokenizer

    tok = load_tokenizer(default_model_path())
    prompt = tok.encode("The capital of France is Paris. The capital of Germany is", bos=False, eos=False)
    fp32 = greedy(load_model(quantize=None)[0], prompt, 32)
    for mode in ("int8", "auto"):
        agree = teacher_forced_agreement(load_model(quantize=mode)[0], prompt, fp32)
        print(f"{mode}: {agree}/32 greedy steps agree with fp32")
        assert agree >= 24, f"{mode}: only {agree}/32 greedy steps agree with fp32"


def test_llama_build_and_cli_take_quantize(capsys):
    from simplellama import cli

    llama = Llama.build(max_seq_len=64, max_batch_size=1, quantize="int4", group_size=64)
    assert isinstance(llama.model.layers[0].attention.wq, Int4Linear)
    assert llama.model.layers[0].attention.wq.group_size == 64
    text = llama.text_completion(["The capital of France is"], temperature=0, max_gen_len=4)[0]["generation"]
    assert text.strip()
    argv = ["generate", "--prompt", "The capital of France is", "--temperature", "0", "--max-new-tokens", "4"]
    assert cli.main([*argv, "--quantize", "int4", "--group-size", "64", "--max-seq-len", "64"]) == 0
    assert capsys.readouterr().out == text + "\n"


def test_quantized_size_checked_before_loading(ckpts, monkeypatch):
    from simplellama import devices
    from simplellama.errors import InsufficientMemoryError

    monkeypatch.setattr(devices, "_cpu_available", lambda: 1000)
    with pytest.raises(InsufficientMemoryError, match=r"meta: needs .*\(quantized weights .* \+ float weights .* "
                       r"\+ largest tensor being read .*\) on cpu, 0.0 MiB available"):  # fmt: skip
        load_for_inference(ckpts["meta"], quantize="int4")


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="madvise(MADV_DONTNEED) is Linux-only")
def test_released_file_pages_leave_resident_memory_and_read_back_unchanged(tmp_path):
    """What lets a quantizing Meta load peak near the quantized size: each weight's mmapped pages are dropped."""
    import psutil

    from simplellama.checkpoint.common import release_pages

    torch.save({"w": torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0))}, tmp_path / "w.pth")
    w = torch.load(tmp_path / "w.pth", mmap=True, weights_only=True)["w"]  # 64 MiB, memory-mapped
    rss = psutil.Process().memory_info
    total = w.double().sum()  # reads every page
    before = rss().rss
    release_pages(w)
    dropped = before - rss().rss
    assert dropped > 48 * 2**20, f"only {dropped / 2**20:.1f} MiB left resident memory"
    assert w.double().sum() == total  # read back from the file
