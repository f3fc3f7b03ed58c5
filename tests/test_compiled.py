"""The compiled decode step (``simplellama/compiled.py``) and real-arithmetic RoPE (``rope.py``).

References we did not write: Meta's ``llama_models/llama3/model.py`` RoPE functions (its source, run
as published: importing the module needs fairscale, so the functions are read out of it), and float64
arithmetic. The compiled step is held to the eager model it must equal, with a tolerance taken from
the eager model's own rounding error: each configuration also runs a reference in higher precision on
the same weights (fp32 -> float64; bf16 -> the bf16 weights in fp32; int8/int4 -> the dequantized
weights in fp32, the layers' plain path). Compiled and eager are computed with different summation
orders, so neither is closer to the reference than rounding allows: if the compiled step is as
accurate as eager, |compiled - eager| <= |compiled - ref| + |eager - ref| ~ 2 |eager - ref|.

The compile tests are ``slow`` (inductor compiles C++: ~10-80 s each on 2 shared cores).
"""

from __future__ import annotations

import ast
import copy
import math
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from ckpt_factory import random_state_dict, tiny_args
from torch import nn

from simplellama import cli
from simplellama.compiled import CompiledDecoder, cache_length
from simplellama.errors import KVCacheError, ModelError
from simplellama.generation import Llama
from simplellama.kv_cache import KVCache
from simplellama.model import Transformer
from simplellama.quantize import Int4Linear, Int8Linear, quantize_model
from simplellama.rope import (
    RopeError,
    apply_rotary_emb,
    apply_rotary_emb_real,
    freqs_cis_from_args,
    rope_cos_sin,
)
from simplellama.tokenizer import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------- RoPE in real arithmetic (fast)


def meta_rope() -> dict:
    """``precompute_freqs_cis`` and ``apply_rotary_emb`` (with their helpers) from Meta's model.py."""
    path = Path(find_spec("llama_models").submodule_search_locations[0]) / "llama3" / "model.py"
    wanted = {"apply_scaling", "precompute_freqs_cis", "reshape_for_broadcast", "apply_rotary_emb"}
    tree = ast.parse(path.read_text())
    funcs = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in wanted]
    assert {f.name for f in funcs} == wanted, f"{path} changed: found {[f.name for f in funcs]}"
    namespace = {"torch": torch, "math": math, "Tuple": tuple}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace


