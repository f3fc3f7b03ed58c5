"""Seeded mutations of tiny checkpoints and tokenizer files, for tests/test_fuzz_inputs.py.

``build_bases(root)`` writes one small, valid instance of every input SimpleLlama reads: Meta dirs
(1 and 2 shards, with a Llama 3 style tiktoken ``tokenizer.model``), Hugging Face dirs (one file,
and two files with ``model.safetensors.index.json``; byte-level ``tokenizer.json`` + config with a
chat template), GGUF files (F32 and Q8_0), and the tokenizer files alone (tiktoken,
tokenizer.json, SentencePiece). ``make_case(bases, root, i, seed)`` copies one of them and applies
one mutation chosen by ``random.Random`` from the seed: truncation, byte flips, wrong JSON types
and values, wrong tensor dtypes/shapes/values, inconsistent shards, path tricks (``..``, absolute
paths, symlinks out, FIFOs, directories), huge sizes. A case is ``{"id", "op", "path", "what"}``;
``fuzz_worker.py`` runs the op.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simplellama.checkpoint import load_checkpoint, save_hf
from simplellama.tokenizer.rules import bytes_to_unicode
from tests.ckpt_factory import random_state_dict, tiny_args, write_gguf, write_meta

__all__ = ["build_bases", "make_case", "BASES"]

VOCAB = 520  # the model's vocabulary: room for each base tokenizer (tiktoken: 264 + 256 specials)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _merges(n: int) -> list[tuple[bytes, bytes]]:
    """A few byte-pair merges of an English-ish text, learnt the plain way (most frequent pair)."""
    words = [list(w.encode()) for w in ("the then there this that with what when where " * 4).split()]
    seqs, out = [[bytes([b]) for b in w] for w in words], []
    for _ in range(n):
        counts: dict[tuple[bytes, bytes], int] = {}
        for s in seqs:
            for pair in zip(s, s[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=counts.get)
        out.append(best)
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == best:
                    s[i : i + 2] = [s[i] + s[i + 1]]
                i += 1
    return out


def _tiktoken_file(path: Path) -> None:
    tokens = [bytes([b]) for b in range(256)] + [a + b for a, b in _merges(8)]
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(tokens)))


def _tokenizer_json(d: Path) -> None:
    enc = bytes_to_unicode()
    spell = lambda b: "".join(enc[x] for x in b)  # noqa: E731
    merges = _merges(8)
    vocab = {spell(bytes([b])): b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(spell(a + b), len(vocab))
    added = [{"id": len(vocab) + i, "content": t, "special": True} for i, t in enumerate(SPECIALS)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    spec = {
        "version": "1.0", "added_tokens": added, "normalizer": None, "pre_tokenizer": byte_level,
        "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "vocab": vocab, "merges": [f"{spell(a)} {spell(b)}" for a, b in merges]},
    }  # fmt: skip
    (d / "tokenizer.json").write_text(json.dumps(spec))
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": TEMPLATE}
    (d / "tokenizer_config.json").write_text(json.dumps(config))


def _spm_file(d: Path) -> Path:
    import sentencepiece

    (d / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    sentencepiece.SentencePieceTrainer.train(
        input=str(d / "text.txt"), model_prefix=str(d / "spm"), vocab_size=60, model_type="bpe",
        byte_fallback=False, character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    return d / "spm.model"


def build_bases(root: Path) -> dict[str, Path]:
    """One valid instance of each input kind under ``root``; name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    args = tiny_args(vocab_size=VOCAB)
    sd = random_state_dict(args, seed=0)
    bases = {}
    for n in (1, 2):
        d = bases[f"meta{n}"] = root / f"meta{n}"
        write_meta(d, args, n_shards=n, sd=sd)
        _tiktoken_file(d / "tokenizer.model")
    hf = bases["hf1"] = root / "hf1"
    ckpt = load_checkpoint(bases["meta1"], with_tokenizer=False)
    save_hf(ckpt, hf)
    shutil.rmtree(hf / "original")  # its tokenizer.model would be preferred: test tokenizer.json here
    _tokenizer_json(hf)
    shard = bases["hf2"] = root / "hf2"  # two files + index, as save_pretrained(max_shard_size) writes
    shutil.copytree(hf, shard)
    (shard / "model.safetensors").unlink()
    from safetensors.torch import load_file, save_file

    tensors = load_file(hf / "model.safetensors")
    names, weight_map = sorted(tensors), {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, shard / fname, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, fname)
    (shard / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    bases["gguf_f32"] = write_gguf(root / "f32.gguf", args, sd)
    bases["gguf_q8"] = write_gguf(root / "q8.gguf", args, sd, default_qtype="Q8_0")
    tok = root / "tokenizers"
    tok.mkdir()
    _tiktoken_file(tok / "tiktoken.model")
    bases["tiktoken"] = tok / "tiktoken.model"
    _tokenizer_json(tok)
    bases["tokenizer_json"] = tok / "tokenizer.json"
    bases["spm"] = _spm_file(tok)
    (root / "outside.bin").write_bytes(b"secret: a file outside every checkpoint\n")
    return bases


BASES = ("meta1", "meta2", "hf1", "hf2", "gguf_f32", "gguf_q8", "tiktoken", "tokenizer_json", "spm")

# ----------------------------------------------------------------------------------- mutations

_HUGE = [2**31 - 1, 2**40, 10**30, 2**63]
_WRONG = ["64", "abc", "", [], [64], {}, {"a": 1}, None, True, False, 0, -1, -(2**40), 0.5, 64.5, 1e308,
          float("nan"), float("inf"), float("-inf")]  # fmt: skip


def _bad_value(rng: random.Random) -> Any:
    return rng.choice(_WRONG + _HUGE + [rng.randint(-5, 5) * 64, rng.random() * 1e6])


def _json_dump(value: Any) -> str:
    return json.dumps(value, allow_nan=True)  # NaN / Infinity: what a careless writer produces


def _mutate_json(rng: random.Random, path: Path, keys: list[str] | None = None) -> str:
    """Wrong types/values for a key (or a nested key), deletion, bad documents, bad bytes."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, RecursionError):  # already broken by an earlier mutation
        return _mutate_bytes(rng, path)
    kind = rng.choice(["value", "value", "value", "delete", "unknown", "document", "bytes", "huge"])
    if kind in ("value", "huge", "delete") and isinstance(data, dict) and data:
        key = rng.choice(keys or list(data))
        if kind == "delete":
            data.pop(key, None)
        else:
            data[key] = rng.choice(_HUGE) if kind == "huge" else _bad_value(rng)
        path.write_text(_json_dump(data))
        return f"{path.name}: {kind} {key}={data.get(key)!r:.40}"
    if kind == "unknown" and isinstance(data, dict):
        data[f"unknown_{rng.randint(0, 99)}"] = _bad_value(rng)
        path.write_text(_json_dump(data))
        return f"{path.name}: unknown key"
    if kind == "document":
        doc = rng.choice(["", "   ", "[]", "null", '"text"', "42", "{", '{"a": }', "[" * 100_000 + "]" * 100_000,
                          '{"a": NaN}', "\ufeff{}", "{}"])  # fmt: skip
        path.write_text(doc)
        return f"{path.name}: document {doc[:20]!r}"
    return _mutate_bytes(rng, path)


def _mutate_bytes(rng: random.Random, path: Path) -> str:
    data = bytearray(path.read_bytes())
    kind = rng.choice(["truncate", "flip", "flip", "zero", "append", "empty", "html", "nonutf8"])
    if kind == "truncate" and data:
        del data[rng.randrange(len(data)) :]
    elif kind == "flip" and data:
        head = rng.random() < 0.5  # headers hold the structure: flip there half the time
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(min(len(data), 4096) if head else len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "zero" and data:
        i = rng.randrange(len(data))
        data[i : i + rng.randint(1, 256)] = bytes(len(data[i : i + 256]))[: rng.randint(1, 256)]
    elif kind == "append":
        data += rng.randbytes(rng.randint(1, 512))
    elif kind == "empty":
        data = bytearray()
    elif kind == "html":
        data = bytearray(b"<!DOCTYPE html><html><body>403 Forbidden: link expired</body></html>\n")
    else:
        data[rng.randrange(len(data) or 1) : 0] = b"\xff\xfe\xc3("
    path.write_bytes(bytes(data))
    return f"{path.name}: bytes {kind}"


def _path_trick(rng: random.Random, path: Path, outside: Path) -> str:
    """Replace ``path`` by something that is not its regular file."""
    kind = rng.choice(["fifo", "dir", "symlink_out", "dangling", "loop", "devzero"])
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "symlink_out":
        path.symlink_to(outside)
    elif kind == "dangling":
        path.symlink_to(path.parent / "no-such-file")
    elif kind == "loop":
        path.symlink_to(path)
    else:
        path.symlink_to("/dev/zero")
    return f"{path.name}: path {kind}"


def _resave(path: Path, rng: random.Random) -> str:
    """Rewrite a .pth with one wrong tensor: dtype, values, shape, key or value type."""
    sd = torch.load(path, weights_only=True)
    key = rng.choice(sorted(sd))
    kind = rng.choice(["int", "bool", "nan", "inf", "shape", "rank", "drop", "extra", "scalar", "half"])
    t = sd[key]
    if kind == "int":
        sd[key] = t.to(rng.choice([torch.int64, torch.int8, torch.int32]))
    elif kind == "bool":
        sd[key] = t > 0
    elif kind in ("nan", "inf"):
        t = t.clone()
        t.view(-1)[rng.randrange(t.numel())] = float(kind)
        sd[key] = t
    elif kind == "shape":
        sd[key] = t.reshape(-1)[: max(1, t.numel() // 2)] if t.ndim == 1 else t[: max(1, t.shape[0] // 2)]
    elif kind == "rank":
        sd[key] = t.unsqueeze(0)
    elif kind == "drop":
        del sd[key]
    elif kind == "extra":
        sd["layers.99.attention.wq.weight"] = t
    elif kind == "scalar":
        sd[key] = 3
    else:
        sd[key] = t.half()
    torch.save(sd, path)
    return f"{path.name}: tensor {kind} {key}"


def _mutate_index(rng: random.Random, d: Path, outside: Path) -> str:
    path = d / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    wm = index["weight_map"]
    key = rng.choice(sorted(wm))
    kind = rng.choice(["dotdot", "absolute", "outside_abs", "fifo", "dir", "nonstring", "list", "missing", "empty"])
    if kind == "dotdot":
        wm[key] = "../" * rng.randint(1, 4) + "outside.bin"
    elif kind in ("absolute", "outside_abs"):
        wm[key] = str(outside) if kind == "outside_abs" else "/etc/hostname"
    elif kind == "fifo":
        os.mkfifo(d / "pipe.safetensors")
        wm[key] = "pipe.safetensors"
    elif kind == "dir":
        (d / "sub.safetensors").mkdir()
        wm[key] = "sub.safetensors"
    elif kind == "nonstring":
        wm[key] = rng.choice([1, None, ["x"], {"f": "x"}])
    elif kind == "list":
        index["weight_map"] = list(wm.values())
    elif kind == "missing":
        wm[key] = "model-00009-of-00009.safetensors"
    else:
        index["weight_map"] = {}
    path.write_text(json.dumps(index))
    return f"index: {kind} {key}"


def _rewrite_gguf(rng: random.Random, path: Path) -> str:
    """Write the GGUF again with one metadata value or tensor changed."""
    import gguf

    from simplellama.errors import CheckpointError
    from simplellama.gguf_reader import open_gguf

    reader = open_gguf(path, CheckpointError)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    key = rng.choice(sorted(fields))
    kind = rng.choice(["value", "value", "drop", "tensor_int", "tensor_nan", "tensor_1d", "tensor_drop"])
    w = gguf.GGUFWriter(str(path) + ".new", "llama")
    for k, f in fields.items():
        if k == "general.architecture":
            continue
        value, vtype = f.contents(), f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        if k == key and kind == "drop":
            continue
        if k == key and kind == "value":
            value = rng.choice(["64", "abc", "", [64], [1.5, 2.5], ["a", "b"], -1, 0, 2**40, 2**63, 1e30, True,
                                float("nan"), float("inf"), 0.5])  # fmt: skip
            if isinstance(value, list):
                sub = {int: gguf.GGUFValueType.INT32, float: gguf.GGUFValueType.FLOAT32}.get(type(value[0]))
                vtype, sub = gguf.GGUFValueType.ARRAY, sub or gguf.GGUFValueType.STRING
            elif isinstance(value, bool):
                vtype = gguf.GGUFValueType.BOOL
            elif isinstance(value, str):
                vtype = gguf.GGUFValueType.STRING
            elif isinstance(value, float):
                vtype = gguf.GGUFValueType.FLOAT32
            elif isinstance(value, int):
                vtype = gguf.GGUFValueType.UINT32 if 0 <= value < 2**32 else gguf.GGUFValueType.UINT64
                vtype = gguf.GGUFValueType.INT64 if value < 0 else vtype
            else:
                vtype = gguf.GGUFValueType.STRING
                value = "null"
        w.add_key_value(k, value, vtype, sub_type=sub)
    tensors = [t for t in reader.tensors]
    victim = rng.choice(tensors).name
    for t in tensors:
        arr = np.array(t.data)
        if t.name == victim and kind == "tensor_drop":
            continue
        if t.name == victim and kind == "tensor_int":
            w.add_tensor(
                t.name, np.arange(int(t.n_elements), dtype=np.int32).reshape(tuple(reversed(t.shape.tolist())))
            )
            continue
        if t.name == victim and kind == "tensor_nan" and t.tensor_type == gguf.GGMLQuantizationType.F32:
            arr = arr.copy()
            arr.reshape(-1)[rng.randrange(arr.size)] = np.nan
        if t.name == victim and kind == "tensor_1d" and t.tensor_type == gguf.GGMLQuantizationType.F32:
            arr = arr.reshape(-1)
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(t.name, arr)
        else:
            w.add_tensor(t.name, arr, raw_shape=arr.shape, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    del reader
    os.replace(str(path) + ".new", path)
    return f"gguf: {kind} {key if kind in ('value', 'drop') else victim}"


def _mutate_safetensors_header(rng: random.Random, path: Path) -> str:
    """Rewrite one tensor's entry in a safetensors JSON header: dtype, shape or offsets."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    name = rng.choice(sorted(k for k in header if k != "__metadata__"))
    kind = rng.choice(["dtype", "shape", "huge_shape", "offsets", "huge_offsets"])
    entry = header[name]
    if kind == "dtype":
        entry["dtype"] = rng.choice(["I64", "I8", "BOOL", "U8", "F8_E4M3", "F64", "XYZ"])
    elif kind == "shape":
        entry["shape"] = rng.choice([[], [0], entry["shape"][::-1], [*entry["shape"], 1], [-1, 64]])
    elif kind == "huge_shape":
        entry["shape"] = [2**40, 64]
    elif kind == "offsets":
        a, b = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[b, a], [a, a], [a + 4, b + 4], [0, b]])
    else:
        entry["data_offsets"] = [0, 2**62]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])
    return f"{path.name}: header {kind} {name}"


