"""Every malformed input ends in one clear line (issue 19), family by family.

Config values of the wrong type or range, JSON documents that are not objects, sizes that cannot
fit, paths that leave the checkpoint, corrupt or inconsistent weight files, wrong weight dtypes,
non-finite weights and logits, and tokenizer files whose ranks or sizes are wrong: each is a
``SimpleLlamaError`` whose message is one line naming the file and the field (or key), and the
command line exits 1 with that line. tests/test_fuzz_inputs.py throws random mutations at the same
loaders; these tests pin one case of each family with its exact message.
"""

from __future__ import annotations

import json
import os
import re
from importlib.util import find_spec
from pathlib import Path

import gguf
import pytest
import torch

from simplellama.checkpoint import load_checkpoint, load_for_inference, read_header
from simplellama.cli import main
from simplellama.config import ModelArgs, preset
from simplellama.errors import (
    CheckpointError,
    GenerationError,
    InsufficientMemoryError,
    ModelArgsError,
    ParallelError,
    SimpleLlamaError,
    TokenizerError,
)
from simplellama.generation import Llama
from simplellama.model import Transformer
from simplellama.quantize import QuantizeError
from simplellama.tokenizer import Tokenizer, load_tokenizer
from tests.ckpt_factory import random_state_dict, tiny_args, write_gguf, write_meta
from tests.fuzz_inputs import VOCAB, _tiktoken_file, _tokenizer_json

LLAMA3_TOKENIZER = Path(find_spec("llama_models").submodule_search_locations[0]) / "llama3" / "tokenizer.model"


def _raises(error: type, pattern: str, fn, *args, **kwargs) -> str:
    """``fn(*args)`` raises ``error`` with a one-line message matching ``pattern``; the message."""
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert re.search(pattern, msg), f"{pattern!r} not in {msg!r}"
    return msg


@pytest.fixture
def meta(tmp_path) -> Path:
    d = tmp_path / "meta"
    write_meta(d, tiny_args(vocab_size=VOCAB), 1)
    _tiktoken_file(d / "tokenizer.model")
    return d


def _params(d: Path, **changes) -> Path:
    p = d / "params.json"
    p.write_text(json.dumps(json.loads(p.read_text()) | changes))
    return p


# ---- config values: type and range, whatever the source --------------------------------------------------


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("rope_theta", "abc", r"rope_theta: expected a finite number, found 'abc'"),
        ("rope_theta", None, r"rope_theta: expected a finite number, found None"),
        ("rope_theta", [1], r"rope_theta: expected a finite number, found \[1\]"),
        ("ffn_dim_multiplier", "1.3", r"ffn_dim_multiplier: expected a finite number \(or null\), found '1.3'"),
        ("multiple_of", 96.5, r"multiple_of: expected a positive integer, found 96.5"),
        ("n_layers", True, r"n_layers: expected a positive integer, found True"),  # bools are not ints
        ("dim", 2**40, r"dim: expected a positive integer <= 2147483647, found 1099511627776"),
        ("tie_word_embeddings", "yes", r"tie_word_embeddings: expected true or false, found 'yes'"),
        ("rope_scaling", {"rope_type": "llama3", "original_max_position_embeddings": 0},
         r"rope_scaling\.original_max_position_embeddings: expected a positive integer, found 0"),
    ],
)  # fmt: skip
def test_params_json_values_named(meta, field, value, expected):
    p = _params(meta, **{field: value})
    _raises(CheckpointError, rf"^{re.escape(str(p))}: {expected}$", load_checkpoint, meta)


