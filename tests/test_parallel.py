"""Model-parallel inference: W processes (gloo, launched with torchrun) must match one process.

The reference is the single-process ``Transformer`` with the full state dict, i.e. plain
``torch`` matmuls over unsplit weights. Each torchrun job runs this file as a script (``_worker``),
rank 0 saves the logits and greedy tokens, the test compares them with the reference.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simplellama.checkpoint.sharded import check_parallel, rank_range, shards_for_rank
from simplellama.config import ModelArgs
from simplellama.errors import ParallelError

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
TIMEOUT = 240  # seconds; every launched job is bounded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(n: int, *argv: str, timeout: float = TIMEOUT, stdin: str = "") -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node n argv`` on localhost (gloo), bounded by ``timeout``."""
    cmd = [str(TORCHRUN), "--nproc-per-node", str(n), "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *argv]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def _greedy(model, prompt: torch.Tensor, n_new: int) -> torch.Tensor:
    """Greedy decoding through the KV cache: prefill, then one token per step."""
    B, T = prompt.shape
    model.setup_cache(B, T + n_new)
    tokens, out, pos = prompt, [], 0
    for _ in range(n_new):
        logits = model(tokens, pos)  # (B, T, V)
        pos += tokens.shape[1]
        tokens = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        out.append(tokens)
    return torch.cat(out, dim=1)  # (B, n_new)


def _run(model, prompt: torch.Tensor, n_new: int) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        logits = model(prompt, start_pos=None)  # (B, T, V), no cache
    return {"logits": logits, "greedy": _greedy(model, prompt, n_new)}


def _worker(spec: dict) -> None:
    """One rank of a torchrun job (this file run as a script)."""
    from simplellama.checkpoint import load_model
    from simplellama.parallel import is_main_rank, shutdown_distributed

    torch.manual_seed(0)
    dtype = getattr(torch, spec.get("dtype", "float32"))
    if spec.get("api") == "load_model":  # the public entry point, model_parallel_size given explicitly
        model, _ = load_model(spec["ckpt"], dtype=dtype, model_parallel_size=spec["mp"])
    else:
        model, _ = load_model(spec["ckpt"], dtype=dtype, model_parallel_size=spec.get("mp"))
    result = _run(model, torch.tensor(spec["prompt"]), spec["n_new"])
    if is_main_rank():
        torch.save(result, spec["out"])
    shutdown_distributed(exit_code=0)


def _parallel(
    tmp_path: Path, ckpt, n: int, prompt: list[list[int]], n_new: int = 6, dtype: str = "float32", api: str = ""
) -> dict[str, torch.Tensor]:
    spec = {"ckpt": str(ckpt), "prompt": prompt, "n_new": n_new, "out": str(tmp_path / "out.pt"), "mp": n}
    spec.update(dtype=dtype, api=api)
    proc = _torchrun(n, __file__, json.dumps(spec))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(tmp_path / "out.pt", weights_only=True)


def _reference(args: ModelArgs, sd: dict, prompt: list[list[int]], n_new: int = 6) -> dict[str, torch.Tensor]:
    from simplellama.model import Transformer

    model = Transformer(args)
    full = dict(sd)
    full.setdefault("output.weight", full["tok_embeddings.weight"])
    model.load_state_dict(full, strict=True)
    return _run(model.eval(), torch.tensor(prompt), n_new)


PROMPT = [[1, 5, 9, 33, 2, 70, 41], [3, 3, 90, 17, 64, 8, 12]]


def _check(got: dict, want: dict) -> None:
    torch.testing.assert_close(got["logits"], want["logits"], atol=1e-5, rtol=1e-5)
    assert torch.equal(got["greedy"], want["greedy"]), (got["greedy"], want["greedy"])


# ---- 2 ranks, tiny Meta checkpoints ----------------------------------------------------------


@pytest.mark.parametrize(
    ("n_kv_heads", "n_shards"),
    [(2, 1), (2, 2), (1, 1), (1, 2)],
    ids=["K=W,1shard", "K=W,2shards", "K<W(replicated),1shard", "K<W(replicated),2shards"],
)
def test_two_ranks_match_one_process(tmp_path, n_kv_heads, n_shards):
    from ckpt_factory import tiny_args, write_meta

    args = tiny_args(n_kv_heads=n_kv_heads)
    sd = write_meta(tmp_path / "ckpt", args, n_shards=n_shards, seed=n_kv_heads)
    _check(_parallel(tmp_path, tmp_path / "ckpt", 2, PROMPT), _reference(args, sd, PROMPT))


def test_four_shards_on_two_ranks_tied(tmp_path):
    """More shards than ranks (each rank merges 2), kv heads repeated in the shards, tied embeddings."""
    from ckpt_factory import tiny_args, write_meta

    args = tiny_args(n_heads=8, n_kv_heads=2, tie_word_embeddings=True)
    sd = write_meta(tmp_path / "ckpt", args, n_shards=4, seed=3)
    _check(_parallel(tmp_path, tmp_path / "ckpt", 2, PROMPT, api="load_model"), _reference(args, sd, PROMPT))


@pytest.mark.slow
def test_embedded_model_three_ranks(tmp_path):
    """SmolLM2-135M (9 heads, 3 kv heads, tied embeddings, GGUF) on 3 ranks: 3 heads and 1 kv head each.

    float64: over 30 layers float32 rounding of the split sums alone reaches ~6e-5 on logits of size ~20,
    so the 1e-5 comparison is made where rounding is far below it.
    """
    from simplellama.checkpoint import default_model_path, load_model

    prompt = [[1, 504, 3458, 282, 4649, 314], [1, 2683, 5765, 314, 253, 30]]
    got = _parallel(tmp_path, default_model_path(), 3, prompt, n_new=8, dtype="float64")
    model, _ = load_model(default_model_path(), dtype=torch.float64)
    want = _run(model, torch.tensor(prompt), 8)
    _check(got, want)


# ---- the command line under torchrun ---------------------------------------------------------


@pytest.fixture(scope="module")
def llama3_ckpt(tmp_path_factory) -> Path:
    """Tiny random Meta checkpoint (2 shards, 1 kv head) with the real Llama 3 tokenizer beside it."""
    import importlib.util
    import shutil

    from ckpt_factory import tiny_args, write_meta

    d = tmp_path_factory.mktemp("llama3") / "ckpt"
    write_meta(d, tiny_args(vocab_size=128256, n_kv_heads=1), n_shards=2, seed=5)
    pkg = Path(importlib.util.find_spec("llama_models").submodule_search_locations[0])
    shutil.copyfile(pkg / "llama3" / "tokenizer.model", d / "tokenizer.model")
    return d


def _cli(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "simplellama", *argv]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=env)


