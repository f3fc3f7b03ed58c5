"""Model hyper-parameters: ``ModelArgs`` with Meta's ``params.json`` field names.

Meta's checkpoints describe the architecture in ``params.json``; this dataclass uses the same field
names so that file loads as is (``ModelArgs.from_dict(json.load(f))``). A few fields that Meta's
file does not carry are added for other formats (HF ``config.json``, GGUF metadata) and for RoPE
scaling, which Meta's reference code hard-codes (``llama_models/llama3/model.py: apply_scaling``).

FFN size (Meta, ``llama3/model.py: FeedForward``)::

    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier: hidden = int(ffn_dim_multiplier * hidden)
    hidden = multiple_of * ceil(hidden / multiple_of)

RoPE scaling: Llama 3.1 uses factor 8; Llama 3.2 1B/3B use 32 (their HF ``config.json`` says so),
but Meta's ``params.json`` only says ``use_scaled_rope: true``. When no factor is given we recognise
the 3.2 1B/3B shapes and use 32, otherwise 8; an explicit ``rope_scaling_factor`` always wins.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ModelArgsError
from .files import read_json

__all__ = [
    "ModelArgsError",
    "ModelArgs",
    "FIELD_RULES",
    "check_field",
    "PRESETS",
    "preset",
    "ffn_hidden_size",
    "infer_rope_scaling_factor",
]


def ffn_hidden_size(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """SwiGLU hidden size exactly as Meta computes it (``llama3/model.py:
    FeedForward.__init__``)."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


# Shapes of the Llama 3.2 text models whose RoPE scaling factor is 32 (HF config.json of
# meta-llama/Llama-3.2-1B and -3B: rope_scaling.factor = 32.0). Keyed by (dim, n_layers).
_LLAMA_3_2_SMALL_SHAPES = {(2048, 16), (3072, 28)}


def infer_rope_scaling_factor(dim: int, n_layers: int) -> float:
    """Scaling factor Meta's Llama 3.x checkpoints use when ``params.json`` only says
    ``use_scaled_rope``."""
    return 32.0 if (dim, n_layers) in _LLAMA_3_2_SMALL_SHAPES else 8.0


class Rule(NamedTuple):
    """Type and range of one ``ModelArgs`` field: ``kind`` is "int", "float" or "bool"; the value
    must be >= ``low`` (> ``low`` with ``above``) and <= ``high``; ``optional``: None allowed."""

    kind: str
    low: float | None = None
    above: bool = False
    optional: bool = False
    high: float | None = None


MAX_SIZE = 2**31 - 1  # any count or size: larger is no real model (and overflows int32 indexing)
_SIZE, _POSITIVE = Rule("int", 1, high=MAX_SIZE), Rule("float", 0, above=True)

# One table for every field, whatever the source (params.json, config.json, GGUF, Python).
FIELD_RULES: dict[str, Rule] = {
    "dim": _SIZE, "n_layers": _SIZE, "n_heads": _SIZE, "n_kv_heads": _SIZE._replace(optional=True),
    "vocab_size": _SIZE, "multiple_of": _SIZE,
    "ffn_dim_multiplier": _POSITIVE._replace(optional=True, high=1e3),
    "norm_eps": _POSITIVE._replace(high=1.0),
    "rope_theta": _POSITIVE, "use_scaled_rope": Rule("bool"),
    "rope_scaling_factor": Rule("float", 1, optional=True), "rope_low_freq_factor": _POSITIVE,
    "rope_high_freq_factor": _POSITIVE, "rope_original_max_seq_len": _SIZE,
    "tie_word_embeddings": Rule("bool"), "ffn_hidden_dim": _SIZE._replace(optional=True),
    "max_seq_len": _SIZE, "max_batch_size": _SIZE,
}  # fmt: skip


def check_field(name: str, value: Any, label: str | None = None) -> Any:
    """``value`` checked against ``FIELD_RULES[name]`` (ints for float fields become floats).

    Bools are not numbers here, floats are not ints, NaN and infinities are refused. The error
    names ``label`` (default ``ModelArgs.<name>``; loaders pass the file and its own key).
    """
    rule, label = FIELD_RULES[name], label or f"ModelArgs.{name}"
    if value is None and rule.optional:
        return None
    shown = f"{value!r:.60}"
    if rule.kind == "bool":
        if not isinstance(value, bool):
            raise ModelArgsError(f"{label}: expected true or false, found {shown}")
        return value
    null = " (or null)" if rule.optional else ""
    if rule.kind == "int":
        low_ok = isinstance(value, int) and not isinstance(value, bool) and value >= rule.low
        if not low_ok or value > rule.high:
            top = f" <= {rule.high}" if low_ok else ""
            raise ModelArgsError(f"{label}: expected a positive integer{top}{null}, found {shown}")
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value if isinstance(value, float) else _to_float(value)):
        raise ModelArgsError(f"{label}: expected a finite number{null}, found {shown}")
    if value < rule.low or (rule.above and value == rule.low):
        raise ModelArgsError(f"{label}: expected {'>' if rule.above else '>='} {rule.low:g}, "
                             f"found {shown}")  # fmt: skip
    if rule.high is not None and value > rule.high:
        raise ModelArgsError(f"{label}: expected <= {rule.high:g}, found {shown}")
    return float(value)


