"""Hugging Face checkpoints: ``config.json`` + ``*.safetensors`` <-> Meta names and ``ModelArgs``.

Two differences from Meta's layout, both undone by an explicit table here:

* names: ``model.layers.N.self_attn.q_proj.weight`` is Meta's ``layers.N.attention.wq.weight``, etc.
  (the table in ``keys.py``);
* q/k rows: HF's conversion script (``convert_llama_weights_to_hf.py: permute``) reorders each
head's
  rows for the rotate-half form of RoPE; we undo it with ``rope.hf_to_meta_qk`` (``meta_to_hf_qk``
  on save).

Weights are read lazily with ``safetensors.safe_open`` (memory-mapped), one tensor at a time.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from LogRelay import get_relay

from ..config import ModelArgs
from ..errors import CheckpointError, ModelArgsError, RopeError
from ..files import checkpoint_file, read_json
from ..rope import hf_to_meta_qk, meta_to_hf_qk
from .common import (
    Checkpoint,
    TensorSink,
    atomic_dir,
    check_ram,
    check_state_dict,
    check_weight,
    find_tokenizer_files,
    write_tokenizer_files,
)
from .keys import hf_to_meta_name, meta_to_hf_name

__all__ = ["hf_config_to_args", "args_to_hf_config", "load_hf", "save_hf"]

log = get_relay("simplellama.checkpoint")


def hf_config_to_args(
    cfg: dict[str, Any], source: str = "config.json", **overrides: Any
) -> ModelArgs:
    """Translate a Llama ``config.json`` dict into ``ModelArgs`` (``overrides`` win).

    Keys that do not describe the architecture (token ids, dtype, versions, ...) are ignored;
    every key that does is checked for type and range under its own name (``ModelArgs.from_dict``).
    """
    arch = cfg.get("architectures") or []
    arch = arch if isinstance(arch, list) else [arch]
    if cfg.get("model_type") != "llama" and "LlamaForCausalLM" not in arch:
        raise CheckpointError(
            f"{source}: model_type: expected 'llama' (LlamaForCausalLM), found "
            f"{cfg.get('model_type')!r} {arch}"
        )
    for key, ok in (("attention_bias", False), ("mlp_bias", False), ("hidden_act", "silu")):
        if cfg.get(key, ok) != ok:
            raise CheckpointError(f"{source}: {key}: expected {ok!r} (Llama 3), found {cfg[key]!r}")
    # transformers >= 5 writes rope_parameters (theta + scaling in one dict); older files
    # rope_theta/rope_scaling
    rope = cfg.get("rope_parameters") or {}
    if not isinstance(rope, Mapping):
        raise CheckpointError(f"{source}: rope_parameters: expected an object, found {rope!r:.60}")
    rope = dict(rope)
    theta = rope.pop("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", rope.get("type")) else None)
    d = {field: cfg[key] for field, key in _HF_FIELDS.items() if key in cfg}
    d |= {"rope_theta": theta, "n_kv_heads": cfg.get("num_key_value_heads") or d.get("n_heads")}
    d.setdefault("norm_eps", 1e-6)
    d.setdefault("tie_word_embeddings", False)
    missing = [k for f, k in _HF_FIELDS.items() if f not in d]
    if missing:
        raise CheckpointError(f"{source}: missing field {missing[0]!r}")
    if scaling is not None:
        d["rope_scaling"] = scaling
    names = {**_HF_FIELDS, "rope_theta": "rope_theta", "n_kv_heads": "num_key_value_heads"}
    if "rope_theta" in rope:
        names["rope_theta"] = "rope_parameters.rope_theta"
    try:
        args = ModelArgs.from_dict(d, source=source, names=names, **overrides)
    except ModelArgsError as e:
        raise CheckpointError(str(e)) from None
    head_dim = cfg.get("head_dim")
    if head_dim is not None and head_dim != args.head_dim:
        raise CheckpointError(
            f"{source}: head_dim: expected hidden_size/num_attention_heads = {args.head_dim}, "
            f"found {head_dim}"
        )
    return args


# ModelArgs field -> config.json key
_HF_FIELDS = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "vocab_size": "vocab_size",
    "ffn_hidden_dim": "intermediate_size",
    "norm_eps": "rms_norm_eps",
    "tie_word_embeddings": "tie_word_embeddings",
}


def args_to_hf_config(args: ModelArgs, dtype: torch.dtype) -> dict[str, Any]:
    """``config.json`` for ``LlamaForCausalLM`` describing ``args``."""
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.hidden_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads,
        "head_dim": args.head_dim,
        "vocab_size": args.vocab_size,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "max_position_embeddings": max(
            args.max_seq_len, args.rope_original_max_seq_len if args.use_scaled_rope else 0
        ),
        "tie_word_embeddings": args.tie_word_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    if args.use_scaled_rope:
        cfg["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": args.rope_scaling_factor,
            "low_freq_factor": args.rope_low_freq_factor,
            "high_freq_factor": args.rope_high_freq_factor,
            "original_max_position_embeddings": args.rope_original_max_seq_len,
        }
    return cfg


def _weight_files(d: Path) -> list[Path]:
    """The safetensors files of ``d``: those its index names (each confined to ``d``), else its
    one ``*.safetensors``."""
    if os.path.lexists(d / INDEX):
        index = checkpoint_file(d, INDEX, CheckpointError)
        weight_map = read_json(index, CheckpointError).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            found = f"{weight_map!r:.60}"
            raise CheckpointError(
                f"{index}: expected a non-empty 'weight_map' object, found {found}"
            )
        files = {}
        for key, name in weight_map.items():
            if not isinstance(name, str) or name not in files:  # each file once; others refused
                where = f"{index}: weight_map[{key!r:.80}]"
                files[name] = checkpoint_file(d, name, CheckpointError, where)
        return sorted(set(files.values()))
    files = sorted(d.glob("*.safetensors"))
    if len(files) > 1:
        raise CheckpointError(
            f"{d}: {len(files)} .safetensors files but no model.safetensors.index.json"
        )
    return [checkpoint_file(d, f.name, CheckpointError) for f in files]


INDEX = "model.safetensors.index.json"


def _read_config(d: Path, overrides: dict[str, Any]) -> ModelArgs:
    """``ModelArgs`` from an HF directory's ``config.json``."""
    cfg_path = checkpoint_file(d, "config.json", CheckpointError)
    return hf_config_to_args(read_json(cfg_path, CheckpointError), str(cfg_path), **overrides)


