"""Meta checkpoints: ``params.json`` + ``consolidated.NN.pth`` (one file per model-parallel rank).

Meta's multi-GPU checkpoints hold one ``consolidated.NN.pth`` per model-parallel rank (fairscale);
shards are merged along the split dimension of each weight (``keys.py``, one table with the
per-rank loader). With more shards than kv heads, Meta repeats each kv head; one copy is kept.

Shape glossary: V vocab, D model dim, K kv heads, Dh head dim.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from LogRelay import get_relay

from ..config import ModelArgs
from ..errors import CheckpointError, ModelArgsError
from ..files import checkpoint_file, regular_file
from .common import (
    Checkpoint,
    TensorSink,
    atomic_dir,
    check_ram,
    check_state_dict,
    check_weight,
    find_tokenizer_files,
    release_pages,
    write_tokenizer_files,
)
from .keys import expected_shape, shard_dim

__all__ = [
    "SHARD_FILE",
    "load_meta",
    "save_meta",
    "meta_shard_paths",
    "read_params",
    "torch_load_checked",
]

log = get_relay("simplellama.checkpoint")

SHARD_FILE = re.compile(r"consolidated\.(\d+)\.pth")  # one file per model-parallel rank


def meta_shard_paths(d: Path) -> list[Path]:
    """``d``'s ``consolidated.NN.pth`` files in shard order; a gap in the numbering is an error."""
    found = {
        int(m.group(1)): m.group(0) for x in d.iterdir() if (m := SHARD_FILE.fullmatch(x.name))
    }
    if not found:
        raise CheckpointError(f"{d}: expected consolidated.00.pth (Meta weights), found none")
    numbers = sorted(found)
    if numbers != list(range(len(numbers))):
        gap = next(i for i in range(len(numbers) + 1) if i not in found)
        raise CheckpointError(
            f"{d}: shard consolidated.{gap:02d}.pth is missing: expected "
            f"consolidated.00..{len(numbers) - 1:02d}.pth "
            f"numbered without gaps, found {', '.join(found[n] for n in numbers)}"
        )
    return [checkpoint_file(d, found[n], CheckpointError) for n in numbers]


