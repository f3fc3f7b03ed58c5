"""ModelArgs against references we did not write: Meta's sku_list.py, HF config sizes, published counts."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

from simplellama.config import PRESETS, ModelArgs, ModelArgsError, infer_rope_scaling_factor, preset

# Our preset name -> CoreModelId member in llama-models' sku_list.py.
CORE_MODEL_IDS = {
    "llama3-8b": "llama3_8b",
    "llama3-70b": "llama3_70b",
    "llama3.1-8b": "llama3_1_8b",
    "llama3.1-70b": "llama3_1_70b",
    "llama3.1-405b": "llama3_1_405b",
    "llama3.2-1b": "llama3_2_1b",
    "llama3.2-3b": "llama3_2_3b",
}


def _sku_list_path() -> Path:
    """llama_models/sku_list.py from the installed package (located, never imported: it needs pydantic & co.)."""
    spec = importlib.util.find_spec("llama_models")
    assert spec is not None and spec.submodule_search_locations, "llama-models is installed by `make setup`"
    return Path(spec.submodule_search_locations[0]) / "sku_list.py"


def _published_arch_args() -> dict[str, list[dict]]:
    """``CoreModelId`` name -> arch_args of each ``Model(...)`` of ours in sku_list.py, read as data with ``ast``."""
    tree = ast.parse(_sku_list_path().read_text())
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)  # LLAMA3_VOCAB_SIZE = 128256
    }

    def value(node: ast.expr):
        if isinstance(node, ast.Name):  # e.g. LLAMA3_VOCAB_SIZE
            return constants[node.id]
        return ast.literal_eval(node)

    found: dict[str, list[dict]] = {}
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Model"):
            continue
        kw = {k.arg: k.value for k in call.keywords}
        if not isinstance(kw.get("arch_args"), ast.Dict) or not isinstance(kw.get("core_model_id"), ast.Attribute):
            continue
        if kw["core_model_id"].attr not in CORE_MODEL_IDS.values():  # e.g. quantized SKUs built with **arch_args_1b()
            continue
        variant = ast.literal_eval(kw["variant"]) if "variant" in kw else ""
        if variant == "bf16-mp16":  # the 405B re-sharded for 16 GPUs: kv heads duplicated to 16, not the model
            continue
        arch = {ast.literal_eval(k): value(v) for k, v in zip(kw["arch_args"].keys, kw["arch_args"].values)}
        found.setdefault(kw["core_model_id"].attr, []).append(arch)
    return found


def test_sku_list_parsed():
    published = _published_arch_args()
    assert {k: len(v) for k, v in published.items()} == {k: 2 if k == "llama3_1_405b" else 1 for k in published}
    assert set(published) == set(CORE_MODEL_IDS.values())
    assert published["llama3_8b"][0]["vocab_size"] == 128256  # LLAMA3_VOCAB_SIZE resolved: Llama 3 tiktoken size


@pytest.mark.parametrize("name", sorted(CORE_MODEL_IDS))
def test_preset_equals_meta_arch_args(name):
    published = _published_arch_args()[CORE_MODEL_IDS[name]]
    assert published, f"no Model(...) for {CORE_MODEL_IDS[name]} in sku_list.py"
    ours = preset(name)
    for arch in published:  # 405B: bf16-mp8 and FP8 entries carry the same architecture
        for field, expected in arch.items():
            assert getattr(ours, field) == expected, f"{name}.{field}: Meta says {expected!r}"


def test_every_preset_is_checked():
    assert set(PRESETS) == set(CORE_MODEL_IDS)


# HF config.json intermediate_size of meta-llama/{Meta-Llama-3-8B, -70B, Llama-3.1-405B, Llama-3.2-1B, -3B}
# and the parameter counts on their model cards (safetensors metadata), rounded as published.
PUBLISHED = [
    ("llama3.1-8b", 14336, "8.03B"),
    ("llama3-70b", 28672, "70.6B"),
    ("llama3.1-405b", 53248, "405.9B"),
    ("llama3.2-1b", 8192, "1.24B"),
    ("llama3.2-3b", 8192, "3.21B"),
]


@pytest.mark.parametrize("name, intermediate_size, n_params", PUBLISHED)
def test_ffn_size_and_parameter_count_match_published(name, intermediate_size, n_params):
    args = preset(name)
    assert args.hidden_dim == intermediate_size
    decimals = len(n_params.split(".")[1]) - 1  # "8.03B" -> 2
    assert f"{args.num_parameters() / 1e9:.{decimals}f}B" == n_params


def test_llama3_and_3_1_differ_only_in_rope():
    for size in ("8b", "70b"):
        a, b = preset(f"llama3-{size}"), preset(f"llama3.1-{size}")
        assert a.num_parameters() == b.num_parameters() and a.hidden_dim == b.hidden_dim
        assert (a.use_scaled_rope, b.use_scaled_rope) == (False, True)


# ---- RoPE scaling factor ----

# (preset, factor in the release's HF config.json rope_scaling)
ROPE_FACTORS = [("llama3.1-8b", 8.0), ("llama3.1-70b", 8.0), ("llama3.1-405b", 8.0),
                ("llama3.2-1b", 32.0), ("llama3.2-3b", 32.0)]  # fmt: skip


@pytest.mark.parametrize("name, factor", ROPE_FACTORS)
def test_rope_factor_inferred_from_shape(name, factor):
    args = preset(name)
    assert args.rope_scaling_factor == factor
    assert infer_rope_scaling_factor(args.dim, args.n_layers) == factor


def test_rope_factor_not_set_without_scaled_rope():
    assert preset("llama3-8b").rope_scaling_factor is None


def test_explicit_rope_factor_wins():
    assert preset("llama3.2-1b", rope_scaling_factor=8.0).rope_scaling_factor == 8.0
    assert preset("llama3.1-8b", rope_scaling_factor=32.0).rope_scaling_factor == 32.0
    params = preset("llama3.2-3b").to_params_json() | {"rope_scaling_factor": 4.0}
    assert ModelArgs.from_dict(params).rope_scaling_factor == 4.0
    assert ModelArgs.from_dict(params, rope_scaling_factor=2.0).rope_scaling_factor == 2.0


@pytest.mark.parametrize("type_key", ["rope_type", "type"])
def test_hf_rope_scaling_dict_accepted(type_key):
    # rope_scaling of meta-llama/Llama-3.2-1B config.json (older transformers wrote "type")
    hf = {type_key: "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}  # fmt: skip
    base = {k: v for k, v in PRESETS["llama3.1-8b"].items() if k not in ("use_scaled_rope", "tie_word_embeddings")}
    args = ModelArgs.from_dict(base | {"rope_scaling": hf})
    assert args.use_scaled_rope and args.rope_scaling_factor == 32.0  # the dict's factor, not the 8B's inferred 8
    assert (args.rope_low_freq_factor, args.rope_high_freq_factor, args.rope_original_max_seq_len) == (1.0, 4.0, 8192)


@pytest.mark.parametrize("rope_scaling", [None, {"rope_type": "default"}, {"type": "default"}])
def test_hf_rope_scaling_default_means_unscaled(rope_scaling):
    args = ModelArgs.from_dict({"dim": 64, "n_heads": 4, "rope_scaling": rope_scaling})
    assert not args.use_scaled_rope and args.rope_scaling_factor is None


def test_hf_rope_scaling_errors():
    with pytest.raises(ModelArgsError, match=r"config\.json: rope_scaling\.rope_type: expected 'llama3'.*'yarn'"):
        ModelArgs.from_dict({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, source="config.json")
    with pytest.raises(ModelArgsError, match=r"rope_scaling: expected an object, found 8"):
        ModelArgs.from_dict({"rope_scaling": 8})
    with pytest.raises(ModelArgsError, match=r"params\.json: rope_scaling\.factor: expected >= 1, found 0\.5"):
        ModelArgs.from_dict({"rope_scaling": {"type": "llama3", "factor": 0.5}})


# ---- validation errors name the field ----


def _at(path: Path) -> str:
    """Regex for a message that starts with ``path``."""
    return re.escape(str(path))


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "params.json"
    p.write_text(json.dumps({"dim": 64, "n_heads": 4, "n_kv_heads": 2, "moe_experts": 8}))
    with pytest.raises(
        ModelArgsError, match=rf"^{_at(p)}: unknown field 'moe_experts' \(expected one of: .*n_kv_heads"
    ):
        ModelArgs.from_json(p)


def test_unknown_override_named():
    with pytest.raises(ModelArgsError, match=r"params\.json: unknown field 'max_len'"):
        ModelArgs.from_dict({}, max_len=8)


def test_heads_not_divisible_by_kv_heads():
    with pytest.raises(ModelArgsError, match=r"n_heads \(6\) must be divisible by n_kv_heads \(4\)"):
        ModelArgs(dim=48, n_heads=6, n_kv_heads=4)


def test_dim_not_divisible_by_heads():
    with pytest.raises(ModelArgsError, match=r"dim \(100\) must be divisible by n_heads \(8\)"):
        ModelArgs(dim=100, n_heads=8)


def test_odd_head_dim():
    with pytest.raises(ModelArgsError, match=r"head_dim = dim / n_heads must be even for RoPE, found 3"):
        ModelArgs(dim=12, n_heads=4)


@pytest.mark.parametrize("field", ["dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                                   "max_seq_len", "max_batch_size"])  # fmt: skip
@pytest.mark.parametrize("bad", [0, -2, True, 4.0])
def test_non_positive_or_non_int_named(field, bad):
    null = r" \(or null\)" if field == "n_kv_heads" else ""  # None means "as many as n_heads"
    with pytest.raises(ModelArgsError, match=rf"ModelArgs\.{field}: expected a positive integer{null}, found {bad!r}"):
        ModelArgs(**{field: bad})


@pytest.mark.parametrize(
    "field, bad, expected",
    [("norm_eps", 0.0, "> 0"), ("rope_theta", -1.0, "> 0"), ("ffn_hidden_dim", 0, r"a positive integer \(or null\)")],
)
def test_other_numeric_fields_named(field, bad, expected):
    with pytest.raises(ModelArgsError, match=rf"ModelArgs\.{field}: expected {expected}, found {bad!r}"):
        ModelArgs(**{field: bad})


def test_rope_freq_factors_order():
    with pytest.raises(ModelArgsError, match=r"rope_high_freq_factor > rope_low_freq_factor > 0, found 1\.0 and 2\.0"):
        ModelArgs(use_scaled_rope=True, rope_low_freq_factor=2.0, rope_high_freq_factor=1.0)


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "params.json"
    p.write_text(json.dumps({"dim": 64, "n_heads": 3}))
    with pytest.raises(ModelArgsError, match=rf"^{_at(p)}: ModelArgs: dim \(64\) must be divisible by n_heads \(3\)"):
        ModelArgs.from_json(p)
    p.write_text(json.dumps({"dim": 64, "norm_eps": "small"}))
    with pytest.raises(ModelArgsError, match=rf"^{_at(p)}: norm_eps: expected a finite number, found 'small'$"):
        ModelArgs.from_json(p)


def test_bad_json(tmp_path):
    p = tmp_path / "params.json"
    p.write_text('{"dim": 64,')
    with pytest.raises(ModelArgsError, match=rf"^{_at(p)}: not valid JSON \(.* at line 1 column 12\)"):
        ModelArgs.from_json(p)
    p.write_text("[64, 4]")
    with pytest.raises(ModelArgsError, match=rf"^{_at(p)}: expected a JSON object, found array"):
        ModelArgs.from_json(p)


def test_missing_file(tmp_path):
    p = tmp_path / "nowhere" / "params.json"
    with pytest.raises(ModelArgsError, match=rf"^{_at(p)}: file not found"):
        ModelArgs.from_json(p)


def test_unknown_preset_lists_the_names():
    with pytest.raises(
        ModelArgsError, match=r"unknown preset 'llama4-8b' \(expected one of: llama3-8b, .*llama3\.2-3b"
    ):
        preset("llama4-8b")
    assert preset("Meta-Llama3.1_8B") == preset("llama3.1-8b")