def _huge_gguf_counts(rng: random.Random, path: Path) -> str:
    """Overwrite the tensor/kv counts or the first array length with a huge number."""
    data = bytearray(path.read_bytes())
    at = rng.choice([8, 16])  # GGUF header: magic, version (u32), tensor count (u64), kv count (u64)
    data[at : at + 8] = rng.choice([2**63 - 1, 2**40, 10**12]).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    return f"gguf: huge count at {at}"


def make_case(bases: dict[str, Path], root: Path, i: int, seed: int) -> dict:
    """Case ``i``: a mutated copy of one base under ``root/case_i``, and the operation to run."""
    rng = random.Random(seed * 1_000_003 + i)
    name = BASES[i % len(BASES)]
    case = root / f"case_{i}"
    case.mkdir(parents=True)
    src = bases[name]
    dst = case / src.name
    (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
    outside = root.parent / "bases" / "outside.bin"
    op = "load"
    if name.startswith("meta"):
        target = rng.choice(["params", "params", "pth", "pth", "tensors", "path", "tokenizer", "shards", "huge"])
        pth = dst / rng.choice(sorted(p.name for p in dst.glob("consolidated.*.pth")))
        if target == "params":
            what = _mutate_json(rng, dst / "params.json")
        elif target == "huge":
            params = json.loads((dst / "params.json").read_text())
            field = rng.choice(["n_layers", "dim", "vocab_size", "max_seq_len", "max_batch_size", "ffn_hidden_dim"])
            params[field] = rng.choice(_HUGE[:2] + [10**6, 2**20])
            (dst / "params.json").write_text(json.dumps(params))
            what = f"params.json: huge {field}"
        elif target == "pth":
            what = _mutate_bytes(rng, pth)
        elif target in ("tensors", "shards"):
            what = _resave(pth, rng)
        elif target == "path":
            what = _path_trick(rng, rng.choice([pth, dst / "params.json", dst / "tokenizer.model"]), outside)
        else:
            what = _mutate_tiktoken(rng, dst / "tokenizer.model")
        if rng.random() < 0.2 and (dst / "params.json").is_file() and not (dst / "params.json").is_symlink():
            what += " + " + _mutate_json(rng, dst / "params.json")  # two things wrong at once
        op = rng.choice(["load", "load", "header", "cli_info", "cli_generate"])
    elif name.startswith("hf"):
        files = sorted(p.name for p in dst.glob("*.safetensors"))
        target = rng.choice(["config", "config", "safetensors", "tokenizer", "path"] + ["index"] * (name == "hf2") * 2)
        if target == "config":
            keys = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
                    "intermediate_size", "rms_norm_eps", "rope_theta", "tie_word_embeddings", "rope_scaling",
                    "architectures", "model_type", "head_dim", "max_position_embeddings"]  # fmt: skip
            what = _mutate_json(rng, dst / "config.json", keys)
        elif target == "safetensors":
            f = dst / rng.choice(files)
            what = _mutate_safetensors_header(rng, f) if rng.random() < 0.5 else _mutate_bytes(rng, f)
        elif target == "tokenizer":
            what = _mutate_json(rng, dst / rng.choice(["tokenizer.json", "tokenizer_config.json"]))
        elif target == "index":
            what = _mutate_index(rng, dst, outside)
        else:
            victim = rng.choice([*files, "config.json", "tokenizer.json", "chat_template.jinja"])
            what = _path_trick(rng, dst / victim, outside)
        op = rng.choice(["load", "load", "header", "cli_info", "cli_generate"])
    elif name.startswith("gguf"):
        target = rng.choice(["rewrite", "rewrite", "rewrite", "bytes", "counts"])
        if target == "rewrite":
            what = _rewrite_gguf(rng, dst)
        elif target == "counts":
            what = _huge_gguf_counts(rng, dst)
        else:
            what = _mutate_bytes(rng, dst)
        op = rng.choice(["load", "load", "header", "tokenizer", "cli_generate"])
    elif name == "tiktoken":
        what, op = _mutate_tiktoken(rng, dst), "tokenizer"
    elif name == "tokenizer_json":
        shutil.copyfile(src.with_name("tokenizer_config.json"), case / "tokenizer_config.json")
        target = rng.choice(["tokenizer.json", "tokenizer.json", "tokenizer_config.json"])
        what, op = _mutate_tokenizer_json(rng, case / target), "tokenizer"
    else:
        what, op = _mutate_bytes(rng, dst), "tokenizer"
    return {"id": i, "op": op, "path": str(dst), "root": str(case), "what": what}