def torch_load_checked(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load`` (weights only, memory-mapped) with plain messages for the usual failures.

    Whatever torch's zip reader or weights-only unpickler raises on a corrupt file (flipped bytes
    give ``UnicodeDecodeError``, ``UnpicklingError``, ``RuntimeError``, ...) becomes one line naming
    the file; nothing in it is executed (``weights_only=True``).
    """
    size = regular_file(path, CheckpointError).stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(b"PK"):
        text = head.lstrip()
        if text[:1] == b"<" or (text and all(32 <= c < 127 or c in b"\r\n\t" for c in text)):
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint but a {size}-byte text/HTML file starting "
                f"{head[:40]!r} "
                "(an expired download link's error page?); download the weights again"
            )
        raise CheckpointError(
            f"{path}: expected a PyTorch zip checkpoint (bytes 'PK'), found {head[:8]!r}"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # any failure of parsing untrusted bytes
        lines = str(e).strip().splitlines()
        first = f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path}: torch.load(weights_only=True) refused it: it holds Python objects, not "
                f"just tensors ({first})"
            ) from None
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint ({size} bytes): {first}"
        ) from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(sd).__name__}")
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            found = f"{type(k).__name__} key {k!r:.60} -> {type(v).__name__}"
            raise CheckpointError(f"{path}: expected a dict of str -> tensor, found {found}")
    return sd


def _merge_kv(
    t: torch.Tensor, key: str, args: ModelArgs, n_shards: int, source: str
) -> torch.Tensor:
    """With more shards than kv heads Meta repeats each kv head on N/K consecutive shards: keep one
    copy."""
    K, Dh = args.n_kv_heads, args.head_dim
    if t.shape[0] == K * Dh or n_shards <= K or n_shards % K or t.shape[0] != n_shards * Dh:
        return t
    r = n_shards // K
    heads = t.view(K, r, Dh, -1)  # (K, N/K, Dh, D): copy j of kv head k came from shard k*r + j
    if not all(torch.equal(heads[:, 0], heads[:, j]) for j in range(1, r)):
        raise CheckpointError(
            f"{source}: {key}: kv heads repeated over {n_shards} shards differ between shards"
        )
    log.info(
        "%s: %s: %d shards hold %d kv heads: dropping the %d repeated copies",
        source,
        key,
        n_shards,
        K,
        r - 1,
    )
    return heads[:, 0].reshape(K * Dh, -1)


def read_params(d: Path, overrides: dict[str, Any]) -> ModelArgs:
    """``ModelArgs`` from a Meta directory's ``params.json`` (``overrides`` win); errors as
    CheckpointError."""
    if not os.path.lexists(d / "params.json"):
        raise CheckpointError(
            f"{d}: params.json is missing (Meta checkpoints describe the model there)"
        )
    params = checkpoint_file(d, "params.json", CheckpointError)
    try:
        return ModelArgs.from_json(params, **overrides)
    except ModelArgsError as e:
        raise CheckpointError(str(e)) from None


def load_meta(
    d: Path,
    dtype: torch.dtype | None,
    overrides: dict[str, Any],
    cache_device: torch.device | str | None = None,
    sink: TensorSink | None = None,
) -> Checkpoint:
    """Read a Meta directory (1..N shards, merged) into a :class:`Checkpoint`; ``cache_device``:
    also make sure a KV cache of ``max_batch_size`` x ``max_seq_len`` fits there (``check_ram``);
    ``sink``: receives each merged, checked weight instead (``TensorSink``)."""
    args = read_params(d, overrides)
    paths = meta_shard_paths(d)
    n_bytes = sum(p.stat().st_size for p in paths)
    itemsize = 2 if dtype is None else dtype.itemsize  # Meta stores bfloat16
    if sink is None:
        check_ram(str(d), n_bytes * itemsize // 2, args, cache_device, itemsize)
    else:
        sink.check_ram(str(d), args, cache_device, itemsize)
    shards = [torch_load_checked(p) for p in paths]  # memory-mapped: nothing is read yet
    keys = list(shards[0])
    for p, s in zip(paths[1:], shards[1:]):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))[0]
            raise CheckpointError(
                f"{p}: keys differ from {paths[0].name}: {diff!r} is in one shard but not the other"
            )
    sd: dict[str, torch.Tensor] = {}
    with log.busy(f"loading {len(paths)} shard(s)", total=len(keys)) as bar:
        for key in keys:
            parts = [s.pop(key) for s in shards]  # drop the shards' references as we go
            t = _merge(key, parts, paths, args, str(d))
            t = check_weight(t, key, str(paths[0]) if len(paths) == 1 else str(d))
            if sink is None:
                sd[key] = t if dtype is None else t.to(dtype)
            else:  # the sink keeps a copy or another form: the file's pages can go
                sd[key] = sink(key, t)
                del t
                for p in parts:
                    release_pages(p)
            del parts
            bar.update()
    del shards
    check_state_dict(sd, args, str(d))
    ckpt = Checkpoint("meta", args, sd, path=d)
    find_tokenizer_files(ckpt)
    return ckpt


def _merge(
    key: str, parts: list[torch.Tensor], paths: list[Path], args: ModelArgs, source: str
) -> torch.Tensor:
    """One weight from its N shards: replicated (norms) or concatenated along its split dim."""
    if len(parts) == 1:
        return parts[0]
    dim, first = split_dim(key, parts, paths, args), parts[0]
    if dim is None:  # replicated (norms): every rank must hold the same values
        for p, x in zip(paths[1:], parts[1:]):
            if not torch.equal(x, first):
                raise CheckpointError(f"{p}: replicated tensor {key} differs from {paths[0].name}")
        return first
    t = torch.cat(parts, dim=dim)
    if key.endswith(("attention.wk.weight", "attention.wv.weight")):
        t = _merge_kv(t, key, args, len(parts), source)
    return t


def split_dim(
    key: str, parts: list[torch.Tensor], paths: list[Path], args: ModelArgs
) -> int | None:
    """The dim along which the N shards ``parts`` of ``key`` are joined (None: replicated), after
    checking that they agree in rank, dtype and every other size (meta tensors will do)."""
    first = parts[0]
    for p, x in zip(paths[1:], parts[1:]):
        if x.ndim != first.ndim or x.dtype != first.dtype:
            raise CheckpointError(
                f"{p}: {key}: {x.ndim}-d {x.dtype}, but {first.ndim}-d {first.dtype} in "
                f"{paths[0].name}: the shards disagree"
            )
    dim, shape = shard_dim(key), expected_shape(key, args)
    if key == "tok_embeddings.weight" and shape is not None and first.shape[:1] == shape[:1]:
        dim = 1  # Llama 2 ParallelEmbedding splits the embedding dim
    if dim is not None and dim >= first.ndim:
        raise CheckpointError(f"{paths[0]}: {key}: expected a {dim + 1}-d weight to split along "
                              f"dim {dim}, found shape {tuple(first.shape)}")  # fmt: skip
    for p, x in zip(paths[1:], parts[1:]):
        if any(a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != dim):
            raise CheckpointError(
                f"{p}: {key}: shape {tuple(x.shape)} does not match {tuple(first.shape)} in "
                f"{paths[0].name}" + ("" if dim is None else f" outside the split dim {dim}")
            )
    return dim


def save_meta(ckpt: Checkpoint, dst: str | os.PathLike) -> Path:
    """Write a Meta checkpoint: ``params.json`` + ``consolidated.00.pth`` (+ tokenizer files)."""
    sd = dict(ckpt.state_dict)
    if ckpt.args.tie_word_embeddings:
        sd.pop("output.weight", None)  # Meta's tied checkpoints (Llama 3.2 1B/3B) omit it
    with atomic_dir(dst) as tmp:
        (tmp / "params.json").write_text(json.dumps(ckpt.args.to_params_json(), indent=2))
        with log.busy("writing consolidated.00.pth", total=1) as bar:
            torch.save({k: v.contiguous() for k, v in sd.items()}, tmp / "consolidated.00.pth")
            bar.update()
        write_tokenizer_files(ckpt, tmp)
    log.info("wrote Meta checkpoint %s", dst)
    return Path(dst)


def read_meta_header(d: Path, overrides: dict[str, Any]) -> Checkpoint:
    """A Meta directory's args and weights as ``meta``-device tensors (shapes, dtypes; no data
    read)."""
    args = read_params(d, overrides)
    paths = meta_shard_paths(d)
    shards = [torch_load_checked(p) for p in paths]  # memory-mapped: only the pickles are read
    first, n = shards[0], len(paths)
    for p, s in zip(paths[1:], shards[1:]):
        if set(s) != set(first):
            raise CheckpointError(f"{p}: keys differ from {paths[0].name}")
    if "output.weight" not in first:
        args.tie_word_embeddings = True
    sd = {}
    for k, t in first.items():
        parts = [s[k].to("meta") for s in shards]  # shapes and dtypes only: no data is read
        for p, x in zip(paths, parts):
            check_weight(x, k, str(p))
        dim, shape = split_dim(k, parts, paths, args), expected_shape(k, args)
        whole = n == 1 or shape is None or len(shape) != t.ndim
        if not whole and any(a != b for i, (a, b) in enumerate(zip(shape, t.shape)) if i != dim):
            whole = True  # sizes that are not split disagree with params.json: report them
        sd[k] = torch.empty(t.shape if whole else shape, dtype=t.dtype, device="meta")
    del first, shards
    check_state_dict(sd, args, str(d))
    ckpt = Checkpoint("meta", args, sd, path=d)
    find_tokenizer_files(ckpt)
    return ckpt