def test_cli_generate_and_chat_on_two_ranks(llama3_ckpt):
    """``torchrun -m simplellama generate|chat``: rank 0 prints exactly what one process prints."""
    gen = ["generate", "--model", str(llama3_ckpt), "--prompt", "The capital of France is", "--temperature", "0",
           "--max-new-tokens", "8"]  # fmt: skip
    chat = ["chat", "--model", str(llama3_ckpt), "--temperature", "0", "--max-new-tokens", "5"]
    lines = "Hi\nWhat is 2+2?\n"  # read by rank 0 only, sent to rank 1
    for argv, stdin in ((gen, ""), (chat, lines)):
        one = _cli(argv, stdin)
        assert one.returncode == 0, one.stderr[-2000:]
        two = _torchrun(2, "-m", "simplellama", *argv, stdin=stdin)
        assert two.returncode == 0, two.stderr[-3000:]
        assert two.stdout == one.stdout and one.stdout.strip()


def test_cli_shard_mismatch_ends_all_ranks(llama3_ckpt):
    proc = _torchrun(3, "-m", "simplellama", "generate", "--model", str(llama3_ckpt), "--prompt", "Hi", timeout=120)
    assert proc.returncode != 0
    assert "simplellama: error: checkpoint has 2 shards for model_parallel_size=3: one must divide" in proc.stderr


# ---- errors --------------------------------------------------------------------------------


def test_heads_not_divisible_by_world_size():
    args = ModelArgs(dim=48, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=96, ffn_hidden_dim=96)
    with pytest.raises(ParallelError, match=r"model_parallel_size=3: n_heads \(4\) must be divisible by it"):
        check_parallel(args, 3)


def test_kv_heads_incompatible_with_world_size():
    args = ModelArgs(dim=96, n_layers=1, n_heads=6, n_kv_heads=3, vocab_size=96, ffn_hidden_dim=96)
    with pytest.raises(ParallelError, match=r"model_parallel_size=2: n_kv_heads \(3\) must be divisible by it"):
        check_parallel(args, 2)


def test_shard_count_incompatible_with_world_size():
    with pytest.raises(ParallelError, match="checkpoint has 2 shards for model_parallel_size=3: one must divide"):
        shards_for_rank(2, 3, 0)


def test_model_parallel_size_without_torchrun(monkeypatch):
    from simplellama.checkpoint import load_model

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ParallelError, match="model_parallel_size=2 needs 2 processes but WORLD_SIZE=1"):
        load_model(None, model_parallel_size=2)


def test_rank_ranges_tile_every_weight():
    """Over the ranks, the slices of each split weight tile it exactly (kv heads: each head's copies agree)."""
    args = ModelArgs(dim=64, n_layers=1, n_heads=8, n_kv_heads=2, vocab_size=96, ffn_hidden_dim=96)
    for W in (1, 2, 4, 8):
        for key, n in (("layers.0.attention.wq.weight", 64), ("layers.0.feed_forward.w2.weight", 96),
                       ("output.weight", 96)):  # fmt: skip
            ranges = [rank_range(key, args, W, r)[1:] for r in range(W)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        kv = [rank_range("layers.0.attention.wk.weight", args, W, r) for r in range(W)]
        heads = {r * 8 // W // 4 for r in range(W)}  # kv head of each rank's first query head (G = 4)
        assert {start // 8 for _, start, _ in kv} == heads


def test_failure_on_one_rank_ends_all(tmp_path):
    """Shard 1 is an HTML error page: only rank 1 reads it; torchrun must stop rank 0 and show the error."""
    from ckpt_factory import tiny_args, write_meta

    write_meta(tmp_path / "ckpt", tiny_args(), n_shards=2)
    (tmp_path / "ckpt" / "consolidated.01.pth").write_text("<html>Access denied</html>")
    spec = {"ckpt": str(tmp_path / "ckpt"), "prompt": PROMPT, "n_new": 2, "out": str(tmp_path / "o.pt"), "mp": 2}
    proc = _torchrun(2, __file__, json.dumps(spec), timeout=120)
    assert proc.returncode != 0
    assert "consolidated.01.pth: not a PyTorch checkpoint" in proc.stderr
    assert not (tmp_path / "o.pt").exists()


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