@pytest.mark.parametrize("literal", ["Infinity", "NaN", "-Infinity"])
def test_json_nan_and_infinity_refused(meta, literal):
    p = meta / "params.json"
    p.write_text(p.read_text()[:-1] + f', "norm_eps": {literal}}}')
    _raises(
        CheckpointError,
        rf"^{re.escape(str(p))}: not valid JSON \({literal} is not a JSON number\)",
        load_checkpoint,
        meta,
    )
    with pytest.raises(ModelArgsError, match="norm_eps: expected a finite number, found inf"):
        ModelArgs(norm_eps=float("inf"))


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"[64, 4]", "expected a JSON object, found array"),
        (b'"dim"', "expected a JSON object, found string"),
        (b"null", "expected a JSON object, found null"),
        (b"", "empty file, expected a JSON object"),
        (b'{"dim": "\xff"}', r"not UTF-8 text \(byte 0xff at offset 9\)"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply to parse"),
        (b'{"dim": 64,', r"not valid JSON \(Expecting property name .* at line 1 column 12\)"),
    ],
)
def test_json_documents_named(meta, content, expected):
    (meta / "params.json").write_bytes(content)
    _raises(CheckpointError, rf"^{re.escape(str(meta / 'params.json'))}: {expected}", load_checkpoint, meta)


def _hf(tmp_path: Path, **config) -> Path:
    from simplellama.checkpoint import save_hf

    d = tmp_path / "hf"
    save_hf(load_checkpoint(_meta_only(tmp_path), with_tokenizer=False), d)
    if config:
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps(cfg | config))
    return d


def _meta_only(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    if not d.exists():
        write_meta(d, tiny_args(), 1)
    return d


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("rope_theta", "abc", "rope_theta: expected a finite number, found 'abc'"),
        ("hidden_size", "64", "hidden_size: expected a positive integer, found '64'"),
        ("tie_word_embeddings", "yes", "tie_word_embeddings: expected true or false, found 'yes'"),
        ("rms_norm_eps", 0, r"rms_norm_eps: expected > 0, found 0"),
        ("rope_parameters", [1], r"rope_parameters: expected an object, found \[1\]"),
    ],
)
def test_config_json_values_named_by_their_hf_key(tmp_path, key, value, expected):
    d = _hf(tmp_path, **{key: value})
    _raises(CheckpointError, rf"^{re.escape(str(d / 'config.json'))}: {expected}$", load_checkpoint, d)


def test_config_json_unknown_harmless_keys_ignored(tmp_path):
    d = _hf(tmp_path, pretraining_tp=1, transformers_version=[4, 46], my_note={"x": None})
    assert load_checkpoint(d).args.dim == 64


@pytest.mark.parametrize(
    "key, value, vtype, expected",
    [
        ("llama.block_count", "two", gguf.GGUFValueType.STRING,
         "llama.block_count: expected a positive integer, found 'two'"),
        ("llama.embedding_length", 64.0, gguf.GGUFValueType.FLOAT32,
         "llama.embedding_length: expected a positive integer, found 64.0"),
        ("llama.rope.freq_base", float("nan"), gguf.GGUFValueType.FLOAT32,
         "llama.rope.freq_base: expected a finite number, found nan"),
        ("llama.attention.layer_norm_rms_epsilon", True, gguf.GGUFValueType.BOOL,
         "llama.attention.layer_norm_rms_epsilon: expected a finite number, found True"),
    ],
)  # fmt: skip
def test_gguf_metadata_values_named_by_their_key(tmp_path, key, value, vtype, expected):
    args = tiny_args()
    path = write_gguf(tmp_path / "m.gguf", args, random_state_dict(args), metadata={key: (value, vtype)})
    _raises(CheckpointError, rf"^{re.escape(str(path))}: {expected}$", load_checkpoint, path)


# ---- sizes that cannot fit: refused before allocating, with the numbers ----------------------------------


def test_transformer_from_a_huge_config_refused():
    msg = _raises(InsufficientMemoryError, r"^Transformer\(args\): needs 1511\.9 GiB \(weights 1511\.9 GiB \+ RoPE",
                  Transformer, preset("llama3.1-405b"))  # fmt: skip
    assert re.search(r"GiB available; lower max_seq_len / max_batch_size, or load the weights quantized", msg)
    Transformer(preset("llama3.1-405b"), device="meta")  # the loaders' meta model allocates nothing


def test_setup_cache_refused_with_numbers():
    model = Transformer(tiny_args())
    _raises(InsufficientMemoryError, r"^setup_cache\(100000, 1000000\): needs \d+\.\d GiB \(KV cache",
            model.setup_cache, 100_000, 1_000_000)  # fmt: skip
    assert model.setup_cache(2, 8) == 2 * 2 * 2 * 8 * 2 * 16 * 4  # K and V, 2 layers, B, S, K, Dh, fp32


