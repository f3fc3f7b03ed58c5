"""tinytorch.nn layers and tinytorch.optim optimizers against torch (float64)."""

import random

import pytest
import torch

from tinytorch import nn, optim
from tinytorch.tensor import Tensor

TOL = dict(rtol=1e-9, atol=1e-10)


def tt(x, requires_grad=False):
    """torch tensor -> tinytorch Tensor (same numbers)."""
    return Tensor(x.detach().tolist(), requires_grad=requires_grad)


def th(x):
    """tinytorch Tensor -> torch float64 tensor."""
    return torch.tensor(x.tolist(), dtype=torch.float64)


def close(tiny, ref):
    torch.testing.assert_close(th(tiny), ref.detach().to(torch.float64), **TOL)


def run_both(tiny_mod, torch_mod, x, weight_names):
    """Forward x through both modules, backward a random linear function of the output, compare all."""
    floating = x.dtype.is_floating_point
    xt = x.clone().requires_grad_(floating)
    xs = tt(x, requires_grad=floating)
    out_ref, out = torch_mod(xt), tiny_mod(xs)
    close(out, out_ref)
    R = torch.randn(out_ref.shape, dtype=torch.float64)
    (out_ref * R).sum().backward()
    (out * tt(R)).sum().backward()
    if floating:
        close(xs.grad, xt.grad)
    params = dict(tiny_mod.named_parameters())
    for name in weight_names:
        close(params[name].grad, dict(torch_mod.named_parameters())[name].grad)


def test_linear_matches_torch():
    torch.manual_seed(0)
    ref = torch.nn.Linear(5, 3, dtype=torch.float64)
    lin = nn.Linear(5, 3)
    lin.load_state_dict(ref.state_dict())
    run_both(lin, ref, torch.randn(2, 4, 5, dtype=torch.float64), ["weight", "bias"])


def test_linear_without_bias_and_init_range():
    lin = nn.Linear(9, 4, bias=False, generator=random.Random(0))
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    assert all(abs(v) <= 1 / 3 for row in lin.weight.tolist() for v in row)  # U(-1/sqrt(in), 1/sqrt(in))


def test_embedding_matches_torch():
    torch.manual_seed(1)
    ref = torch.nn.Embedding(7, 4, dtype=torch.float64)
    emb = nn.Embedding(7, 4)
    emb.load_state_dict(ref.state_dict())
    ids = torch.tensor([[1, 3, 3], [0, 6, 1]])  # repeated ids: gradients accumulate in one row
    run_both(emb, ref, ids, ["weight"])


def test_rmsnorm_matches_torch():
    torch.manual_seed(2)
    ref = torch.nn.RMSNorm(6, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(6, dtype=torch.float64))
    norm = nn.RMSNorm(6, eps=1e-5)
    norm.load_state_dict(ref.state_dict())
    run_both(norm, ref, torch.randn(3, 2, 6, dtype=torch.float64), ["weight"])


def test_layernorm_matches_torch():
    torch.manual_seed(3)
    ref = torch.nn.LayerNorm(6, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(6, dtype=torch.float64))
        ref.bias.copy_(torch.randn(6, dtype=torch.float64))
    norm = nn.LayerNorm(6)
    norm.load_state_dict(ref.state_dict())
    run_both(norm, ref, torch.randn(4, 6, dtype=torch.float64) * 3 + 1, ["weight", "bias"])


