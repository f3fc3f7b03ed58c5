"""The tinytorch tiny Llama against simplellama's Transformer (torch, float64): loss, gradients, AdamW steps."""

import math

import pytest
import torch
import torch.nn.functional as TF

from simplellama.config import ModelArgs
from simplellama.model import Transformer
from simplellama.rope import apply_llama3_scaling
from tinytorch import optim
from tinytorch.llama import Llama, LlamaArgs, LlamaError, apply_rope, rope_frequencies, rope_tables
from tinytorch.nn import ModuleError
from tinytorch.tensor import Tensor

V, T = 32, 6


def tiny_args(**kw):
    base = dict(
        dim=16,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=V,
        multiple_of=16,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        max_seq_len=16,
        max_batch_size=2,
    )
    return ModelArgs(**{**base, **kw})


def reference(args, seed=0):
    """simplellama Transformer in float64 with random weights (norm scales too) and a token batch."""
    torch.manual_seed(seed)
    ref = Transformer(args, dtype=torch.float64)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    tokens = torch.randint(0, V, (2, T + 1))
    return ref, tokens[:, :-1], tokens[:, 1:]


def ref_loss(ref, x, y):
    logits = ref(x, start_pos=None)  # (B, T, V)
    return TF.cross_entropy(logits.double().reshape(-1, V), y.reshape(-1))


def check_float64_reference(ref, x):
    dtype = ref(x, start_pos=None).dtype
    assert dtype == torch.float64, (
        f"simplellama.model.Transformer(dtype=torch.float64) returned {dtype} logits: it computes RMSNorm, RoPE, "
        "softmax and logits in float32 (x.float(), complex64 freqs_cis), so it is not a float64 reference; "
        "it should compute in torch.promote_types(dtype, torch.float32)"
    )


def tiny_from(ref, args):
    tiny = Llama(LlamaArgs.from_model_args(args))
    tiny.load_state_dict(ref.state_dict(), strict=True)
    return tiny


def grads_by_name(tiny):
    return {n: torch.tensor(p.grad.tolist(), dtype=torch.float64) for n, p in tiny.named_parameters()}


def test_parameter_names_equal_simplellama():
    args = tiny_args()
    ref, _, _ = reference(args)
    tiny = Llama(LlamaArgs.from_model_args(args))
    assert list(tiny.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in tiny.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert tiny.output.weight is tiny.tok_embeddings.weight
    assert {n: tuple(p.shape) for n, p in tiny.state_dict().items()} == {
        n: tuple(p.shape) for n, p in ref.state_dict().items()
    }


@pytest.mark.parametrize("tied", [True, False])
def test_loss_and_every_gradient_match_simplellama_float64(tied):
    args = tiny_args(tie_word_embeddings=tied)
    ref, x, y = reference(args)
    check_float64_reference(ref, x)
    loss = ref_loss(ref, x, y)
    loss.backward()
    tiny = tiny_from(ref, args)
    tiny_loss = tiny.loss(x.tolist(), y.tolist())
    tiny_loss.backward()
    assert tiny_loss.item() == pytest.approx(loss.item(), abs=1e-8, rel=0)
    grads = grads_by_name(tiny)
    ref_params = dict(ref.named_parameters())
    assert set(grads) == set(ref_params)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_params[name].grad, rtol=0, atol=1e-8, msg=name)