@pytest.mark.parametrize("changes", [{"n_layers": 10**6}, {"max_seq_len": 2**31 - 1}, {"max_batch_size": 10**7}])
def test_loading_a_huge_config_refused_before_reading_weights(meta, changes):
    _params(meta, **changes)
    _raises(InsufficientMemoryError, rf"^{re.escape(str(meta))}: needs .* GiB available; lower max_seq_len",
            load_for_inference, meta)  # fmt: skip


def test_llama_build_with_a_huge_cache_refused(meta):
    _raises(InsufficientMemoryError, rf"^{re.escape(str(meta))}: needs \d+\.\d GiB \(weights .* \+ KV cache",
            Llama.build, meta, max_seq_len=2**30, max_batch_size=64)  # fmt: skip


# ---- paths from inside a checkpoint -----------------------------------------------------------------------


@pytest.fixture
def hf2(tmp_path) -> Path:
    """An HF dir whose weights are split over two files named by model.safetensors.index.json."""
    from safetensors.torch import load_file, save_file

    d = _hf(tmp_path)
    tensors = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    names, weight_map = sorted(tensors), {}
    for i, part in enumerate((names[:10], names[10:])):
        save_file({k: tensors[k] for k in part}, d / f"w{i}.safetensors", metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, f"w{i}.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return d


def _point(d: Path, target) -> str:
    index = d / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    key = sorted(data["weight_map"])[0]
    data["weight_map"][key] = target
    index.write_text(json.dumps(data))
    return re.escape(f"{index}: weight_map[{key!r}]")


@pytest.mark.timeout(60)  # a FIFO that were opened would block forever
@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: "../outside.safetensors", r": '\.\./outside\.safetensors' leaves the checkpoint directory"),
        (lambda d: str(d.parent / "outside.safetensors"), r": '/.*outside\.safetensors' leaves the checkpoint"),
        (lambda d: (d / "link.safetensors").symlink_to(d.parent / "outside.safetensors") or "link.safetensors",
         r": 'link\.safetensors' resolves to .*outside\.safetensors, outside the checkpoint directory"),
        (lambda d: os.mkfifo(d / "pipe.safetensors") or "pipe.safetensors",
         r": 'pipe\.safetensors': expected a regular file, found a named pipe \(FIFO\)"),
        (lambda d: (d / "dir.safetensors").mkdir() or "dir.safetensors",
         r": 'dir\.safetensors': expected a regular file, found a directory"),
        (lambda d: 7, r": expected a file name \(a non-empty string\), found 7"),
        (lambda d: "nowhere.safetensors", r": 'nowhere\.safetensors' is missing from"),
    ],
    ids=["dotdot", "absolute", "symlink-out", "fifo", "directory", "not-a-string", "missing"],
)  # fmt: skip
def test_index_paths_confined_to_the_checkpoint(hf2, make, expected):
    (hf2.parent / "outside.safetensors").write_bytes((hf2 / "w0.safetensors").read_bytes())  # a valid file
    where = _point(hf2, make(hf2))
    for fn in (load_checkpoint, read_header):
        _raises(CheckpointError, f"^{where}{expected}", fn, hf2)


def test_index_weight_map_must_be_an_object(hf2):
    (hf2 / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["w0.safetensors"]}))
    _raises(
        CheckpointError, r"index\.json: expected a non-empty 'weight_map' object, found \['w0", load_checkpoint, hf2
    )


def test_hub_cache_snapshot_symlinks_into_blobs_are_followed(hf2, tmp_path):
    """huggingface_hub's own layout: snapshots/<rev>/<file> -> ../../blobs/<hash>."""
    repo = tmp_path / "models--x--tiny"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in hf2.iterdir():
        (repo / "blobs" / f"sha-{f.name}").write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(Path("../../blobs") / f"sha-{f.name}")
    assert torch.equal(load_checkpoint(snap).state_dict["norm.weight"], load_checkpoint(hf2).state_dict["norm.weight"])


