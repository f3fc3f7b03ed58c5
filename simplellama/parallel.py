"""Tensor (model) parallelism: one Llama spread over several processes with ``torch.distributed``.

Megatron-LM (Shoeybi et al. 2019, section 3) splits each weight matrix so that every process (rank)
holds 1/W of it and the ranks exchange only activations. Meta's reference code does the same with
fairscale's layers (``llama_models/llama3/model.py``); this file holds the four layer types::

    ColumnParallelLinear  y = x W^T, W split by rows (output features):  rank r computes y[..., its slice]
                          (wq, wk, wv, w1, w3: the slices stay local; output: all-gathered to full logits)
    RowParallelLinear     W split by columns (input features): rank r turns its slice of x into a
                          partial y; an all-reduce (sum) gives every rank the full y          (wo, w2)
    VocabParallelEmbedding  table split by token ids: a rank looks up the ids it owns, zeros the rest,
                          all-reduce sums the rows                           (tok_embeddings, Llama 3)
    ParallelEmbedding     table split by embedding features, all-gathered      (Llama 2 checkpoints)

Why this pairing needs only two collectives per layer: attention heads are independent, so rank r
computes H/W query heads from its rows of wq (and its kv heads from wk, wv), and its columns of wo
turn exactly those heads into a partial sum; likewise SwiGLU's F hidden units are independent
(``silu(w1 x) * w3 x`` is element-wise), so w1/w3 rows and w2 columns split along F. With fewer kv
heads than ranks (K < W) each kv head is replicated on the W/K ranks whose query heads use it, as
Meta's checkpoints do. Norms, the RoPE table and the residual stream are replicated.

``rank_range`` says which slice of each full weight a rank owns; ``parallelize`` swaps a model's
layers for the parallel ones (slicing whatever weights it holds, real or on the ``meta`` device).
Loading only a rank's slice from a checkpoint is in ``parallel_load.py``.

Inference only: the collectives are plain ``torch.distributed`` calls without autograd rules.
Shapes: B batch, T tokens, D model dim, H/K query/kv heads, Dh head dim, F ffn dim, V vocab, W ranks.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from LogRelay import get_relay

from .config import ModelArgs

__all__ = [
    "ParallelError",
    "resolve_model_parallel_size",
    "init_distributed",
    "shutdown_distributed",
    "world_info",
    "is_main_rank",
    "rank_device",
    "broadcast_object",
    "broadcast_",
    "shared_items",
    "join_torchrun",
    "ColumnParallelLinear",
    "RowParallelLinear",
    "VocabParallelEmbedding",
    "ParallelEmbedding",
    "check_parallel",
    "local_heads",
    "rank_range",
    "parallelize",
]

log = get_relay("simplellama.parallel")


class ParallelError(ValueError):
    """A model or checkpoint cannot be split over the requested ranks; the message says why."""


# ---------------------------------------------------------------------------------------------
# the process group
# ---------------------------------------------------------------------------------------------


def world_info() -> tuple[int, int]:
    """(world size, rank) of the running process group; (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def is_main_rank() -> bool:
    """True on rank 0 (and in a single process): the one rank that prints."""
    return world_info()[1] == 0


def resolve_model_parallel_size(model_parallel_size: int | None = None) -> int:
    """``model_parallel_size`` or, when None, the process group's / torchrun's world size (1 otherwise)."""
    if model_parallel_size is not None:
        return model_parallel_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(
    model_parallel_size: int | None = None, device: str | torch.device | None = None, timeout_s: float = 1800.0
) -> tuple[int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...); (W, rank).

    ``model_parallel_size`` None means the world size under torchrun and 1 otherwise. Backend: nccl
    for CUDA devices, gloo otherwise. One process never touches ``torch.distributed``.
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    want = resolve_model_parallel_size(model_parallel_size)
    if isinstance(want, bool) or not isinstance(want, int) or want < 1:
        raise ParallelError(f"model_parallel_size: expected a positive integer, found {model_parallel_size!r}")
    if not (dist.is_available() and dist.is_initialized()) and want > 1:
        if env_world != want or "MASTER_ADDR" not in os.environ:
            raise ParallelError(
                f"model_parallel_size={want} needs {want} processes but WORLD_SIZE={env_world}: launch with "
                f"torchrun --nproc-per-node {want} ... (or use model_parallel_size=1 to merge the shards)"
            )
        cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        backend = "nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        log.info("rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), backend)
    world, rank = world_info()
    if want != world:
        raise ParallelError(f"model_parallel_size={want} but the process group has {world} ranks (WORLD_SIZE)")
    return world, rank