def _to_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range
        return math.inf


@dataclass
class ModelArgs:
    """Architecture of a Llama 3.x model. Field names follow Meta's ``params.json``; every field
    is checked for type and range (``FIELD_RULES``) on construction."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None -> n_heads (multi-head attention)
    vocab_size: int = 128256
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    use_scaled_rope: bool = False
    # --- not in Meta's params.json ---
    rope_scaling_factor: float | None = None  # None + use_scaled_rope -> inferred (8 or 32)
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_seq_len: int = 8192
    tie_word_embeddings: bool = False
    ffn_hidden_dim: int | None = None  # explicit FFN size (HF intermediate_size, GGUF ffn length)
    max_seq_len: int = 2048
    max_batch_size: int = 4

    def __post_init__(self) -> None:
        for name in FIELD_RULES:
            setattr(self, name, check_field(name, getattr(self, name)))
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.dim % self.n_heads:
            raise ModelArgsError(
                f"ModelArgs: dim ({self.dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.n_heads % self.n_kv_heads:
            raise ModelArgsError(
                f"ModelArgs: n_heads ({self.n_heads}) must be divisible by n_kv_heads "
                f"({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ModelArgsError(
                f"ModelArgs: head_dim = dim / n_heads must be even for RoPE, found {self.head_dim}"
            )
        if self.hidden_dim < 1:  # ffn_dim_multiplier small enough to round the FFN away
            raise ModelArgsError(
                f"ModelArgs: the FFN hidden size must be >= 1, found {self.hidden_dim} "
                f"(ffn_dim_multiplier {self.ffn_dim_multiplier})"
            )
        if self.use_scaled_rope:
            if self.rope_scaling_factor is None:
                self.rope_scaling_factor = infer_rope_scaling_factor(self.dim, self.n_layers)
            if not self.rope_high_freq_factor > self.rope_low_freq_factor:
                raise ModelArgsError(
                    "ModelArgs: expected rope_high_freq_factor > rope_low_freq_factor > 0, found "
                    f"{self.rope_high_freq_factor!r} and {self.rope_low_freq_factor!r}"
                )

    # ---- derived sizes ----
    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def n_rep(self) -> int:
        """Query heads per KV head (G = H / K)."""
        return self.n_heads // self.n_kv_heads

    @property
    def hidden_dim(self) -> int:
        """FFN (SwiGLU) hidden size F."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        return ffn_hidden_size(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    def num_parameters(self) -> int:
        """Parameter count of the model these args describe (tied output counted once)."""
        D, F, V, Dh = self.dim, self.hidden_dim, self.vocab_size, self.head_dim
        attn = D * self.n_heads * Dh + 2 * D * self.n_kv_heads * Dh + self.n_heads * Dh * D
        layer = attn + 3 * D * F + 2 * D
        return V * D + self.n_layers * layer + D + (0 if self.tie_word_embeddings else V * D)

    def kv_cache_bytes(
        self, batch: int | None = None, seq_len: int | None = None, bytes_per_el: int = 2
    ) -> int:
        """Bytes of K and V cache for ``batch`` x ``seq_len`` positions over all layers."""
        batch = self.max_batch_size if batch is None else batch
        seq_len = self.max_seq_len if seq_len is None else seq_len
        return 2 * self.n_layers * batch * seq_len * self.n_kv_heads * self.head_dim * bytes_per_el

    # ---- dict / json ----
    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any],
        source: str = "params.json",
        names: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ModelArgs:
        """Build from a Meta ``params.json`` dict; unknown keys are rejected with their name.

        Every value is checked (``check_field``) and a bad one is reported as ``source: key``,
        where ``names`` maps a field to the source's own key (e.g. ``dim`` -> ``hidden_size``).
        ``rope_scaling`` written HF style (``{"rope_type"|"type": "llama3", "factor": 32, ...}``)
        is accepted. ``overrides`` (arguments, e.g. ``max_seq_len``) win over the dict.
        """
        if not isinstance(d, Mapping):
            raise ModelArgsError(f"{source}: expected a JSON object, found {type(d).__name__}")
        d, names = dict(d), dict(names or {})
        rope_scaling = d.pop("rope_scaling", None)
        if rope_scaling is not None:
            rope = _rope_scaling_fields(rope_scaling, source)
            d.update(rope)
            names.update({k: f"rope_scaling.{_ROPE_KEYS[k]}" for k in rope if k in _ROPE_KEYS})
        for key in list(d) + list(overrides):
            if key not in FIELD_RULES:
                raise ModelArgsError(
                    f"{source}: unknown field {key!r} (expected one of: {', '.join(FIELD_RULES)})"
                )
        d = {k: check_field(k, v, f"{source}: {names.get(k, k)}") for k, v in d.items()}
        d |= {k: check_field(k, v, f"{k} (argument)") for k, v in overrides.items()}
        try:
            return cls(**d)
        except ModelArgsError as e:
            raise ModelArgsError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> ModelArgs:
        """Read a ``params.json`` (see :func:`from_dict`); every error names the file."""
        return cls.from_dict(read_json(path, ModelArgsError), source=str(path), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_params_json(self) -> dict[str, Any]:
        """Meta-style ``params.json`` content (plus our extra fields where they differ from
        defaults)."""
        meta = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                "ffn_dim_multiplier", "norm_eps", "rope_theta", "use_scaled_rope")  # fmt: skip
        out = {k: getattr(self, k) for k in meta}
        defaults = ModelArgs()
        for f in dataclasses.fields(self):
            if f.name not in meta and f.name not in ("max_seq_len", "max_batch_size"):
                value = getattr(self, f.name)
                scaled = f.name == "rope_scaling_factor" and self.use_scaled_rope
                if value != getattr(defaults, f.name) or scaled:
                    out[f.name] = value
        return out