@pytest.mark.timeout(60)
def test_fifo_and_directory_in_place_of_a_weight_file(meta, tmp_path):
    shard = meta / "consolidated.00.pth"
    shard.unlink()
    os.mkfifo(shard)
    _raises(
        CheckpointError,
        rf"^{re.escape(str(shard))}: expected a regular file, found a named pipe",
        load_checkpoint,
        meta,
    )
    shard.unlink()
    shard.mkdir()
    _raises(
        CheckpointError, rf"^{re.escape(str(shard))}: expected a regular file, found a directory", load_checkpoint, meta
    )
    os.mkfifo(tmp_path / "model.gguf")
    _raises(
        CheckpointError,
        r"model\.gguf: expected a regular file, found a named pipe",
        load_checkpoint,
        tmp_path / "model.gguf",
    )


# ---- corrupt files, inconsistent shards, wrong dtypes -----------------------------------------------------


def test_flipped_bytes_in_the_pickle(meta):
    shard = meta / "consolidated.00.pth"
    data = bytearray(shard.read_bytes())
    at = data.index(b"tok_embeddings.weight")  # a key inside data.pkl: torch's unpickler decodes it as UTF-8
    data[at + 3] = 0xFF
    shard.write_bytes(bytes(data))
    _raises(
        CheckpointError,
        rf"^{re.escape(str(shard))}: truncated or corrupt checkpoint \(\d+ bytes\): \w+",
        load_checkpoint,
        meta,
    )


def test_every_flip_in_the_pickle_is_a_load_or_one_line(meta):
    shard = meta / "consolidated.00.pth"
    good = shard.read_bytes()
    start = good.index(b"data.pkl") + 8 + 40  # past the local header: inside the pickle
    for i in range(start, start + 200, 7):
        shard.write_bytes(good[:i] + bytes([good[i] ^ 0x5A]) + good[i + 1 :])
        try:
            load_checkpoint(meta, with_tokenizer=False)
        except SimpleLlamaError as e:
            assert "\n" not in str(e) and str(meta) in str(e)


def _reshard(meta: Path, key: str, change) -> Path:
    d = meta.parent / "two"
    write_meta(d, tiny_args(vocab_size=VOCAB), 2)
    p = d / "consolidated.01.pth"
    sd = torch.load(p, weights_only=True)
    sd[key] = change(sd[key])
    torch.save(sd, p)
    return p


@pytest.mark.parametrize(
    "key, change, expected",
    [
        ("layers.0.attention.wq.weight", lambda t: t[None],
         r"layers\.0\.attention\.wq\.weight: 3-d torch\.float32, but 2-d torch\.float32 in consolidated\.00\.pth"),
        ("layers.0.attention.wq.weight", lambda t: t[:, :-1],
         r"layers\.0\.attention\.wq\.weight: shape \(32, 63\) does not match \(32, 64\) in consolidated\.00\.pth "
         r"outside the split dim 0"),
        ("layers.1.ffn_norm.weight", lambda t: t.double(),
         r"layers\.1\.ffn_norm\.weight: 1-d torch\.float64, but 1-d torch\.float32 in consolidated\.00\.pth"),
    ],
)  # fmt: skip
def test_inconsistent_meta_shards_name_key_and_files(meta, key, change, expected):
    p = _reshard(meta, key, change)
    for fn in (load_checkpoint, read_header):
        _raises(CheckpointError, rf"^{re.escape(str(p))}: {expected}", fn, p.parent)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.int8])
def test_integer_or_bool_weights_refused(meta, dtype):
    shard = meta / "consolidated.00.pth"
    sd = torch.load(shard, weights_only=True)
    sd["layers.1.ffn_norm.weight"] = sd["layers.1.ffn_norm.weight"].to(dtype)
    torch.save(sd, shard)
    expected = (
        rf"^{re.escape(str(shard))}: layers\.1\.ffn_norm\.weight: expected floating-point weights, found {dtype}$"
    )
    for fn in (load_checkpoint, read_header):
        _raises(CheckpointError, expected, fn, meta)