def test_matches_simplellama_at_float32_precision():
    """Structure, names and RoPE layout, independent of the reference's internal precision."""
    args = tiny_args()
    ref, x, y = reference(args, seed=1)
    loss = ref_loss(ref, x, y)
    loss.backward()
    tiny = tiny_from(ref, args)
    logits = tiny(x.tolist())
    torch.testing.assert_close(
        torch.tensor(logits.tolist(), dtype=torch.float64), ref(x, start_pos=None).double(), rtol=1e-5, atol=1e-5
    )
    tiny_loss = tiny.loss(x.tolist(), y.tolist())
    tiny_loss.backward()
    assert tiny_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    ref_params = dict(ref.named_parameters())
    for name, g in grads_by_name(tiny).items():
        torch.testing.assert_close(g, ref_params[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_adamw_steps_track_torch():
    args = tiny_args()
    ref, x, y = reference(args, seed=2)
    check_float64_reference(ref, x)
    tiny = tiny_from(ref, args)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    opt = optim.AdamW(list(tiny.parameters()), lr=1e-2, weight_decay=0.1)
    xs, ys = x.tolist(), y.tolist()
    ref_losses, tiny_losses = [], []
    for _ in range(20):
        ref_opt.zero_grad()
        loss = ref_loss(ref, x, y)
        loss.backward()
        ref_opt.step()
        ref_losses.append(loss.item())
        opt.zero_grad()
        tl = tiny.loss(xs, ys)
        tl.backward()
        opt.step()
        tiny_losses.append(tl.item())
    assert ref_losses[-1] < ref_losses[0] - 0.5  # it trains
    torch.testing.assert_close(torch.tensor(tiny_losses), torch.tensor(ref_losses), rtol=0, atol=1e-8)


def test_rope_is_the_complex_rotation():
    """apply_rope on interleaved pairs equals multiplying x[2i] + 1j x[2i+1] by exp(1j pos freq_i)."""
    args = LlamaArgs(dim=16, n_heads=2, n_kv_heads=1, rope_theta=10000.0)
    torch.manual_seed(3)
    x = torch.randn(2, 5, 2, 8, dtype=torch.float64)
    cos, sin = rope_tables(args, 5, start_pos=3)
    got = torch.tensor(apply_rope(Tensor(x.tolist()), cos, sin).tolist(), dtype=torch.float64)
    inv = 1.0 / 10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8)  # (Dh/2,)
    angles = torch.outer(torch.arange(3, 8, dtype=torch.float64), inv)  # (T, Dh/2)
    rot = torch.polar(torch.ones_like(angles), angles)[None, :, None, :]
    want = torch.view_as_real(torch.view_as_complex(x.reshape(2, 5, 2, 4, 2)) * rot).reshape(2, 5, 2, 8)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_scaledrope_frequencies_match_simplellama():
    args = LlamaArgs(dim=256, n_heads=2, n_kv_heads=2, rope_theta=500000.0, use_scaled_rope=True)
    inv = 1.0 / 500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float64) / 128)
    want = apply_llama3_scaling(inv, 8.0, 1.0, 4.0, 8192)
    torch.testing.assert_close(torch.tensor(rope_frequencies(args), dtype=torch.float64), want, rtol=1e-12, atol=0)


def test_forward_errors():
    tiny = Llama(LlamaArgs(max_seq_len=4))
    with pytest.raises(LlamaError, match=r"tokens: expected int64 \(B, T\), found int64 \(3,\)"):
        tiny([1, 2, 3])
    with pytest.raises(LlamaError, match=r"tokens: expected int64 \(B, T\), found float64 \(1, 2\)"):
        tiny([[1.0, 2.0]])
    with pytest.raises(LlamaError, match=r"expected T <= max_seq_len=4, found 5"):
        tiny([[1, 2, 3, 4, 5]])


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(dim=18, n_heads=4), "dim=18 must be divisible by n_heads=4"),
        (dict(n_heads=4, n_kv_heads=3), "n_heads=4 must be divisible by n_kv_heads=3"),
        (dict(dim=12, n_heads=4, n_kv_heads=4), "head_dim=3 must be even"),
    ],
)
def test_args_errors(kw, message):
    with pytest.raises(LlamaError, match=message):
        LlamaArgs(**kw)


def test_load_wrong_shapes_error():
    ref, _, _ = reference(tiny_args())
    tiny = Llama(LlamaArgs(dim=16, hidden_dim=32))
    with pytest.raises(
        ModuleError, match=r"layers.0.feed_forward.w1.weight: expected shape \(32, 16\), found \(48, 16\)"
    ):
        tiny.load_state_dict(ref.state_dict())


def test_zero_embeddings_give_uniform_predictions():
    """h = 0 stays 0 through every residual block, so logits are 0 and the loss is log V."""
    tiny = Llama(LlamaArgs())
    tiny.tok_embeddings.weight.data = tiny.tok_embeddings.weight.data * 0.0
    loss = tiny.loss([[1, 2, 3]], [[2, 3, 4]]).item()
    assert loss == pytest.approx(math.log(V), rel=1e-12)
