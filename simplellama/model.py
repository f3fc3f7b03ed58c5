"""The Llama 3.x decoder: ``TransformerBlock`` and ``Transformer`` with Meta's parameter names.

Follows Meta's ``llama_models/llama3/model.py`` (without fairscale model parallelism)::

    h = tok_embeddings(tokens)
    for each layer:  h = h + attention(attention_norm(h));  h = h + feed_forward(ffn_norm(h))
    logits = output(norm(h))          (float32)

Parameter names are Meta's (``layers.0.attention.wq.weight`` ...), so a ``consolidated.00.pth``
loads with ``load_state_dict(strict=True)``. With tied embeddings ``output.weight`` *is*
``tok_embeddings.weight`` and the state dict still carries both keys.

Two ways to run: ``forward(tokens)`` (``start_pos=None``) is a plain causal pass over ``tokens``
(training, full recompute, gradients); ``forward(tokens, start_pos)`` uses the KV cache (inference,
no gradients): the prompt (whole or in chunks), then new tokens with the position of their first.

Shapes: B batch, T new tokens, S = start_pos + T, D model dim, V vocab, Dh head dim.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, nn

from LogRelay import get_relay

from .attention import Attention, causal_mask
from .config import ModelArgs
from .devices import check_memory
from .errors import ModelError
from .ffn import FeedForward
from .kv_cache import KVCache, check_cache_size
from .norm import RMSNorm, upcast
from .rope import freqs_cis_from_args, rope_description

Device = torch.device | str | None
DType = torch.dtype | None
Mask = Tensor | None

__all__ = ["ModelError", "TransformerBlock", "Transformer", "MEMORY_HINT", "rope_table_bytes"]

log = get_relay("simplellama.model")

MEMORY_HINT = "lower max_seq_len / max_batch_size, or load the weights quantized (int8/int4)"


def rope_table_bytes(positions: int, head_dim: int, real: torch.dtype) -> int:
    """Peak bytes of building the complex RoPE table: angles, ones and the (S, Dh/2) result."""
    return positions * (head_dim // 2) * 4 * real.itemsize


class TransformerBlock(nn.Module):
    """Pre-norm decoder layer: attention and SwiGLU, each wrapped in RMSNorm + residual."""

    def __init__(self, layer_id: int, args: ModelArgs, device: Device = None, dtype: DType = None):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args, device=device, dtype=dtype)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim, device=device, dtype=dtype)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps, device=device, dtype=dtype)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps, device=device, dtype=dtype)

    def forward(self, x: Tensor, start_pos: int | None, freqs_cis: Tensor, mask: Mask) -> Tensor:
        """x (B, T, D) -> (B, T, D)."""
        h = x + self.attention(self.attention_norm(x), start_pos, freqs_cis, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """Llama 3.x language model: tokens (B, T) -> float32 logits (B, T, V)."""

    def __init__(self, args: ModelArgs, device: Device = None, dtype: DType = None) -> None:
        super().__init__()
        self.args = args
        # RoPE table for 2 * max_seq_len positions as Meta's: a plain attribute (not in the state
        # dict, left complex by model.to(dtype)) on the CPU, complex128 for float64 models.
        wide = (dtype or torch.get_default_dtype()) == torch.float64
        real = torch.float64 if wide else torch.float32
        _check_fits(args, device, dtype, real)
        emb = torch.empty(args.vocab_size, args.dim, device=device, dtype=dtype)  # (V, D)
        if not emb.is_meta:  # nn.Embedding's N(0, 1); on "meta" (loaders) it would only cost time
            nn.init.normal_(emb)
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim, _weight=emb)
        self.layers = nn.ModuleList(
            TransformerBlock(i, args, device, dtype) for i in range(args.n_layers)
        )
        self.norm = RMSNorm(args.dim, eps=args.norm_eps, device=device, dtype=dtype)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False, device=device, dtype=dtype)
        if args.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight  # one (V, D) tensor, two names
        self.freqs_cis = freqs_cis_from_args(args, 2 * args.max_seq_len, "cpu", real)  # (2S, Dh/2)
        log.info("%s", rope_description(args))

    def setup_cache(self, max_batch_size: int | None = None, max_seq_len: int | None = None) -> int:
        """(Re)allocate every layer's KV cache for B x S positions (default: ``args``); its bytes.

        Size it from the request (prompt + new tokens), not the model's maximum: the cache of
        Llama 3.1 8B for 4 x 128k positions in bf16 would be 64 GiB.
        """
        B = self.args.max_batch_size if max_batch_size is None else max_batch_size
        S = self.args.max_seq_len if max_seq_len is None else max_seq_len
        check_cache_size(B, S, "setup_cache")
        w = self.tok_embeddings.weight
        self.free_cache()  # the old buffers go before the new ones are counted and allocated
        a = self.layers[0].attention
        need = {"KV cache": 2 * len(self.layers) * B * S * a.n_kv_heads * a.head_dim * w.itemsize}
        if S > len(self.freqs_cis):
            need["RoPE table"] = rope_table_bytes(S, a.head_dim, self.freqs_cis.real.dtype)
        check_memory(f"setup_cache({B}, {S})", need, w.device, MEMORY_HINT)
        # plain tensors even under torch.inference_mode(): usable by any later call, also training
        with torch.inference_mode(False):
            for layer in self.layers:
                a = layer.attention
                a.cache = KVCache(B, S, a.n_kv_heads, a.head_dim, device=w.device, dtype=w.dtype)
            self._rope(S)
        log.info(
            "KV cache: %d x %d positions, %s, %.1f MiB", B, S, w.dtype, self.cache_bytes / 2**20
        )
        return self.cache_bytes

    def free_cache(self) -> None:
        """Drop the KV caches (the next cached forward allocates them again from ``args``)."""
        for layer in self.layers:
            layer.attention.cache = None

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the KV caches (0 when none is allocated)."""
        caches = [layer.attention.cache for layer in self.layers]
        return sum(c.nbytes for c in caches if c is not None)

    def _rope(self, end: int) -> Tensor:
        """The RoPE table, extended (outside inference mode) to hold positions up to ``end``."""
        if end > len(self.freqs_cis):
            with torch.inference_mode(False):
                self.freqs_cis = freqs_cis_from_args(
                    self.args, end, "cpu", self.freqs_cis.real.dtype
                )
        return self.freqs_cis

    def forward(
        self, tokens: Tensor, start_pos: int | None = None, logits_to_keep: int = 0
    ) -> Tensor:
        """Logits (B, T, V) in float32 for tokens (B, T) at positions ``start_pos`` .. + T - 1.

        ``start_pos=None``: causal forward over ``tokens`` alone, no cache, gradients enabled; an
        int: uses and fills the KV cache (allocated from ``args`` if missing), no gradients.
        ``logits_to_keep`` n > 0: logits of the last n positions only, (B, n, V) (transformers'
        name): sampling needs only the last; the output projection is a prefill's largest matmul.
        """
        pos = _check_inputs(tokens, start_pos, logits_to_keep)
        if pos is None:
            return self._forward(tokens, None, logits_to_keep)
        if self.layers[0].attention.cache is None:
            self.setup_cache()
        with torch.no_grad():
            return self._forward(tokens, pos, logits_to_keep)

    def _forward(self, tokens: Tensor, start_pos: int | None, logits_to_keep: int) -> Tensor:
        T, pos = tokens.shape[1], start_pos or 0
        h = self.tok_embeddings(tokens)  # (B, T, D)
        freqs_cis = self._rope(pos + T)[pos : pos + T].to(h.device)  # (T, Dh/2)
        mask = causal_mask(T, pos, device=h.device)  # (T, S) bool, or None when T == 1
        for layer in self.layers:
            h = layer(h, start_pos, freqs_cis, mask)  # (B, T, D)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]  # (B, n, D): only these positions need logits
        return upcast(self.output(self.norm(h)))  # (B, T or n, V) float32 (or float64)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02, generator: torch.Generator | None = None) -> None:
        """Fresh weights for training from scratch: N(0, std) matrices and embeddings, norms 1."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight.normal_(0.0, std, generator=generator)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)


def _check_fits(args: ModelArgs, device: Device, dtype: DType, real: torch.dtype) -> None:
    """Refuse a model whose weights (on ``device``) or RoPE table (on the CPU) cannot fit."""
    device = torch.device(device) if device is not None else torch.get_default_device()
    itemsize = (dtype or torch.get_default_dtype()).itemsize
    weights = 0 if device.type == "meta" else args.num_parameters() * itemsize
    rope = rope_table_bytes(2 * args.max_seq_len, args.head_dim, real)
    if device.type == "cpu":
        check_memory(
            "Transformer(args)", {"weights": weights, "RoPE table": rope}, "cpu", MEMORY_HINT
        )
    else:
        check_memory("Transformer(args)", {"weights": weights}, device, MEMORY_HINT)
        check_memory("Transformer(args)", {"RoPE table": rope}, "cpu", MEMORY_HINT)


def _check_inputs(tokens: Tensor, start_pos: int | None, logits_to_keep: int) -> int | None:
    """The public entry's cheap checks (the layers have none); ``start_pos`` as an int or None."""
    where = "Transformer.forward"
    if (
        isinstance(logits_to_keep, bool)
        or not isinstance(logits_to_keep, int)
        or logits_to_keep < 0
    ):
        raise ModelError(f"{where}: logits_to_keep must be an int >= 0, found {logits_to_keep!r}")
    if tokens.ndim != 2 or tokens.dtype.is_floating_point or tokens.dtype.is_complex:
        found = f"{tokens.dtype} {tuple(tokens.shape)}"
        raise ModelError(f"{where}: tokens must be integer (B, T), found {found}")
    if start_pos is None:
        return None
    try:  # int, numpy int, int tensor
        pos = -1 if isinstance(start_pos, bool) else operator.index(start_pos)
    except TypeError:
        pos = -1
    if pos < 0:
        raise ModelError(f"{where}: start_pos must be None or an int >= 0, found {start_pos!r}")
    return pos
