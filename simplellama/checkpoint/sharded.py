"""One rank's slice of a model: which part of each weight it holds, and loading only that part.

Megatron-style tensor parallelism (``parallel.py``) gives rank r of W a slice of every split weight
along the dimension in ``keys.py`` (the table Meta's multi-file checkpoints are cut by, too), so::

    rank_range(key, args, W, r)   (dim, start, stop) of the full weight ``key`` rank r holds
    parallelize(model, W, r)      swap a Transformer's layers for parallel ones holding those slices

A Meta checkpoint with N ``consolidated.NN.pth`` files is itself split over N ranks: shard i holds
exactly ``rank_range(key, args, N, i)``. A rank of W therefore needs::

    N == W   shard r only, as is
    N >  W   shards r*N/W .. (r+1)*N/W - 1, concatenated        (8 shards on 2 or 4 ranks)
    N <  W   shard r*N // W, sliced                            (1 file on 2 ranks, 2 shards on 4)

(the rule of ``map_mp_rank`` in Meta's ``llama_models/checkpoint.py``). Shards are memory-mapped
(``torch.load(mmap=True)``) and read one at a time: only this rank's pieces are copied out of each
before the next is opened. kv heads with K < N are repeated over N/K shards; one copy is taken.
HF and GGUF files are single-process formats: every rank loads the whole model and keeps its slice.

Shapes: D model dim, H/K query/kv heads, Dh head dim, F ffn dim, V vocab, W ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from LogRelay import get_relay

from ..config import ModelArgs
from ..errors import CheckpointError, ParallelError
from ..model import Transformer
from ..parallel import (
    ColumnParallelLinear,
    ParallelEmbedding,
    RowParallelLinear,
    VocabParallelEmbedding,
    world_info,
)
from .common import Checkpoint, assign_weights, check_weight, find_tokenizer_files, tokenizer_for
from .keys import module_of, module_shapes, shard_dim
from .meta import meta_shard_paths, read_params, torch_load_checked

__all__ = [
    "check_parallel",
    "local_heads",
    "rank_range",
    "parallelize",
    "shards_for_rank",
    "read_meta_slice",
    "load_meta_rank",
]

log = get_relay("simplellama.parallel")


def check_parallel(
    args: ModelArgs, world_size: int, embedding: str = "vocab", what: str = "model_parallel_size"
) -> None:
    """Raise :class:`ParallelError` unless ``args`` splits evenly over ``world_size`` ranks (or
    shards)."""
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
            f"{what}={W}: n_kv_heads ({K}) must be divisible by it, or it by n_kv_heads (kv heads "
            "replicated)"
        )
    if embedding not in ("vocab", "dim"):
        raise ParallelError(f"embedding: expected 'vocab' or 'dim', found {embedding!r}")


def local_heads(args: ModelArgs, world_size: int) -> tuple[int, int]:
    """(query heads, kv heads) on each rank: H/W and K/W, or 1 kv head (replicated) when K < W."""
    return args.n_heads // world_size, max(args.n_kv_heads // world_size, 1)


def rank_range(
    key: str, args: ModelArgs, world_size: int, rank: int, embedding: str = "vocab"
) -> tuple[int, int, int] | None:
    """(dim, start, stop): the slice of the full weight ``key`` that ``rank`` of ``world_size``
    holds.

    None for replicated tensors (norms). The same function describes a Meta checkpoint's shard i of
    N (``rank_range(key, args, N, i)``), which is what makes re-slicing a checkpoint a matter of
    ranges.
    """
    dim, module, W, r = shard_dim(key), module_of(key), world_size, rank
    if dim is None:
        return None
    if module in ("attention.wk", "attention.wv"):  # whole kv heads; with K < W each is repeated
        K, Dh = args.n_kv_heads, args.head_dim
        first = r * K // W  # the kv head the rank's first query head uses
        count = K // W if W <= K else 1
        return 0, first * Dh, (first + count) * Dh
    if module == "tok_embeddings" and embedding == "dim":
        dim = 1  # Llama 2's ParallelEmbedding splits the embedding features
    n = module_shapes(args)[module][dim]
    return dim, r * n // W, (r + 1) * n // W


def _cut(
    key: str, w: torch.Tensor, args: ModelArgs, W: int, r: int, embedding: str
) -> torch.Tensor:
    dim, start, stop = rank_range(key, args, W, r, embedding)
    return w.narrow(dim, start, stop - start).clone()  # a copy, so the full weight can be freed


def parallelize(
    model: nn.Module,
    world_size: int | None = None,
    rank: int | None = None,
    embedding: str = "vocab",
) -> nn.Module:
    """Replace a ``Transformer``'s layers, in place, by parallel ones holding rank ``rank``'s
    slices.

    The model may hold real weights (they are sliced and copied) or live on the ``meta`` device
    (then load this rank's state dict with ``load_state_dict(sd, assign=True)``). Defaults: the
    process group's size and rank. ``embedding``: ``"vocab"`` (Llama 3) or ``"dim"`` (Llama 2) split
    of tok_embeddings.
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
            setattr(
                a,
                name,
                ColumnParallelLinear(_cut(key, getattr(a, name).weight, args, W, r, embedding)),
            )
        a.wo = RowParallelLinear(
            _cut(f"{p}attention.wo.weight", a.wo.weight, args, W, r, embedding)
        )
        a.n_heads, a.n_kv_heads, a.n_rep = (
            H_local,
            K_local,
            H_local // K_local,
        )  # the heads this rank computes
        ff.w1 = ColumnParallelLinear(
            _cut(f"{p}feed_forward.w1.weight", ff.w1.weight, args, W, r, embedding)
        )
        ff.w3 = ColumnParallelLinear(
            _cut(f"{p}feed_forward.w3.weight", ff.w3.weight, args, W, r, embedding)
        )
        ff.w2 = RowParallelLinear(
            _cut(f"{p}feed_forward.w2.weight", ff.w2.weight, args, W, r, embedding)
        )
    emb = _cut("tok_embeddings.weight", model.tok_embeddings.weight, args, W, r, embedding)
    if embedding == "vocab":
        model.tok_embeddings = VocabParallelEmbedding(emb, vocab_start=r * args.vocab_size // W)
    else:
        model.tok_embeddings = ParallelEmbedding(emb)
    if args.tie_word_embeddings:  # one (V/W, D) slice, two names, as in the single-process model
        model.output = ColumnParallelLinear(model.tok_embeddings.weight, gather_output=True)
    else:
        model.output = ColumnParallelLinear(
            _cut("output.weight", model.output.weight, args, W, r, embedding), True
        )
    for p in model.parameters():
        p.requires_grad_(False)
    model.model_parallel = (W, r)
    F_local = args.hidden_dim // W
    log.info(
        "rank %d/%d: %d query heads, %d kv heads, %d ffn units", r, W, H_local, K_local, F_local
    )
    return model


def shards_for_rank(n_shards: int, world_size: int, rank: int) -> list[int]:
    """Indices of the shards rank ``rank`` of ``world_size`` reads from an ``n_shards``
    checkpoint."""
    if n_shards % world_size and world_size % n_shards:
        raise ParallelError(
            f"checkpoint has {n_shards} shards for model_parallel_size={world_size}: one must "
            "divide the other "
            f"(run with {n_shards} ranks, a divisor or a multiple of it)"
        )
    if n_shards >= world_size:
        per = n_shards // world_size
        return list(range(rank * per, (rank + 1) * per))
    return [rank * n_shards // world_size]


def read_meta_slice(
    paths: list[Path], args: ModelArgs, world_size: int, rank: int, dtype: torch.dtype | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """This rank's state dict (local shapes, Meta names) from Meta shards ``paths``; and the
    embedding split.

    The embedding split (``"vocab"`` for Llama 3, ``"dim"`` for Llama 2) is read from the shape of
    ``tok_embeddings.weight`` in the first shard this rank opens.
    """
    N, W, r = len(paths), world_size, rank
    needed = shards_for_rank(N, W, r)
    pieces: dict[str, list[torch.Tensor]] = {}
    cursor: dict[str, int] = {}  # per key: how far along its split dim this rank's slice is filled
    embedding = "vocab"
    for n, i in enumerate(needed):
        shard = torch_load_checked(paths[i])  # memory-mapped: only the pieces copied below are read
        if n == 0:
            emb = shard.get("tok_embeddings.weight")
            if N > 1 and emb is not None and emb.ndim == 2 and emb.shape[0] == args.vocab_size:
                embedding = "dim"  # Llama 2's ParallelEmbedding: (V, D/N) per shard
            try:
                check_parallel(args, N, embedding, what=f"{paths[0].parent}: shard count")
            except ParallelError as e:
                raise ParallelError(
                    f"{e} (the checkpoint's {N} shards do not fit its params.json)"
                ) from None
            check_parallel(args, W, embedding)
            keys = list(shard)
        elif set(shard) != set(keys):
            diff = sorted(set(shard) ^ set(keys))[0]
            raise ParallelError(f"{paths[i]}: keys differ from {paths[needed[0]].name}: {diff!r}")
        for key in keys:
            t = shard[key]
            mine = rank_range(key, args, W, r, embedding)
            if mine is None:  # replicated (norms): the first shard's copy
                if n == 0:
                    pieces[key] = [
                        check_weight(t, key, str(paths[i])).to(dtype or t.dtype, copy=True)
                    ]
                continue
            dim, start, stop = mine
            _, s_start, s_stop = rank_range(key, args, N, i, embedding)
            if t.ndim != 2 or t.shape[dim] != s_stop - s_start:
                raise ParallelError(
                    f"{paths[i]}: {key}: expected {s_stop - s_start} along dim {dim} for shard "
                    f"{i} of {N}, "
                    f"found shape {tuple(t.shape)} (does params.json match the shards?)"
                )
            pos = cursor.setdefault(key, start)
            if (
                s_start <= pos < s_stop
            ):  # this shard holds the next piece (repeated kv heads: first copy)
                end = min(stop, s_stop)
                piece = check_weight(t.narrow(dim, pos - s_start, end - pos), key, str(paths[i]))
                pieces.setdefault(key, []).append(piece.to(dtype or t.dtype, copy=True))
                cursor[key] = end
        del shard
    sd = {}
    for key, parts in pieces.items():
        mine = rank_range(key, args, W, r, embedding)
        if mine is not None and cursor[key] != mine[2]:
            raise ParallelError(
                f"{key}: shards {needed} do not cover rows {mine[1]}..{mine[2]} (internal error)"
            )
        sd[key] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=mine[0])
    return sd, embedding


def load_meta_rank(
    path: Path,
    world_size: int,
    rank: int,
    device: torch.device,
    dtype: torch.dtype | None,
    overrides: dict[str, Any],
    with_tokenizer: bool = True,
) -> tuple[Checkpoint, Transformer]:
    """(Checkpoint without weights, this rank's ``Transformer``) from a Meta directory's shards."""
    W, r = world_size, rank
    args = read_params(path, overrides)
    paths = meta_shard_paths(path)  # consolidated.00.pth ... numbered without gaps
    sd, embedding = read_meta_slice(paths, args, W, r, dtype)
    if "output.weight" not in sd:  # Meta's tied models (Llama 3.2 1B/3B) omit it
        args.tie_word_embeddings = True
    model = parallelize(Transformer(args, device="meta"), W, r, embedding)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if args.tie_word_embeddings:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    for key in sorted(set(expected) | set(sd)):
        if key not in sd or key not in expected or tuple(sd[key].shape) != expected[key]:
            found = tuple(sd[key].shape) if key in sd else "nothing"
            raise CheckpointError(
                f"{path}: {key}: rank {r} of {W} expected shape "
                f"{expected.get(key, 'no such key')}, found {found}"
            )
    model = assign_weights(model, args, sd, device)
    n_read = len(shards_for_rank(len(paths), W, r))
    log.info("rank %d: loaded %d tensors from %d of %d shard(s)", r, len(sd), n_read, len(paths))
    ckpt = Checkpoint("meta", args, {}, path=path)
    find_tokenizer_files(ckpt)  # tokenizer.model / tokenizer.json / chat template beside the shards
    if with_tokenizer:
        ckpt.tokenizer = tokenizer_for(ckpt)
    return ckpt, model