def load_hf(
    d: Path,
    dtype: torch.dtype | None,
    overrides: dict[str, Any],
    cache_device: torch.device | str | None = None,
    sink: TensorSink | None = None,
) -> Checkpoint:
    """Read an HF Llama directory into a Meta-named :class:`Checkpoint` (``cache_device``: see
    ``check_ram``; ``sink``: gets each checked weight, q/k in Meta order: ``TensorSink``)."""
    args = _read_config(d, overrides)
    files = _weight_files(d)
    itemsize = 2 if dtype is None else dtype.itemsize  # HF stores bfloat16 (or float16)
    n_bytes = sum(f.stat().st_size for f in files)
    if sink is None:
        check_ram(str(d), n_bytes * itemsize // 2, args, cache_device, itemsize)
    else:
        sink.check_ram(str(d), args, cache_device, itemsize)
    sd: dict[str, torch.Tensor] = {}
    with log.busy(f"loading {len(files)} safetensors file(s)", total=len(files)) as bar:
        for f in files:
            try:
                for name, get in _tensors(f, one_map_each=sink is not None):
                    meta = hf_to_meta_name(name)
                    if meta is None:
                        if name.endswith("rotary_emb.inv_freq"):  # old transformers saved it
                            continue
                        raise CheckpointError(f"{f}: unexpected key {name!r} (not a Llama weight)")
                    t = check_weight(get(), name, str(f))
                    if meta.endswith("attention.wq.weight"):
                        t = hf_to_meta_qk(t, args.n_heads)
                    elif meta.endswith("attention.wk.weight"):
                        t = hf_to_meta_qk(t, args.n_kv_heads)
                    if sink is not None:
                        sd[meta] = sink(meta, t)
                    else:
                        sd[meta] = t if dtype is None else t.to(dtype)
            except SafetensorError as e:
                raise CheckpointError(f"{f}: truncated or corrupt safetensors file: {e}") from None
            except RopeError as e:  # hf_to_meta_qk's shape check
                raise CheckpointError(f"{f}: {e}") from None
            bar.update()
    check_state_dict(sd, args, str(d))
    ckpt = Checkpoint("hf", args, sd, path=d)
    find_tokenizer_files(ckpt)
    return ckpt


def _tensors(f: Path, one_map_each: bool) -> Iterator[tuple[str, Callable[[], torch.Tensor]]]:
    """(name, reader of its tensor) for each tensor of a safetensors file, in the file's order.

    ``one_map_each``: map the file anew for each tensor (quantized loading): the pages a tensor
    is read from stay resident while the file is mapped, so one map for the whole file would hold
    all of it by the last tensor.
    """
    with safe_open(f, framework="pt") as st:
        names = list(st.keys())  # safe_open is not a dict
        if not one_map_each:
            for name in names:
                yield name, functools.partial(st.get_tensor, name)
            return
    for name in names:
        with safe_open(f, framework="pt") as st:
            yield name, functools.partial(st.get_tensor, name)


def save_hf(ckpt: Checkpoint, dst: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (q/k rows in HF order) + tokenizer files."""
    args = ckpt.args
    out: dict[str, torch.Tensor] = {}
    for name, t in ckpt.state_dict.items():
        if name == "output.weight" and args.tie_word_embeddings:
            continue  # transformers ties lm_head to embed_tokens itself
        if name.endswith("attention.wq.weight"):
            t = meta_to_hf_qk(t, args.n_heads)
        elif name.endswith("attention.wk.weight"):
            t = meta_to_hf_qk(t, args.n_kv_heads)
        out[meta_to_hf_name(name)] = t.contiguous()
    dtype = ckpt.state_dict["tok_embeddings.weight"].dtype
    with atomic_dir(dst) as tmp:
        (tmp / "config.json").write_text(json.dumps(args_to_hf_config(args, dtype), indent=2))
        with log.busy("writing model.safetensors", total=1) as bar:
            save_file(out, tmp / "model.safetensors", metadata={"format": "pt"})
            bar.update()
        write_tokenizer_files(ckpt, tmp, model_name="original/tokenizer.model")
    log.info("wrote Hugging Face checkpoint %s", dst)
    return Path(dst)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
}


def read_hf_header(d: Path, overrides: dict[str, Any]) -> Checkpoint:
    """An HF directory's args and weights as ``meta``-device tensors, from the safetensors
    headers."""
    args = _read_config(d, overrides)
    sd: dict[str, torch.Tensor] = {}
    for f in _weight_files(d):
        try:
            with safe_open(f, framework="pt") as st:
                for name in st.keys():  # safe_open is not a dict
                    meta = hf_to_meta_name(name)
                    if meta is not None:
                        piece = st.get_slice(name)
                        dtype = _SAFETENSORS_DTYPES.get(piece.get_dtype())
                        if dtype is None:
                            found = f"{name}: expected floating-point weights, found"
                            raise CheckpointError(f"{f}: {found} {piece.get_dtype()}")
                        sd[meta] = torch.empty(piece.get_shape(), dtype=dtype, device="meta")
        except SafetensorError as e:
            raise CheckpointError(f"{f}: truncated or corrupt safetensors file: {e}") from None
    check_state_dict(sd, args, str(d))
    ckpt = Checkpoint("hf", args, sd, path=d)
    find_tokenizer_files(ckpt)
    return ckpt