def test_integer_weights_in_safetensors_and_gguf(tmp_path):
    from safetensors.torch import load_file, save_file

    d = _hf(tmp_path)
    tensors = load_file(d / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"].to(torch.int32)
    save_file(tensors, d / "model.safetensors")
    expected = r"model\.safetensors: model\.norm\.weight: expected floating-point weights, found"
    _raises(CheckpointError, expected + " torch.int32", load_checkpoint, d)
    _raises(CheckpointError, expected + " I32", read_header, d)
    args = tiny_args()
    path = write_gguf(tmp_path / "i.gguf", args, random_state_dict(args), extra_tensors={})
    import numpy as np

    w = gguf.GGUFWriter(str(tmp_path / "int.gguf"), "llama")
    reader = gguf.GGUFReader(path)
    for k, f in reader.fields.items():
        if not k.startswith("GGUF.") and k != "general.architecture":
            w.add_key_value(k, f.contents(), f.types[0], sub_type=f.types[-1] if len(f.types) > 1 else None)
    for t in reader.tensors:
        arr = np.array(t.data)
        w.add_tensor(t.name, arr.astype(np.int32) if t.name == "output_norm.weight" else arr)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    _raises(CheckpointError, r"int\.gguf: output_norm\.weight: expected floating-point weights, found I32$",
            load_checkpoint, tmp_path / "int.gguf")  # fmt: skip


# ---- non-finite weights and logits ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_reported_at_load_with_the_first_bad_key(meta, value):
    shard = meta / "consolidated.00.pth"
    sd = torch.load(shard, weights_only=True)
    sd["layers.1.attention.wq.weight"][3, 5] = value
    sd["layers.1.feed_forward.w2.weight"][0, 0] = value  # later in the file: not the one reported
    torch.save(sd, shard)
    _raises(CheckpointError, rf"^{re.escape(str(shard))}: layers\.1\.attention\.wq\.weight: weight 197 \(flat index\) "
            rf"is {value}; expected finite values$", load_checkpoint, meta)  # fmt: skip


def test_non_finite_gguf_weights(tmp_path):
    args = tiny_args()
    sd = random_state_dict(args)
    sd["norm.weight"][7] = float("nan")
    path = write_gguf(tmp_path / "nan.gguf", args, sd)
    _raises(CheckpointError, r"nan\.gguf: output_norm\.weight: weight 7 \(flat index\) is nan", load_checkpoint, path)


def test_generation_refuses_non_finite_logits(meta):
    llm = Llama.build(meta, max_seq_len=32, max_batch_size=1)
    with torch.no_grad():
        llm.model.layers[1].feed_forward.w2.weight[0, 0] = float("inf")  # after loading: the logits go NaN
    for temperature in (0.0, 0.7):
        expected = rf"^{re.escape(str(meta))}: generate: the logits of prompt 0 at position 3 are not finite"
        _raises(GenerationError, expected,
                llm.generate, [[1, 2, 3]], 4, temperature=temperature)  # fmt: skip


# ---- tokenizer files --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda lines: lines.__setitem__(5, lines[5].split()[0] + " 9"), r"line 10: rank 9 already given on line 6"),
        (lambda lines: lines.__setitem__(5, lines[5].split()[0] + " -4"), r"line 6: rank -4 is outside 0\.\.263"),
        (lambda lines: lines.__setitem__(5, lines[5].split()[0] + " 99999999999"),
         r"line 6: rank 99999999999 is outside"),
        (lambda lines: lines.__setitem__(5, lines[7].split()[0] + " 5"), r"line 8: token b'\\x07' appears twice"),
        (lambda lines: lines.__delitem__(65), r"no token for the single byte 0x41 \(expected all 256 bytes\)"),
    ],
    ids=["duplicate-rank", "negative-rank", "huge-rank", "duplicate-token", "missing-byte"],
)  # fmt: skip
def test_tiktoken_ranks_checked(tmp_path, edit, expected):
    p = tmp_path / "tokenizer.model"
    _tiktoken_file(p)
    lines = p.read_text().splitlines()
    edit(lines)
    p.write_text("\n".join(lines) + "\n")
    _raises(TokenizerError, rf"^{re.escape(str(p))}: {expected}", Tokenizer, p)


