"""Loading one rank's slice of a checkpoint for model-parallel inference (see ``parallel.py``).

A Meta checkpoint with N ``consolidated.NN.pth`` files is itself split over N ranks: shard i holds
exactly what rank i of N holds (``rank_range(key, args, N, i)``). A rank of W therefore needs::

    N == W   shard r only, as is
    N >  W   shards r*N/W .. (r+1)*N/W - 1, concatenated        (8 shards on 2 or 4 ranks)
    N <  W   shard r*N // W, sliced                            (1 file on 2 ranks, 2 shards on 4)

(the rule of ``map_mp_rank`` in Meta's ``llama_models/checkpoint.py``). Shards are memory-mapped
(``torch.load(mmap=True)``) and read one at a time: only this rank's pieces are copied out of each
before the next is opened. kv heads with K < N are repeated over N/K shards; one copy is taken.

HF and GGUF files are single-process formats: every rank loads the whole model and keeps its slice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from LogRelay import get_relay

from .config import ModelArgs
from .parallel import ParallelError, check_parallel, init_distributed, parallelize, rank_device, rank_range

__all__ = ["shards_for_rank", "read_meta_slice", "load_parallel_checkpoint", "load_model_parallel"]

log = get_relay("simplellama.parallel_load")


def shards_for_rank(n_shards: int, world_size: int, rank: int) -> list[int]:
    """Indices of the shards rank ``rank`` of ``world_size`` reads from an ``n_shards`` checkpoint."""
    if n_shards % world_size and world_size % n_shards:
        raise ParallelError(
            f"checkpoint has {n_shards} shards for model_parallel_size={world_size}: one must divide the other "
            f"(run with {n_shards} ranks, a divisor or a multiple of it)"
        )
    if n_shards >= world_size:
        per = n_shards // world_size
        return list(range(rank * per, (rank + 1) * per))
    return [rank * n_shards // world_size]


def read_meta_slice(
    paths: list[Path], args: ModelArgs, world_size: int, rank: int, dtype: torch.dtype | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """This rank's state dict (local shapes, Meta names) from Meta shards ``paths``; and the embedding split.

    The embedding split (``"vocab"`` for Llama 3, ``"dim"`` for Llama 2) is read from the shape of
    ``tok_embeddings.weight`` in the first shard this rank opens.
    """
    from .checkpoint_meta import torch_load_checked  # plain messages for HTML pages, truncated files, pickles

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
                raise ParallelError(f"{e} (the checkpoint's {N} shards do not fit its params.json)") from None
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
                    pieces[key] = [t.to(dtype or t.dtype, copy=True)]
                continue
            dim, start, stop = mine
            _, s_start, s_stop = rank_range(key, args, N, i, embedding)
            if t.ndim != 2 or t.shape[dim] != s_stop - s_start:
                raise ParallelError(
                    f"{paths[i]}: {key}: expected {s_stop - s_start} along dim {dim} for shard {i} of {N}, "
                    f"found shape {tuple(t.shape)} (does params.json match the shards?)"
                )
            pos = cursor.setdefault(key, start)
            if s_start <= pos < s_stop:  # this shard holds the next piece (repeated kv heads: first copy)
                end = min(stop, s_stop)
                piece = t.narrow(dim, pos - s_start, end - pos)
                pieces.setdefault(key, []).append(piece.to(dtype or t.dtype, copy=True))
                cursor[key] = end
        del shard
    sd = {}
    for key, parts in pieces.items():
        mine = rank_range(key, args, W, r, embedding)
        if mine is not None and cursor[key] != mine[2]:
            raise ParallelError(f"{key}: shards {needed} do not cover rows {mine[1]}..{mine[2]} (internal error)")
        sd[key] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=mine[0])
    return sd, embedding


def load_parallel_checkpoint(
    path: str | os.PathLike | None = None,
    model_parallel_size: int | None = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    with_tokenizer: bool = True,
    **arg_overrides: Any,
) -> tuple[Any, Any]:
    """(Checkpoint without weights, this rank's ``Transformer``): what ``Llama.build`` needs on each rank.

    The Checkpoint carries args, tokenizer and chat template; its ``state_dict`` is empty (the weights
    live in the model). Joins the torchrun process group if needed (``init_distributed``).
    """
    from . import checkpoint
    from .checkpoint_meta import meta_shard_paths, read_params
    from .model import Transformer

    W, r = init_distributed(model_parallel_size, device)
    device = rank_device(device)
    path = checkpoint.default_model_path() if path is None else Path(path)
    fmt = checkpoint.detect_format(path)
    if W == 1 or fmt != "meta":  # one process, or a single-process format: load whole, keep the slice
        if W > 1:
            log.info("rank %d: %s is a %s checkpoint: loading it whole and keeping 1/%d", r, path, fmt, W)
        ckpt = checkpoint.load_checkpoint(path, dtype=dtype, with_tokenizer=with_tokenizer, **arg_overrides)
        check_parallel(ckpt.args, W)
        model = checkpoint.model_from_state_dict(Transformer, ckpt.args, ckpt.state_dict, "cpu")
        ckpt.state_dict = {}
        model = model if W == 1 else parallelize(model, W, r)
        return ckpt, model.to(device).eval()
    args = read_params(path, arg_overrides)
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
            raise checkpoint.CheckpointError(
                f"{path}: {key}: rank {r} of {W} expected shape {expected.get(key, 'no such key')}, found {found}"
            )
    model = checkpoint.assign_weights(model, args, sd, device)
    n_read = len(shards_for_rank(len(paths), W, r))
    log.info("rank %d: loaded %d tensors from %d of %d shard(s)", r, len(sd), n_read, len(paths))
    ckpt = checkpoint.Checkpoint("meta", args, {}, path=path)
    checkpoint.find_tokenizer_files(ckpt)  # tokenizer.model / tokenizer.json / chat template beside the shards
    if with_tokenizer:
        ckpt.tokenizer = checkpoint.tokenizer_for(ckpt)
    return ckpt, model


def load_model_parallel(
    path: str | os.PathLike | None = None,
    model_parallel_size: int | None = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    **arg_overrides: Any,
) -> tuple[Any, ModelArgs]:
    """This rank's ``Transformer`` (parallel layers, its slice of the weights) and the full ``ModelArgs``.

    ``forward`` returns full logits on every rank. With one process this is ``checkpoint.load_model``.
    """
    ckpt, model = load_parallel_checkpoint(path, model_parallel_size, device, dtype, False, **arg_overrides)
    return model, ckpt.args