# HF rope_scaling key of each field it sets
_ROPE_KEYS = {
    "rope_scaling_factor": "factor",
    "rope_low_freq_factor": "low_freq_factor",
    "rope_high_freq_factor": "high_freq_factor",
    "rope_original_max_seq_len": "original_max_position_embeddings",
}


def _rope_scaling_fields(rs: Any, source: str) -> dict[str, Any]:
    """Translate an HF-style ``rope_scaling`` dict (``type`` or ``rope_type``) into ModelArgs
    fields."""
    if not isinstance(rs, dict):
        raise ModelArgsError(f"{source}: rope_scaling: expected an object, found {rs!r}")
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return {}
    if kind != "llama3":
        raise ModelArgsError(
            f"{source}: rope_scaling.rope_type: expected 'llama3' or 'default', found {kind!r}"
        )
    out: dict[str, Any] = {"use_scaled_rope": True}
    return out | {name: rs[key] for name, key in _ROPE_KEYS.items() if key in rs}


def _llama3(
    dim: int, n_layers: int, n_heads: int, multiple_of: int, ffn_dim_multiplier: float, **extra: Any
) -> dict:
    """One release's params.json: every Llama 3.x text model has 8 kv heads and the same
    vocabulary."""
    return dict(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=8, vocab_size=128256,
                multiple_of=multiple_of, ffn_dim_multiplier=ffn_dim_multiplier, norm_eps=1e-5,
                rope_theta=500000.0, **extra)  # fmt: skip


# Llama 3.1 and 3.2: RoPE frequency scaling (factor 8, or 32 for 3.2 1B/3B)
_SCALED = dict(use_scaled_rope=True)

# Meta's params.json for each release (llama-models sku_list.py arch_args), Llama 3.x text models.
PRESETS: dict[str, dict[str, Any]] = {
    "llama3-8b": _llama3(4096, 32, 32, 1024, 1.3),
    "llama3-70b": _llama3(8192, 80, 64, 4096, 1.3),
    "llama3.1-8b": _llama3(4096, 32, 32, 1024, 1.3, **_SCALED),
    "llama3.1-70b": _llama3(8192, 80, 64, 4096, 1.3, **_SCALED),
    "llama3.1-405b": _llama3(16384, 126, 128, 4096, 1.2, **_SCALED),
    "llama3.2-1b": _llama3(2048, 16, 32, 256, 1.5, tie_word_embeddings=True, **_SCALED),
    "llama3.2-3b": _llama3(3072, 28, 24, 256, 1.0, tie_word_embeddings=True, **_SCALED),
}


def preset(name: str, **overrides: Any) -> ModelArgs:
    """``ModelArgs`` of a named Meta release, e.g. ``preset("llama3.2-1b", max_seq_len=8192)``."""
    key = name.lower().replace("_", "-").replace("meta-", "")
    if key not in PRESETS:
        raise ModelArgsError(f"unknown preset {name!r} (expected one of: {', '.join(PRESETS)})")
    return ModelArgs(**{**PRESETS[key], **overrides})