def test_tokenizer_larger_than_the_model_refused_at_load(tmp_path):
    import shutil

    d = tmp_path / "meta"
    write_meta(d, tiny_args(), 1)  # vocab_size 96
    shutil.copyfile(LLAMA3_TOKENIZER, d / "tokenizer.model")
    _raises(CheckpointError, rf"^{re.escape(str(d))}: tokenizer has 128256 tokens but the model's vocab_size is 96",
            load_checkpoint, d)  # fmt: skip
    (d / "tokenizer.model").unlink()
    _tokenizer_json(d)  # 267 byte-level BPE tokens
    _raises(CheckpointError, r"tokenizer has 267 tokens but the model's vocab_size is 96", load_checkpoint, d)
    (d / "tokenizer.json").unlink()
    _spm_model(d / "tokenizer.model")  # a Llama 2 style SentencePiece model of 300 pieces
    _raises(CheckpointError, r"tokenizer has 300 tokens but the model's vocab_size is 96", load_checkpoint, d)
    write_meta(tmp_path / "ok", tiny_args(), 1)
    _raises(CheckpointError, rf"^{re.escape(str(LLAMA3_TOKENIZER))}: tokenizer has 128256 tokens",
            Llama.build, tmp_path / "ok", LLAMA3_TOKENIZER, max_seq_len=16)  # fmt: skip


def _spm_model(path: Path) -> None:
    import sentencepiece

    text = path.with_suffix(".txt")
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(path.with_suffix("")), vocab_size=300, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    text.unlink()
    path.with_suffix(".vocab").unlink()


def test_gguf_special_token_ids_in_range(tmp_path):
    args = tiny_args()
    meta = {"tokenizer.ggml.bos_token_id": (10**6, gguf.GGUFValueType.UINT32)}
    path = write_gguf(tmp_path / "t.gguf", args, random_state_dict(args), metadata=meta)
    _raises(
        TokenizerError,
        r"t\.gguf \(default\): bos_id: expected a token id in 0\.\.95, found 1000000",
        load_checkpoint,
        path,
    )


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", r"tokenizer\.json.*(empty|expected)"),
        (b"{", r"tokenizer\.json: not valid JSON"),
        (b'{"model": {"type": "BPE", "vocab": {"a": 4294967296}}, "pre_tokenizer": {"type": "ByteLevel"}}',
         r"tokenizer\.json: token 'a': expected a token id in"),
        (b'{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["nospace"]}, '
         b'"pre_tokenizer": {"type": "ByteLevel"}}',
         r"tokenizer\.json: model\.merges: expected 'left right' strings or pairs, found 'nospace'"),
    ],
)  # fmt: skip
def test_malformed_tokenizer_json(tmp_path, content, expected):
    p = tmp_path / "tokenizer.json"
    p.write_bytes(content)
    _raises(TokenizerError, expected, load_tokenizer, p)


