"""A tiny Llama 3 written with tinytorch: the same maths and parameter names as ``simplellama.model``.

Every piece is the Llama recipe (Meta ``llama_models/llama3/model.py``), in float64 pure Python:

* RMSNorm before attention and before the MLP, residual adds around both;
* RoPE in Meta's interleaved form: features ``(2i, 2i+1)`` of each head form a pair rotated by
  ``pos * theta ** (-2i / Dh)`` (with Llama 3.1 frequency scaling when ``use_scaled_rope``);
* grouped-query attention: H query heads share K key/value heads, a causal mask, softmax over keys;
* SwiGLU MLP ``w2(silu(w1 x) * w3 x)``; an optionally tied output layer (``output.weight`` is
  ``tok_embeddings.weight``).

Parameter names are Meta's (``layers.0.attention.wq.weight`` ...), so the state dict of a
``simplellama.Transformer`` (converted with ``.tolist()``, or passed as torch tensors) loads with
``load_state_dict(strict=True)``. Pure Python is slow: keep models tiny (D=16, 2 layers).

Shapes: B batch, T tokens, D model dim, H query heads, K kv heads, G = H / K, Dh head dim, F ffn dim,
V vocab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from . import functional as F
from .nn import Embedding, Linear, Module, ModuleList, RMSNorm
from .tensor import Tensor

__all__ = [
    "LlamaError",
    "LlamaArgs",
    "rope_frequencies",
    "rope_tables",
    "apply_rope",
    "Attention",
    "FeedForward",
    "Block",
    "Llama",
]


class LlamaError(ValueError):
    """Bad model arguments or input shapes; the message names the field and expected versus found."""


@dataclass
class LlamaArgs:
    """The fields of ``simplellama.config.ModelArgs`` a tiny model needs (same names, Meta's)."""

    dim: int = 16
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = 2
    vocab_size: int = 32
    hidden_dim: int = 48  # F; ModelArgs derives it from multiple_of / ffn_dim_multiplier
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    use_scaled_rope: bool = False
    rope_scaling_factor: float | None = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_seq_len: int = 8192
    tie_word_embeddings: bool = True
    max_seq_len: int = 64

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.dim % self.n_heads:
            raise LlamaError(f"LlamaArgs: dim={self.dim} must be divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise LlamaError(f"LlamaArgs: n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise LlamaError(f"LlamaArgs: head_dim={self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_model_args(cls, args: Any) -> LlamaArgs:
        """Copy the matching fields of a ``simplellama.config.ModelArgs`` (``hidden_dim`` is its property)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def rope_frequencies(args: LlamaArgs) -> list[float]:
    """``theta ** (-2i / Dh)`` for i < Dh/2, with Llama 3.1 scaling (Meta ``apply_scaling``) if asked."""
    Dh = args.head_dim
    freqs = [1.0 / args.rope_theta ** (2 * i / Dh) for i in range(Dh // 2)]
    if not args.use_scaled_rope:
        return freqs
    factor, low, high = args.rope_scaling_factor, args.rope_low_freq_factor, args.rope_high_freq_factor
    L = args.rope_original_max_seq_len
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < L / high:
            out.append(f)
        elif wavelen > L / low:
            out.append(f / factor)
        else:
            smooth = (L / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return out


def rope_tables(args: LlamaArgs, T: int, start_pos: int = 0) -> tuple[Tensor, Tensor]:
    """cos and sin of ``pos * freq_i`` for positions start_pos .. start_pos+T-1: two (T, 1, Dh/2) tensors."""
    freqs = rope_frequencies(args)
    angles = [[(start_pos + t) * f for f in freqs] for t in range(T)]
    cos = Tensor([[[math.cos(a) for a in row]] for row in angles])  # (T, 1, Dh/2): same for every head
    sin = Tensor([[[math.sin(a) for a in row]] for row in angles])  # (T, 1, Dh/2)
    return cos, sin


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs ``(x[2i], x[2i+1])`` of x (B, T, heads, Dh): Meta's complex multiply, in reals."""
    B, T, n, Dh = x.shape
    pairs = x.reshape(B, T, n, Dh // 2, 2)  # (B, T, heads, Dh/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]  # (B, T, heads, Dh/2) each: real and imaginary parts
    # (x0 + i x1)(cos + i sin) = (x0 cos - x1 sin) + i (x0 sin + x1 cos)
    out = F.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)  # (B, T, heads, Dh/2, 2)
    return out.reshape(B, T, n, Dh)


def future_mask(T: int) -> Tensor:
    """Boolean (T, T), True where key j lies in the future of query i (j > i): those scores become -inf."""
    return Tensor([[j > i for j in range(T)] for i in range(T)])


class Attention(Module):
    """Grouped-query causal self-attention with Meta's names ``wq``, ``wk``, ``wv``, ``wo``."""

    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        H, K, Dh, D = self.n_heads, self.n_kv_heads, self.head_dim, args.dim
        self.wq = Linear(D, H * Dh, bias=False)
        self.wk = Linear(D, K * Dh, bias=False)
        self.wv = Linear(D, K * Dh, bias=False)
        self.wo = Linear(H * Dh, D, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D) -> (B, T, D)."""
        B, T, _ = x.shape
        H, K, Dh = self.n_heads, self.n_kv_heads, self.head_dim
        G = H // K
        q = apply_rope(self.wq(x).reshape(B, T, H, Dh), cos, sin)  # (B, T, H*Dh) -> (B, T, H, Dh)
        k = apply_rope(self.wk(x).reshape(B, T, K, Dh), cos, sin)  # (B, T, K, Dh)
        v = self.wv(x).reshape(B, T, K, Dh)  # (B, T, K, Dh)
        if G > 1:  # each kv head serves G query heads: query head h uses kv head h // G
            k = k.unsqueeze(3).expand(B, T, K, G, Dh).reshape(B, T, H, Dh)  # (B, T, H, Dh)
            v = v.unsqueeze(3).expand(B, T, K, G, Dh).reshape(B, T, H, Dh)  # (B, T, H, Dh)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, Dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(Dh)  # (B, H, T, T)
        scores = scores.masked_fill(mask, float("-inf"))  # mask (T, T): True = future key
        out = F.softmax(scores, dim=-1) @ v  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(B, T, H * Dh)  # (B, H, T, Dh) -> (B, T, H*Dh)
        return self.wo(out)  # (B, T, D)


class FeedForward(Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)`` (Meta names; HF: gate_proj, down_proj, up_proj)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = Linear(dim, hidden_dim, bias=False)
        self.w2 = Linear(hidden_dim, dim, bias=False)
        self.w3 = Linear(dim, hidden_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, D) -> (B, T, D)."""
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, T, F) -> (B, T, D)


class Block(Module):
    """One pre-norm decoder layer (Meta's ``TransformerBlock``)."""

    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(Module):
    """Tokens (B, T) -> logits (B, T, V); ``loss(tokens, targets)`` for training."""

    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.args = args
        self.tok_embeddings = Embedding(args.vocab_size, args.dim)
        self.layers = ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight  # one (V, D) parameter, two names

    def forward(self, tokens: Tensor | list) -> Tensor:
        """Causal forward over the whole sequence (no KV cache): tokens (B, T) -> logits (B, T, V)."""
        tokens = tokens if isinstance(tokens, Tensor) else Tensor(tokens)
        if tokens.ndim != 2 or tokens.dtype != "int64":
            raise LlamaError(
                f"Llama.forward: tokens: expected int64 (B, T), found {tokens.dtype} {tuple(tokens.shape)}"
            )
        B, T = tokens.shape
        if T > self.args.max_seq_len:
            raise LlamaError(f"Llama.forward: tokens: expected T <= max_seq_len={self.args.max_seq_len}, found {T}")
        cos, sin = rope_tables(self.args, T)  # (T, 1, Dh/2) each
        mask = future_mask(T)  # (T, T)
        h = self.tok_embeddings(tokens)  # (B, T, D)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)  # (B, T, D)
        return self.output(self.norm(h))  # (B, T, V)

    def loss(self, tokens: Tensor | list, targets: Tensor | list) -> Tensor:
        """Mean cross-entropy of next-token predictions: targets (B, T) are the ids that should come next."""
        logits = self(tokens)  # (B, T, V)
        targets = targets if isinstance(targets, Tensor) else Tensor(targets)
        B, T, V = logits.shape
        return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))