def _mutate_tiktoken(rng: random.Random, path: Path) -> str:
    lines = path.read_text().splitlines()
    kind = rng.choice(["dup_rank", "dup_token", "neg_rank", "huge_rank", "drop_byte", "bad_b64", "bytes"])
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    tok_i, rank_i = lines[i].split()
    if kind == "dup_rank":
        lines[i] = f"{tok_i} {lines[j].split()[1]}"
    elif kind == "dup_token":
        lines[i] = f"{lines[j].split()[0]} {rank_i}"
    elif kind == "neg_rank":
        lines[i] = f"{tok_i} -{rng.randint(1, 10)}"
    elif kind == "huge_rank":
        lines[i] = f"{tok_i} {rng.choice(_HUGE)}"
    elif kind == "drop_byte":
        del lines[rng.randrange(256)]
    elif kind == "bad_b64":
        lines[i] = f"%%{tok_i}== {rank_i}"
    else:
        return _mutate_bytes(rng, path)
    path.write_text("\n".join(lines) + "\n")
    return f"{path.name}: tiktoken {kind} line {i + 1}"


def _mutate_tokenizer_json(rng: random.Random, path: Path) -> str:
    if path.name == "tokenizer_config.json" or rng.random() < 0.3:
        return _mutate_json(rng, path)
    spec = json.loads(path.read_text())
    kind = rng.choice(["vocab_id", "vocab_type", "merge", "merges_type", "added", "pre", "model_type", "vocab_empty"])
    vocab = spec["model"]["vocab"]
    token = rng.choice(sorted(vocab))
    if kind == "vocab_id":
        vocab[token] = rng.choice([-1, 2**31, 10**12, len(vocab) + 5, 1.5, True])
    elif kind == "vocab_type":
        spec["model"]["vocab"] = rng.choice([[], "x", None, 3])
    elif kind == "merge":
        spec["model"]["merges"].append(rng.choice(["nospace", 1, ["a"], None, ""]))
    elif kind == "merges_type":
        spec["model"]["merges"] = rng.choice(["a b", 5, {"a": "b"}])
    elif kind == "added":
        spec["added_tokens"][0] = rng.choice([{"id": 2**40, "content": "<x>", "special": True}, {"id": 1}, "x",
                                             {"id": -3, "content": "<y>", "special": True}])  # fmt: skip
    elif kind == "pre":
        bad_split = {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"}
        spec["pre_tokenizer"] = rng.choice([None, [], "ByteLevel", {"type": "Sequence", "pretokenizers": 3}, bad_split])
    elif kind == "model_type":
        spec["model"] = rng.choice([{"type": "WordPiece"}, [], "BPE"])
    else:
        spec["model"]["vocab"] = {}
    path.write_text(_json_dump(spec))
    return f"{path.name}: {kind}"