# ---- the command line: exit 1, one line -------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("family", ["config", "json", "fifo", "index", "dtype", "nan", "huge", "tiktoken"])
def test_cli_exits_1_with_one_line(meta, hf2, capsys, family):
    target, argv = meta, ["info"]
    if family == "config":
        _params(meta, rope_theta="abc")
    elif family == "json":
        (meta / "params.json").write_bytes(b"\xff\xfe")
    elif family == "fifo":
        (meta / "consolidated.00.pth").unlink()
        os.mkfifo(meta / "consolidated.00.pth")
    elif family == "index":
        target = hf2
        _point(hf2, "../../etc/passwd")
    elif family in ("dtype", "nan"):
        sd = torch.load(meta / "consolidated.00.pth", weights_only=True)
        w = sd["norm.weight"]
        sd["norm.weight"] = w.long() if family == "dtype" else w.fill_(float("nan"))
        torch.save(sd, meta / "consolidated.00.pth")
        argv = ["generate", "--prompt", "the", "--max-new-tokens", "2", "--model"]
    elif family == "huge":
        argv = ["generate", "--prompt", "the", "--max-seq-len", "2000000000", "--max-new-tokens", "2", "--model"]
    else:
        (meta / "tokenizer.model").write_text("IQ== 0\nIg== 0\n")
        argv = ["generate", "--prompt", "the", "--model"]
    capsys.readouterr()
    assert main([*argv, str(target)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"simplellama: error: {target}"), err


# ---- quantized loading (checkpoint/quantized.py) ----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, expected",
    [
        ({"quantize": "int3"}, QuantizeError, r"^quantize: expected None, 'auto', 'int8' or 'int4', found 'int3'$"),
        ({"quantize": "int4", "group_size": 48}, QuantizeError,
         r"^group_size: expected one of 32, 64, 128, 256, found 48$"),
        ({"quantize": "int4", "group_size": 64}, QuantizeError,
         r"meta: layers\.0\.feed_forward\.w2: group_size 64 does not divide its input features K = 96; "),
        ({"quantize": "int4"}, QuantizeError,  # VOCAB = 520 output rows: torch's CPU int4 packing needs 16 | N
         r"meta: output: int4 on CPU needs output features N a multiple of 16 \(torch's packing\), found N = 520$"),
        ({"quantize": "int8", "model_parallel_size": 2}, ParallelError,
         r"^quantize='int8' with model_parallel_size 2: the parallel layers split float weights, packed int8/int4 "
         r"ones cannot be sliced per rank; use one process or quantize=None$"),
    ],
)  # fmt: skip
def test_quantize_arguments_named(meta, kwargs, error, expected):
    _raises(error, expected, load_for_inference, meta, **kwargs)


@pytest.mark.parametrize("argv, message", [
    (["--quantize", "int3"], "invalid value 'int3' for quantize: expected one of 'none', 'auto', 'int8', 'int4'"),
    (["--group-size", "48"], "invalid value '48' for group_size: expected one of 32, 64, 128, 256"),
])  # fmt: skip
def test_quantize_switches_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--prompt", "hi", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err


def test_non_finite_weights_named_when_quantizing(meta):
    shard = meta / "consolidated.00.pth"
    sd = torch.load(shard, weights_only=True)
    sd["layers.1.attention.wq.weight"][3, 5] = float("nan")
    torch.save(sd, shard)
    _raises(CheckpointError, rf"^{re.escape(str(shard))}: layers\.1\.attention\.wq\.weight: weight 197 \(flat "
            r"index\) is nan; expected finite values$", load_for_inference, meta, quantize="int8")  # fmt: skip


def test_non_finite_gguf_block_scale_named(tmp_path):
    args = tiny_args()
    path = write_gguf(tmp_path / "q8.gguf", args, random_state_dict(args), default_qtype="Q8_0")
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.1.ffn_up.weight")
    with open(path, "r+b") as f:  # the first block's fp16 d -> NaN (0x7e00)
        f.seek(t.data_offset)
        f.write(b"\x00\x7e")
    _raises(CheckpointError, r"q8\.gguf: blk\.1\.ffn_up\.weight: a block's scale is inf or nan; expected finite "
            r"values$", load_for_inference, path, quantize="auto")  # fmt: skip


def test_gguf_block_type_that_cannot_be_converted(tmp_path, monkeypatch):
    args = tiny_args()
    qtypes = {"layers.0.attention.wk.weight": "Q5_0"}
    path = write_gguf(tmp_path / "q5.gguf", args, random_state_dict(args), qtypes=qtypes)
    real = gguf.quants.dequantize

    def no_q5(data, qtype):  # what gguf does for the types it cannot read (Q8_1, Q8_K, ...)
        if qtype == gguf.GGMLQuantizationType.Q5_0:
            raise NotImplementedError("Dequantization for Q5_0 is not yet implemented")
        return real(data, qtype)

    monkeypatch.setattr(gguf.quants, "dequantize", no_q5)
    _raises(QuantizeError, r"q5\.gguf: blk\.0\.attn_k\.weight: GGUF tensor type Q5_0: gguf cannot dequantize "
            r"it", load_for_inference, path, quantize="auto")  # fmt: skip