def shutdown_distributed(exit_code: int | None = None) -> None:
    """Leave the process group (all ranks wait for each other first); no-op without one.

    With ``exit_code`` (non-zero: no barrier), a rank that was in a group then ends the process with
    ``os._exit`` after flushing stdout/stderr: with gloo (torch 2.13) the normal interpreter exit sometimes aborts in a
    background thread ("terminate called without an active exception", exit -6), which torchrun
    reports as a failed rank.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if not exit_code:  # after a failure the other ranks may be blocked elsewhere: no barrier then
        dist.barrier()
        dist.destroy_process_group()
    if exit_code is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def rank_device(device: str | torch.device | None) -> torch.device:
    """The device of this rank: ``cuda`` (or None with CUDA present) means ``cuda:LOCAL_RANK``."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world_info()[0] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. a line of chat input read by rank 0 only)."""
    if world_info()[0] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` on every rank with rank ``src``'s values (e.g. sampled tokens, so ranks never diverge)."""
    if world_info()[0] > 1:
        dist.broadcast(t, src=src)
    return t


def shared_items(items: Iterable[Any]) -> Iterator[Any]:
    """Rank 0 iterates ``items`` (e.g. lines read from stdin) and every rank receives each item."""
    if world_info()[0] == 1:
        yield from items
        return
    it, end = (iter(items) if is_main_rank() else None), object()
    while True:
        box = None  # [item] from rank 0, None once its items are exhausted
        if it is not None:
            item = next(it, end)
            box = None if item is end else [item]
        box = broadcast_object(box)
        if box is None:
            return
        yield box[0]


def join_torchrun(device: str | torch.device | None = None) -> int:
    """For the command line: under torchrun join the process group; ranks > 0 stop printing. Returns W."""
    if resolve_model_parallel_size() == 1:
        return 1
    world, rank = init_distributed(None, device)
    if rank > 0:  # only rank 0 prints; errors still reach stderr from any rank
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    return world


def _all_gather_last(x: torch.Tensor) -> torch.Tensor:
    """(..., n) on each of W ranks -> (..., W*n) on every rank, rank 0's part first."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=-1)


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over the ranks, in place; every rank gets the same result."""
    dist.all_reduce(x)
    return x


# ---------------------------------------------------------------------------------------------
# the layers (subclasses of nn.Linear / nn.Embedding holding the local slice as .weight)
# ---------------------------------------------------------------------------------------------


def _param(w: torch.Tensor) -> nn.Parameter:
    """``w`` as a frozen parameter; an existing parameter is kept as is (tied weights stay one object)."""
    return w if isinstance(w, nn.Parameter) else nn.Parameter(w, requires_grad=False)


class ColumnParallelLinear(nn.Linear):
    """This rank's rows of a (out, in) weight: x (..., in) -> y (..., out_local), or (..., out) if gathered."""

    def __init__(self, weight: torch.Tensor, gather_output: bool = False) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias=False, device="meta")
        self.weight = _param(weight)  # (out/W, in)
        self.gather_output = gather_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)  # (..., out/W)
        return _all_gather_last(y) if self.gather_output and world_info()[0] > 1 else y  # (..., out)


class RowParallelLinear(nn.Linear):
    """This rank's columns of a (out, in) weight: its input slice x (..., in/W) -> full y (..., out), summed."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias=False, device="meta")
        self.weight = _param(weight)  # (out, in/W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)  # (..., out): this rank's share of the sum
        return _all_reduce(y) if world_info()[0] > 1 else y


class VocabParallelEmbedding(nn.Embedding):
    """Rows ``vocab_start .. vocab_start + V/W - 1`` of the (V, D) table; lookups summed over the ranks."""

    def __init__(self, weight: torch.Tensor, vocab_start: int) -> None:
        super().__init__(weight.shape[0], weight.shape[1], device="meta")
        self.weight = _param(weight)  # (V/W, D)
        self.vocab_start = vocab_start

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        local = tokens - self.vocab_start  # (B, T) ids relative to this rank's first row
        mine = (local >= 0) & (local < self.weight.shape[0])
        h = F.embedding(local.clamp(0, self.weight.shape[0] - 1), self.weight)  # (B, T, D)
        h = h * mine[..., None].to(h.dtype)  # rows of ids another rank owns are 0 here
        return _all_reduce(h) if world_info()[0] > 1 else h


class ParallelEmbedding(nn.Embedding):
    """Columns (embedding features) of the (V, D) table, all-gathered: Llama 2's ``ParallelEmbedding``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight.shape[0], weight.shape[1], device="meta")
        self.weight = _param(weight)  # (V, D/W)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = F.embedding(tokens, self.weight)  # (B, T, D/W)
        return _all_gather_last(h) if world_info()[0] > 1 else h  # (B, T, D)


# ---------------------------------------------------------------------------------------------
# who owns what
# ---------------------------------------------------------------------------------------------


def check_parallel(
    args: ModelArgs, world_size: int, embedding: str = "vocab", what: str = "model_parallel_size"
) -> None:
    """Raise :class:`ParallelError` unless ``args`` splits evenly over ``world_size`` ranks (or shards)."""
    W, K = world_size, args.n_kv_heads
    if isinstance(W, bool) or not isinstance(W, int) or W < 1:
        raise ParallelError(f"{what}: expected a positive integer, found {W!r}")
    sizes = [("n_heads", args.n_heads), ("ffn hidden dim", args.hidden_dim)]
    sizes.append(("vocab_size", args.vocab_size) if embedding == "vocab" else ("dim", args.dim))
    for name, n in sizes:
        if n % W:
            raise ParallelError(f"{what}={W}: {name} ({n}) must be divisible by it")
    if K % W and W % K:
        raise ParallelError(
            f"{what}={W}: n_kv_heads ({K}) must be divisible by it, or it by n_kv_heads (kv heads replicated)"
        )
    if embedding not in ("vocab", "dim"):
        raise ParallelError(f"embedding: expected 'vocab' or 'dim', found {embedding!r}")


def local_heads(args: ModelArgs, world_size: int) -> tuple[int, int]:
    """(query heads, kv heads) on each rank: H/W and K/W, or 1 kv head (replicated) when K < W."""
    return args.n_heads // world_size, max(args.n_kv_heads // world_size, 1)


def rank_range(
    key: str, args: ModelArgs, world_size: int, rank: int, embedding: str = "vocab"
) -> tuple[int, int, int] | None:
    """(dim, start, stop): the slice of the full weight ``key`` that ``rank`` of ``world_size`` holds.

    None for replicated tensors (norms). The same function describes a Meta checkpoint's shard i of N
    (``rank_range(key, args, N, i)``), which is what makes re-slicing a checkpoint a matter of ranges.
    """
    module = re.sub(r"^layers\.\d+\.", "", key.removesuffix(".weight"))
    Dh, W, r = args.head_dim, world_size, rank
    if module in ("attention.wk", "attention.wv"):
        K = args.n_kv_heads
        first = r * K // W  # the kv head the rank's first query head uses
        count = K // W if W <= K else 1
        return 0, first * Dh, (first + count) * Dh
    table = {
        "attention.wq": (0, args.n_heads * Dh),
        "attention.wo": (1, args.n_heads * Dh),
        "feed_forward.w1": (0, args.hidden_dim),
        "feed_forward.w3": (0, args.hidden_dim),
        "feed_forward.w2": (1, args.hidden_dim),
        "output": (0, args.vocab_size),
        "tok_embeddings": (0, args.vocab_size) if embedding == "vocab" else (1, args.dim),
    }
    if module not in table:
        return None
    dim, n = table[module]
    return dim, r * n // W, (r + 1) * n // W


def _cut(key: str, w: torch.Tensor, args: ModelArgs, W: int, r: int, embedding: str) -> torch.Tensor:
    dim, start, stop = rank_range(key, args, W, r, embedding)
    return w.narrow(dim, start, stop - start).clone()  # a copy, so the full weight can be freed


def parallelize(
    model: nn.Module, world_size: int | None = None, rank: int | None = None, embedding: str = "vocab"
) -> nn.Module:
    """Replace a ``Transformer``'s layers, in place, by parallel ones holding rank ``rank``'s slices.

    The model may hold real weights (they are sliced and copied) or live on the ``meta`` device (then
    load this rank's state dict with ``load_state_dict(sd, assign=True)``). Defaults: the process group's
    size and rank. ``embedding``: ``"vocab"`` (Llama 3) or ``"dim"`` (Llama 2) split of tok_embeddings.
    """
    W0, r0 = world_info()
    W, r = (W0 if world_size is None else world_size), (r0 if rank is None else rank)
    args: ModelArgs = model.args
    check_parallel(args, W, embedding)
    if not 0 <= r < W:
        raise ParallelError(f"rank: expected 0 <= rank < {W}, found {r}")
    if args.tie_word_embeddings and embedding != "vocab":
        raise ParallelError("tied embeddings need the vocab-parallel embedding (embedding='vocab')")
    H_local, K_local = local_heads(args, W)
    for i, layer in enumerate(model.layers):
        a, ff, p = layer.attention, layer.feed_forward, f"layers.{i}."
        for name in ("wq", "wk", "wv"):
            key = f"{p}attention.{name}.weight"
            setattr(a, name, ColumnParallelLinear(_cut(key, getattr(a, name).weight, args, W, r, embedding)))
        a.wo = RowParallelLinear(_cut(f"{p}attention.wo.weight", a.wo.weight, args, W, r, embedding))
        a.n_heads, a.n_kv_heads, a.n_rep = H_local, K_local, H_local // K_local  # the heads this rank computes
        ff.w1 = ColumnParallelLinear(_cut(f"{p}feed_forward.w1.weight", ff.w1.weight, args, W, r, embedding))
        ff.w3 = ColumnParallelLinear(_cut(f"{p}feed_forward.w3.weight", ff.w3.weight, args, W, r, embedding))
        ff.w2 = RowParallelLinear(_cut(f"{p}feed_forward.w2.weight", ff.w2.weight, args, W, r, embedding))
    emb = _cut("tok_embeddings.weight", model.tok_embeddings.weight, args, W, r, embedding)
    if embedding == "vocab":
        model.tok_embeddings = VocabParallelEmbedding(emb, vocab_start=r * args.vocab_size // W)
    else:
        model.tok_embeddings = ParallelEmbedding(emb)
    if args.tie_word_embeddings:  # one (V/W, D) slice, two names, as in the single-process model
        model.output = ColumnParallelLinear(model.tok_embeddings.weight, gather_output=True)
    else:
        model.output = ColumnParallelLinear(_cut("output.weight", model.output.weight, args, W, r, embedding), True)
    for p in model.parameters():
        p.requires_grad_(False)
    model.model_parallel = (W, r)
    F_local = args.hidden_dim // W
    log.info("rank %d/%d: %d query heads, %d kv heads, %d ffn units", r, W, H_local, K_local, F_local)
    return model