def test_sequential_names_state_dict_and_forward_match_torch():
    torch.manual_seed(4)
    ref = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2)
    ).double()
    seq = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 2))
    assert [n for n, _ in seq.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert list(seq.state_dict()) == list(ref.state_dict())
    seq.load_state_dict(ref.state_dict())
    run_both(seq, ref, torch.randn(5, 3, dtype=torch.float64), [n for n, _ in ref.named_parameters()])
    assert seq.num_parameters() == sum(p.numel() for p in ref.parameters())


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.emb.weight


def test_tied_parameters_once_state_dict_twice():
    m = Tied()
    assert [n for n, _ in m.named_parameters()] == ["emb.weight"]
    assert list(m.state_dict()) == ["emb.weight", "head.weight"]
    new = torch.arange(15, dtype=torch.float64).reshape(5, 3)
    m.load_state_dict({"emb.weight": new, "head.weight": new})
    assert m.head.weight.tolist() == new.tolist()


def test_train_eval_zero_grad():
    m = Tied()
    assert m.training and m.emb.training
    m.eval()
    assert not m.training and not m.emb.training and not m.head.training
    m.train()
    assert m.head.training
    out = m.head(m.emb(Tensor([1, 2])))
    out.sum().backward()
    assert m.emb.weight.grad is not None
    m.zero_grad()
    assert m.emb.weight.grad is None


def test_load_state_dict_errors():
    lin = nn.Linear(3, 2)
    with pytest.raises(nn.ModuleError, match=r"missing keys \['bias'\], unexpected keys \['b'\]"):
        lin.load_state_dict({"weight": torch.zeros(2, 3), "b": torch.zeros(2)})
    with pytest.raises(nn.ModuleError, match=r"weight: expected shape \(2, 3\), found \(3, 2\)"):
        lin.load_state_dict({"weight": torch.zeros(3, 2), "bias": torch.zeros(2)})
    missing, unexpected = lin.load_state_dict({"weight": torch.ones(2, 3)}, strict=False)
    assert missing == ["bias"] and unexpected == [] and lin.weight.tolist() == [[1.0] * 3] * 2


def test_module_without_super_init_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = 1

    with pytest.raises(nn.ModuleError, match=r"Bad: call super\(\).__init__\(\) before setting w"):
        Bad()


# -- optimizers -------------------------------------------------------------------------------------
OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.05, betas=(0.85, 0.95), weight_decay=0.3)),
    ("AdamW", dict(lr=0.02, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.parametrize(("name", "kwargs"), OPTIMIZERS)
def test_optimizer_trajectory_matches_torch(name, kwargs):
    torch.manual_seed(5)
    W0, b0, x = (
        torch.randn(3, 4, dtype=torch.float64),
        torch.randn(3, dtype=torch.float64),
        torch.randn(6, 4, dtype=torch.float64),
    )
    Wr, br = W0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    Ws, bs = tt(W0, requires_grad=True), tt(b0, requires_grad=True)
    ref_opt = getattr(torch.optim, name)([Wr, br], foreach=False, **kwargs)
    opt = getattr(optim, name)([Ws, bs], **kwargs)
    xs = tt(x)
    for _ in range(10):
        ref_opt.zero_grad()
        y = torch.tanh(x @ Wr.T + br)
        ((y * y * 3.0).sum() + Wr.sum()).backward()
        ref_opt.step()
        opt.zero_grad()
        ys = (xs @ Ws.transpose(0, 1) + bs).tanh()
        ((ys * ys * 3.0).sum() + Ws.sum()).backward()
        opt.step()
        close(Ws, Wr)
        close(bs, br)


def test_zero_grad_set_to_zero_and_skips_params_without_grad():
    p, q = Tensor([1.0, 2.0], requires_grad=True), Tensor([5.0], requires_grad=True)
    opt = optim.SGD([p, q], lr=0.5)
    (p * p).sum().backward()
    opt.step()  # q has no grad: unchanged
    assert p.tolist() == [0.0, 0.0] and q.tolist() == [5.0]
    opt.zero_grad(set_to_none=False)
    assert p.grad.tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: optim.SGD(p, lr=-1.0), r"SGD: lr: expected a value in \[0.0, inf\), found -1.0"),
        (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "nesterov: expected momentum > 0 and dampening == 0"),
        (lambda p: optim.Adam(p, betas=(1.0, 0.9)), r"Adam: betas\[0\]: expected a value in \[0.0, 1.0\), found 1.0"),
        (lambda p: optim.AdamW(p, eps=-1e-8), r"AdamW: eps: expected a value in \[0.0, inf\), found -1e-08"),
        (lambda p: optim.Adam([]), "Adam: params: expected at least one, found none"),
    ],
)
def test_optimizer_argument_errors(make, message):
    with pytest.raises(optim.OptimizerError, match=message):
        make([Tensor([1.0], requires_grad=True)])


def test_debug_flag_logs_module_forward_shapes(caplog):
    import logging

    from tinytorch.debug import DEBUG

    seq = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = Tensor([[1.0, 2.0, 3.0]])
    with caplog.at_level(logging.DEBUG, logger="tinytorch.debug"):
        seq(x)  # nothing pushed: no messages
        with DEBUG.flags(seq[2].forward):  # only the last Linear
            seq(x)
    messages = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    assert messages == ["[Linear.forward] [(1, 4)] -> (1, 2)"]


def test_bench_value_and_tensor_engines_train_identically():
    """The benchmark's two engines run the same computation: equal losses after the same SGD steps."""
    from tinytorch import bench

    xs, ys = bench.make_data(8, seed=1)
    weights = bench.init_weights([2, 5, 5, 1], seed=1)
    _, value_loss = bench.train_value_mlp(weights, xs, ys, steps=3, lr=0.1)
    _, tensor_loss = bench.train_tensor_mlp(weights, xs, ys, steps=3, lr=0.1)
    assert value_loss == pytest.approx(tensor_loss, rel=1e-12)
    # and torch agrees with both
    model = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 5), torch.nn.Tanh())
    model.append(torch.nn.Linear(5, 1))
    model = model.double()
    with torch.no_grad():
        for layer, (W, b) in zip([model[0], model[2], model[4]], weights):
            layer.weight.copy_(torch.tensor(W, dtype=torch.float64))
            layer.bias.copy_(torch.tensor(b, dtype=torch.float64))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X, Y = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)[:, None]
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(model(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert tensor_loss == pytest.approx(loss.item(), rel=1e-12)


def test_init_is_reproducible_with_manual_seed():
    import tinytorch

    tinytorch.manual_seed(7)
    a = nn.Linear(4, 3).weight.tolist()
    tinytorch.manual_seed(7)
    assert nn.Linear(4, 3).weight.tolist() == a
    assert nn.Embedding(3, 2, generator=tinytorch.Generator().manual_seed(1)).weight.tolist() == (
        nn.Embedding(3, 2, generator=tinytorch.Generator().manual_seed(1)).weight.tolist()
    )
