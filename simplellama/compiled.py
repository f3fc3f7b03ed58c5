"""A compiled one-token decode step: ``torch.compile`` of the model with the position as a tensor.

A decode step of a small model spends much of its time outside the matmuls, in about a thousand
small eager ops (norms, RoPE, views, softmax), each a Python call and a kernel launch. Compiling the
step fuses them into a few generated C++ loops. The eager ``Transformer.forward`` cannot be
compiled as it is (its T = 1 case, ``model.py``):

* ``start_pos`` is a Python int: dynamo specialises on it and recompiles at every position;
* the cache is read as ``cache[:, :start_pos + 1]``: the shapes change every step;
* RoPE multiplies complex numbers, for which inductor generates no code.

``decode_step`` here is the same computation, written with static shapes, and the tests assert
it equals the eager model (``tests/test_compiled.py``)::

    pos   = tensor([start_pos])                     a tensor: one graph for every position
    q, k  = rope(q, k, cos[pos], sin[pos])          real arithmetic (rope.apply_rotary_emb_real)
    k, v  = cache.update_at(pos, k, v)              index_copy_; all max_seq_len positions
    out   = attend(q, k, v, mask = arange(S) <= pos)   positions not written yet are masked

It calls the model's own modules, so quantized layers (``quantize.py``) swapped in run too: their
packed kernels are aten ops with shape functions, which inductor calls as external kernels.
Prefill stays eager (its matmuls dominate, and T varies).

The graph is specialised on the batch size and the cache length (``dynamic=False``: static shapes
generate the tightest loops). ``CompiledDecoder.setup_cache`` sizes the cache in powers of two of
at least 256 positions and keeps it while it is large enough, so a session compiles a handful of
times at most (each first compile takes tens of seconds, logged; the attention reads at most twice
the positions needed; past ``torch._dynamo.config.recompile_limit``, 8 shapes per process,
dynamo warns and runs the step eagerly). ``make bench`` measures eager against compiled decode
(its "+compile" rows).

Shapes: B batch, S cache length (max_seq_len of the cache), D model dim, V vocab, Dh head dim.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from LogRelay import get_relay

from .attention import Attention, attend
from .errors import ModelError
from .model import Transformer
from .norm import upcast
from .rope import apply_rotary_emb_real, rope_cos_sin

__all__ = ["CompiledDecoder", "decode_step", "cache_length", "COMPILE_OPTIONS"]

log = get_relay("simplellama.compiled")

MIN_CACHE = 256  # the smallest cache CompiledDecoder.setup_cache allocates (positions)
# inductor options: the defaults. mode="reduce-overhead" means CUDA graphs (nothing on a CPU);
# cpp_wrapper=True (C++, not Python, calls the kernels) had not compiled SmolLM2 after 15 minutes
# on a loaded 2-core machine; the matmuls are extern calls (one-row GEMVs, packed kernels) anyway.
COMPILE_OPTIONS: dict = {}


def _attention_step(
    a: Attention, x: Tensor, pos: Tensor, cos: Tensor, sin: Tensor, mask: Tensor
) -> Tensor:
    """``Attention.forward`` of one new token at position ``pos`` (1,): x (B, 1, D) -> (B, 1, D)."""
    B = x.shape[0]
    xq = a.wq(x).view(B, 1, a.n_heads, a.head_dim)  # (B, 1, H*Dh) -> (B, 1, H, Dh)
    xk = a.wk(x).view(B, 1, a.n_kv_heads, a.head_dim)  # (B, 1, K, Dh)
    xv = a.wv(x).view(B, 1, a.n_kv_heads, a.head_dim)  # (B, 1, K, Dh)
    xq, xk = apply_rotary_emb_real(xq, xk, cos, sin)
    keys, values = a.cache.update_at(pos, xk, xv)  # (B, S, K, Dh): every cached position
    q, k, v = xq.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2)  # (B, heads, ., Dh)
    out = attend(q, k, v, mask)  # (B, H, 1, Dh)
    return a.wo(out.transpose(1, 2).reshape(B, 1, -1))  # (B, 1, H*Dh) -> (B, 1, D)


def decode_step(
    model: Transformer, tokens: Tensor, pos: Tensor, cos: Tensor, sin: Tensor
) -> Tensor:
    """Logits (B, 1, V) float32 of tokens (B, 1) at position ``pos`` (1,) int64, using the cache.

    ``cos``, ``sin`` (S, Dh/2): ``rope_cos_sin`` of the model's RoPE table for the S cache
    positions. Equals ``model(tokens, start_pos)``; no shape depends on the position.
    """
    S = cos.shape[0]
    h = model.tok_embeddings(tokens)  # (B, 1, D)
    c, s = cos[pos], sin[pos]  # (1, Dh/2): the rotation of this position
    mask = (torch.arange(S, device=h.device) <= pos)[None]  # (1, S): keys at positions <= pos
    for layer in model.layers:
        h = h + _attention_step(layer.attention, layer.attention_norm(h), pos, c, s, mask)
        h = h + layer.feed_forward(layer.ffn_norm(h))  # (B, 1, D)
    return upcast(model.output(model.norm(h)))  # (B, 1, V)


def cache_length(needed: int, limit: int) -> int:
    """Positions of a cache serving ``needed``: the next power of two >= ``MIN_CACHE``, capped at
    ``limit`` (the model's max_seq_len) unless ``needed`` is larger."""
    length = MIN_CACHE
    while length < needed:
        length *= 2
    return max(needed, min(length, limit))


class CompiledDecoder:
    """``model(tokens, start_pos)`` with the one-token steps compiled (``torch.compile``).

    ``decoder(tokens (B, T), start_pos: int, logits_to_keep=0) -> logits (B, T or n, V)`` float32,
    like ``Transformer.forward`` with a cache: T = 1 runs the compiled ``decode_step``, longer
    calls (prefill) the eager model. Size the cache with ``decoder.setup_cache(B, S)`` (reuses a
    large enough one, so the compiled graph is reused) or ``model.setup_cache`` (exact size).

    If compiling fails (e.g. no C++ compiler for inductor's CPU backend), a warning says why and
    every step runs eagerly. ``eager`` tells which.
    """

    def __init__(self, model: Transformer, mode: str | None = None, options: dict | None = None):
        if getattr(model, "model_parallel", None):
            raise ModelError("CompiledDecoder: compiling a model-parallel model is not supported")
        self.model = model
        self.eager = False
        self._compiled_for: set[tuple] = set()  # (B, S, dtype, device) already compiled
        self._tables: tuple | None = None  # (S, device, cos, sin)
        options = COMPILE_OPTIONS if options is None and mode is None else options
        self._step = torch.compile(
            decode_step, fullgraph=True, dynamic=False, mode=mode, options=options
        )

    def setup_cache(self, max_batch_size: int, max_seq_len: int) -> int:
        """A cache for at least B x S positions: the current one if large enough, else a new one
        of ``cache_length(S)`` positions; returns its bytes."""
        cache = self.model.layers[0].attention.cache
        w, limit = self.model.tok_embeddings.weight, self.model.args.max_seq_len
        fits = (  # one of the lengths this allocates (not an exact-size one of model.setup_cache)
            cache is not None
            and cache.max_batch_size == max_batch_size
            and cache.max_seq_len >= max_seq_len
            and cache.max_seq_len == cache_length(cache.max_seq_len, limit)
            and cache.cache_k.dtype == w.dtype
            and cache.cache_k.device == w.device
        )
        if fits:
            return self.model.cache_bytes
        length = cache_length(max_seq_len, limit)
        return self.model.setup_cache(max_batch_size, length)

    def _cos_sin(self, S: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if self._tables is None or self._tables[:2] != (S, device):
            freqs_cis = self.model.freqs_cis[:S]  # setup_cache extended it to S positions
            self._tables = (S, device, *(t.to(device) for t in rope_cos_sin(freqs_cis)))
        return self._tables[2], self._tables[3]

    def __call__(self, tokens: Tensor, start_pos: int, logits_to_keep: int = 0) -> Tensor:
        """Logits (B, T or n, V) float32 of tokens (B, T) at positions ``start_pos`` ..."""
        if tokens.ndim != 2 or tokens.shape[1] != 1 or self.eager:
            return self.model(tokens, start_pos, logits_to_keep)
        model = self.model
        if model.layers[0].attention.cache is None:
            model.setup_cache()
        cache = model.layers[0].attention.cache
        B, S = tokens.shape[0], cache.max_seq_len
        pos = _position(start_pos, S, B, cache.max_batch_size)
        cos, sin = self._cos_sin(S, cache.cache_k.device)
        pos_t = torch.tensor([pos], device=cache.cache_k.device)  # (1,) int64
        # a column of a (B, L) buffer has strides (L, 1): copied, the compiled graph sees (1, 1)
        tokens = tokens.new_empty((B, 1)).copy_(tokens)
        key = (B, S, cache.cache_k.dtype, cache.cache_k.device)
        with torch.no_grad():
            if key in self._compiled_for:
                return self._step(model, tokens, pos_t, cos, sin)
            return self._first_call(key, tokens, pos, pos_t, cos, sin)

    def _first_call(self, key, tokens, pos, pos_t, cos, sin) -> Tensor:  # noqa: ANN001
        B, S, dtype, device = key
        what = f"compiling the decode step for batch {B}, cache {S}, {dtype} on {device}"
        log.info("%s (tens of seconds, once per shape)", what)
        try:
            with log.busy(what):
                logits = self._step(self.model, tokens, pos_t, cos, sin)
        except Exception as e:  # noqa: BLE001 (any failure of the compiler: decode eagerly)
            msg = " ".join(str(e).split())[:300]
            log.warning("torch.compile failed, decoding eagerly: %s: %s", type(e).__name__, msg)
            self.eager = True
            return self.model(tokens, pos)
        self._compiled_for.add(key)
        return logits


def _position(start_pos: int, S: int, B: int, max_batch: int) -> int:
    where = "CompiledDecoder"
    try:  # int, numpy int, int tensor
        pos = -1 if isinstance(start_pos, bool) else operator.index(start_pos)
    except TypeError:
        pos = -1
    if not 0 <= pos < S:
        raise ModelError(
            f"{where}: start_pos must be an int in 0..{S - 1} (cache), found {start_pos!r}"
        )
    if B > max_batch:
        raise ModelError(f"{where}: batch {B} exceeds the cache's max_batch_size {max_batch}")
    return pos