def qk(B: int, T: int, args, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xq = torch.randn(B, T, args.n_heads, args.head_dim, generator=g, dtype=torch.float64)
    xk = torch.randn(B, T, args.n_kv_heads, args.head_dim, generator=g, dtype=torch.float64)
    return xq.to(dtype), xk.to(dtype)


def test_real_rope_equals_metas_reference_code():
    # Llama 3.1 8B's RoPE (theta 500000, factor 8 over 8192: Meta's hard-coded values), Dh 128,
    # positions 8000..8063: large angles and every band of the frequency scaling
    args = tiny_args(dim=256, n_heads=2, n_kv_heads=1, rope_theta=500000.0, use_scaled_rope=True,
                     rope_scaling_factor=8.0, rope_original_max_seq_len=8192, max_seq_len=4096)  # fmt: skip
    meta = meta_rope()
    start, T = 8000, 64
    meta_table = meta["precompute_freqs_cis"](128, 8192, 500000.0, use_scaled=True)[start : start + T]
    xq, xk = qk(2, T, args, torch.float32)
    q_ref, k_ref = meta["apply_rotary_emb"](xq, xk, meta_table)
    cos, sin = rope_cos_sin(freqs_cis_from_args(args, 8192)[start : start + T])
    q, k = apply_rotary_emb_real(xq, xk, cos, sin)
    # the same float32 products as Meta's complex multiply, perhaps fused or ordered differently:
    # a few units of float32 rounding (2^-24) of |x| (bitwise equal on AMD Zen 4, torch 2.13)
    torch.testing.assert_close(q, q_ref, atol=4e-7, rtol=1e-6)
    torch.testing.assert_close(k, k_ref, atol=4e-7, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_real_rope_equals_complex_rope(dtype):
    args = tiny_args(use_scaled_rope=True, rope_scaling_factor=32.0, rope_original_max_seq_len=64)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    table = freqs_cis_from_args(args, 300, dtype=wide)[200:300]  # (T, Dh/2)
    xq, xk = qk(3, 100, args, dtype, seed=1)
    q_c, k_c = apply_rotary_emb(xq, xk, table)
    q_r, k_r = apply_rotary_emb_real(xq, xk, *rope_cos_sin(table))
    assert q_r.dtype == k_r.dtype == dtype and q_r.shape == xq.shape and k_r.shape == xk.shape
    # the same products in the same precision; a complex multiply may fuse or order them
    # differently: a few units of rounding (2^-24 fp32, 2^-53 fp64) of |x|, and in bf16 the same
    # float32 result rounds to the same or the adjacent bf16 number (2^-8 relative); all bitwise
    # equal on AMD Zen 4, torch 2.13
    tol = {torch.float32: (4e-7, 1e-6), torch.float64: (1e-15, 1e-15), torch.bfloat16: (0.0, 2**-7)}
    atol, rtol = tol[dtype]
    torch.testing.assert_close(q_r, q_c, atol=atol, rtol=rtol)
    torch.testing.assert_close(k_r, k_c, atol=atol, rtol=rtol)


def test_real_rope_shape_error():
    cos, sin = rope_cos_sin(freqs_cis_from_args(tiny_args(), 5))
    with pytest.raises(RopeError, match=r"xk must be \(B, 5, heads, 16\), found \(1, 4, 2, 16\)"):
        apply_rotary_emb_real(torch.randn(1, 5, 4, 16), torch.randn(1, 4, 2, 16), cos, sin)


def test_cache_length_buckets():
    assert [cache_length(n, 2048) for n in (1, 256, 257, 600, 2048)] == [256, 256, 512, 1024, 2048]
    assert cache_length(40, 64) == 64 and cache_length(100, 64) == 100


def test_kvcache_update_at_writes_what_update_writes():
    g = torch.Generator().manual_seed(5)
    a, b = KVCache(2, 12, 2, 16), KVCache(2, 12, 2, 16)
    for start, T in ((0, 4), (4, 1), (5, 3)):
        k, v = torch.randn(2, 2, T, 2, 16, generator=g).unbind(0)  # (B, T, K, Dh) each
        k_view, v_view = a.update(start, k, v)
        k_all, v_all = b.update_at(torch.arange(start, start + T), k, v)
        assert k_all.shape == (2, 12, 2, 16) and torch.equal(k_all[:, : start + T], k_view)
        assert torch.equal(v_all[:, : start + T], v_view)
    k_one, _ = b.update_at(torch.tensor([8]), k[:1, :1], v[:1, :1])  # a smaller batch: rows 0..B-1
    assert k_one.shape == (1, 12, 2, 16) and torch.equal(b.cache_k[0, 8], k[0, 0])
    assert torch.equal(b.cache_k[1, 8], torch.zeros(2, 16))
    with pytest.raises(KVCacheError, match=r"expected pos \(T,\), k and v \(B, T, 2, 16\), found \(2,\)"):
        b.update_at(torch.arange(2), k, v)
    with pytest.raises(KVCacheError, match="batch 3 torch.float32 does not fit the cache's 2 torch.float32"):
        b.update_at(torch.arange(1), torch.randn(3, 1, 2, 16), torch.randn(3, 1, 2, 16))


def test_cli_compile_switch_reaches_llama_build(monkeypatch):
    seen = {}
    monkeypatch.setattr(Llama, "build", staticmethod(lambda *a, **kw: seen.update(kw)))
    parser, triples = cli.build_parser()
    for argv, expected in ((["generate", "--prompt", "x", "--compile"], True), (["chat", "hi"], False)):
        cli._build(cli._options(parser.parse_args(argv), triples))
        assert seen["compile"] is expected


# ---------------------------------------------------------------- the compiled step (slow)


@pytest.fixture()
def strict_dynamo():
    """A fresh dynamo whose second compile of a function is an error (no recompile per position)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        yield torch._dynamo.utils.counters
    torch._dynamo.reset()


def tiny_model(**kw) -> Transformer:
    args = tiny_args(max_batch_size=2, **kw)
    model = Transformer(args)
    model.load_state_dict(random_state_dict(args, seed=3), strict=False)
    return model.eval()


def dequantized(model: Transformer) -> Transformer:
    """The same weights through plain fp32 ``nn.Linear`` layers (the quantized layers' plain path)."""
    ref = copy.deepcopy(model)
    for name, m in list(ref.named_modules()):
        if isinstance(m, Int8Linear | Int4Linear):
            linear = nn.Linear(m.in_features, m.out_features, bias=False)
            linear.weight = nn.Parameter(m.dequantize(torch.float32), requires_grad=False)
            ref.set_submodule(name, linear)
    return ref.float()


CONFIGS = {
    "fp32": (lambda m: m, lambda m: m.double()),
    "bf16": (lambda m: m.to(torch.bfloat16), lambda m: m.float()),
    "int8": (lambda m: quantize_model(m, "int8"), dequantized),
    "int4": (lambda m: quantize_model(m, "int4", 32), dequantized),
}
S = 75  # cache positions: not a multiple of any vector width; decoding ends in its last slot


@torch.inference_mode()
def teacher_forced(step, model: Transformer, prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Prefill ``prompt`` (B, P) eagerly in two chunks, then one step per column of ``tokens``
    (B, N) with ``step(tokens (B, 1), pos)``: logits (B, N, V) of the steps, in float64."""
    model.setup_cache(prompt.shape[0], S)
    P = prompt.shape[1]
    model(prompt[:, :3], 0)
    model(prompt[:, 3:], 3)
    return torch.cat([step(tokens[:, i : i + 1], P + i).double() for i in range(tokens.shape[1])], 1)


@pytest.mark.slow
@pytest.mark.parametrize("config", list(CONFIGS))
def test_compiled_decode_equals_eager(config, strict_dynamo):
    to_config, to_reference = CONFIGS[config]
    model = to_config(tiny_model(max_seq_len=S))
    reference = to_reference(copy.deepcopy(model))
    g = torch.Generator().manual_seed(4)
    prompt = torch.randint(0, 96, (2, 7), generator=g)  # B = 2, two different prompts
    tokens = torch.randint(0, 96, (2, S - 7), generator=g)  # positions 7 .. S-1

    decoder = CompiledDecoder(model)
    compiled = teacher_forced(decoder, model, prompt, tokens)
    eager = teacher_forced(lambda t, p: model(t, p), model, prompt, tokens)
    exact = teacher_forced(lambda t, p: reference(t, p), reference, prompt, tokens)

    assert not decoder.eager, "the compile failed and the decoder fell back to eager"
    assert strict_dynamo["stats"]["unique_graphs"] == 1 and not strict_dynamo["graph_break"]
    eager_error = (eager - exact).abs().amax()
    assert 0 < eager_error < 0.5, f"{config}: eager's own error {eager_error:.3g} is implausible"
    diff = (compiled - eager).abs().amax(dim=-1)  # (B, N): per step
    assert diff.max() <= 2 * eager_error, f"{config}: {diff.max():.3g} vs eager's {eager_error:.3g}"
    # greedy tokens: the same top-1 wherever eager's margin exceeds what the two may differ by
    top2 = eager.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * diff
    assert clear.float().mean() > 0.5, f"{config}: too few steps with a clear top-1 to compare"
    assert torch.equal(compiled.argmax(-1)[clear], eager.argmax(-1)[clear])


@pytest.mark.slow
def test_compiled_greedy_generation_equals_eager(strict_dynamo):
    """Llama(compile=True) generates eager's greedy tokens, two requests of different lengths and
    a batch of two prompts reuse one graph per batch size (cache 128 = the model's max_seq_len)."""
    tok = load_tokenizer()
    model = tiny_model(vocab_size=tok.n_words, max_seq_len=128)
    eager = Llama(copy.deepcopy(model), tok, model.args)
    compiled = Llama(model, tok, model.args, compile=True)
    requests = [([[5, 17, 300, 41]], 60), ([[9, 2000, 7, 11, 12, 13, 14]], 90)]
    with torch._dynamo.config.patch(recompile_limit=2):  # two batch sizes
        for prompts, n in requests + [([[5, 17, 300], [1, 2, 3, 4, 5, 6]], 50)]:
            expected, _ = eager.generate(prompts, n, temperature=0)
            got, _ = compiled.generate(prompts, n, temperature=0)
            assert got == expected and all(len(t) > 10 for t in got)
    assert not compiled.decoder.eager and strict_dynamo["stats"]["unique_graphs"] == 2
    assert model.layers[0].attention.cache.max_seq_len == 128


def test_compiled_decoder_argument_errors():
    decoder = CompiledDecoder(tiny_model(max_seq_len=16))
    decoder.setup_cache(1, 8)
    with pytest.raises(ModelError, match=r"start_pos must be an int in 0..15 \(cache\), found 16"):
        decoder(torch.tensor([[1]]), 16)
    with pytest.raises(ModelError, match="batch 2 exceeds the cache's max_batch_size 1"):
        decoder(torch.tensor([[1], [2]]), 3)


FALLBACK = """
import torch
from ckpt_factory import random_state_dict, tiny_args
from simplellama.compiled import CompiledDecoder
from simplellama.model import Transformer

args = tiny_args(max_batch_size=1)
model = Transformer(args)
model.load_state_dict(random_state_dict(args, seed=3), strict=False)
model.setup_cache(1, 16)
decoder = CompiledDecoder(model)
with torch.no_grad():
    model(torch.tensor([[1, 2, 3]]), 0)
    got = decoder(torch.tensor([[4]]), 3)
    model(torch.tensor([[1, 2, 3]]), 0)
    expected = model(torch.tensor([[4]]), 3)
assert decoder.eager and torch.equal(got, expected)
print("fell back")
"""


@pytest.mark.slow
def test_without_a_cxx_compiler_decoding_falls_back_to_eager_with_a_warning(tmp_path):
    """Inductor's CPU backend runs the C++ compiler named by $CXX; a fresh cache, so it must."""
    tests = Path(__file__).parent
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)]), "OMP_NUM_THREADS": "1"}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", FALLBACK], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "fell back", run.stderr[-2000:]
    warning = [line for line in run.stderr.splitlines() if "torch.compile failed, decoding eagerly" in line]
    assert len(warning) == 1, run.stderr[-2000:]
