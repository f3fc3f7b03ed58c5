"""Tensor (model) parallelism: one Llama spread over several processes with ``torch.distributed``.

Megatron-LM (Shoeybi et al. 2019, section 3) splits each weight matrix so that every process (rank)
holds 1/W of it and the ranks exchange only activations. Meta's reference code does the same with
fairscale's layers (``llama_models/llama3/model.py``); this file holds the four layer types::

    ColumnParallelLinear  y = x W^T, W split by rows (output features):  rank r computes y[..., its
    slice]
                          (wq, wk, wv, w1, w3: the slices stay local; output: all-gathered to full
                          logits)
    RowParallelLinear     W split by columns (input features): rank r turns its slice of x into a
                          partial y; an all-reduce (sum) gives every rank the full y          (wo,
                          w2)
    VocabParallelEmbedding  table split by token ids: a rank looks up the ids it owns, zeros the
    rest,
                          all-reduce sums the rows                           (tok_embeddings, Llama
                          3)
    ParallelEmbedding     table split by embedding features, all-gathered      (Llama 2 checkpoints)

Why this pairing needs only two collectives per layer: attention heads are independent, so rank r
computes H/W query heads from its rows of wq (and its kv heads from wk, wv), and its columns of wo
turn exactly those heads into a partial sum; likewise SwiGLU's F hidden units are independent
(``silu(w1 x) * w3 x`` is element-wise), so w1/w3 rows and w2 columns split along F. With fewer kv
heads than ranks (K < W) each kv head is replicated on the W/K ranks whose query heads use it, as
Meta's checkpoints do. Norms, the RoPE table and the residual stream are replicated.

Which slice of each weight a rank owns (``rank_range``), swapping a model's layers for these
(``parallelize``) and loading only a rank's slice of a checkpoint are in ``checkpoint/sharded.py``,
beside the one table of shard dimensions (``checkpoint/keys.py``).

Inference only: the collectives are plain ``torch.distributed`` calls without autograd rules.
Shapes: B batch, T tokens, D model dim, H/K query/kv heads, Dh head dim, F ffn dim, V vocab, W
ranks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from LogRelay import get_relay

from .devices import pick_device
from .errors import ParallelError

__all__ = [
    "resolve_model_parallel_size",
    "init_distributed",
    "shutdown_distributed",
    "world_info",
    "is_main_rank",
    "broadcast_object",
    "broadcast_",
    "shared_items",
    "join_torchrun",
    "ColumnParallelLinear",
    "RowParallelLinear",
    "VocabParallelEmbedding",
    "ParallelEmbedding",
]

log = get_relay("simplellama.parallel")


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
    """``model_parallel_size`` or, when None, the process group's / torchrun's world size (1
    otherwise)."""
    if model_parallel_size is not None:
        return model_parallel_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(
    model_parallel_size: int | None = None,
    device: str | torch.device | None = None,
    timeout_s: float = 1800.0,
) -> tuple[int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...); (W,
    rank).

    ``model_parallel_size`` None means the world size under torchrun and 1 otherwise. Backend: nccl
    for CUDA devices, gloo otherwise. One process never touches ``torch.distributed``.
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    want = resolve_model_parallel_size(model_parallel_size)
    if isinstance(want, bool) or not isinstance(want, int) or want < 1:
        raise ParallelError(
            f"model_parallel_size: expected a positive integer, found {model_parallel_size!r}"
        )
    if not (dist.is_available() and dist.is_initialized()) and want > 1:
        if env_world != want or "MASTER_ADDR" not in os.environ:
            raise ParallelError(
                f"model_parallel_size={want} needs {want} processes but WORLD_SIZE={env_world}: "
                "launch with "
                f"torchrun --nproc-per-node {want} ... (or use model_parallel_size=1 to merge the "
                "shards)"
            )
        cuda = pick_device(device).type == "cuda"
        backend = "nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        log.info(
            "rank %d of %d joined the %s process group",
            dist.get_rank(),
            dist.get_world_size(),
            backend,
        )
    world, rank = world_info()
    if want != world:
        raise ParallelError(
            f"model_parallel_size={want} but the process group has {world} ranks (WORLD_SIZE)"
        )
    return world, rank


def shutdown_distributed(exit_code: int | None = None) -> None:
    """Leave the process group (all ranks wait for each other first); no-op without one.

    With ``exit_code`` (non-zero: no barrier), a rank that was in a group then ends the process with
    ``os._exit`` after flushing stdout/stderr: with gloo (torch 2.13) the normal interpreter exit
    sometimes aborts in a background thread ("terminate called without an active exception", exit
    -6), which torchrun reports as a failed rank.
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


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. a line of chat input read by rank 0 only)."""
    if world_info()[0] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` on every rank with rank ``src``'s values (e.g. sampled tokens, so ranks never
    diverge)."""
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
    """For the command line: under torchrun join the process group; ranks > 0 stop printing. Returns
    W."""
    if resolve_model_parallel_size() == 1:
        return 1
    world, rank = init_distributed(None, device)
    if rank > 0:  # only rank 0 prints; errors still reach stderr from any rank
        sys.stdout = open(os.devnull, "w")  # lives as long as the process
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
    """``w`` as a frozen parameter; an existing parameter is kept as is (tied weights stay one
    object)."""
    return w if isinstance(w, nn.Parameter) else nn.Parameter(w, requires_grad=False)


class ColumnParallelLinear(nn.Linear):
    """This rank's rows of a (out, in) weight: x (..., in) -> y (..., out_local), or (..., out) if
    gathered."""

    def __init__(self, weight: torch.Tensor, gather_output: bool = False) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias=False, device="meta")
        self.weight = _param(weight)  # (out/W, in)
        self.gather_output = gather_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)  # (..., out/W)
        return (
            _all_gather_last(y) if self.gather_output and world_info()[0] > 1 else y
        )  # (..., out)


class RowParallelLinear(nn.Linear):
    """This rank's columns of a (out, in) weight: its input slice x (..., in/W) -> full y (...,
    out), summed."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias=False, device="meta")
        self.weight = _param(weight)  # (out, in/W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)  # (..., out): this rank's share of the sum
        return _all_reduce(y) if world_info()[0] > 1 else y


class VocabParallelEmbedding(nn.Embedding):
    """Rows ``vocab_start .. vocab_start + V/W - 1`` of the (V, D) table; lookups summed over the
    ranks."""

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
    """Columns (embedding features) of the (V, D) table, all-gathered: Llama 2's
    ``ParallelEmbedding``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight.shape[0], weight.shape[1], device="meta")
        self.weight = _param(weight)  # (V, D/W)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = F.embedding(tokens, self.weight)  # (B, T, D/W)
        return _all_gather_last(h) if world_info()[0] > 1 else h  # (B, T, D)
