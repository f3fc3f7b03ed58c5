"""Rotary position embeddings (RoPE) with Llama 3.1/3.2 frequency scaling.

RoPE (Su et al. 2021, "RoFormer", section 3.4) rotates each pair of query/key features by an angle
``pos * freq_i`` with ``freq_i = theta ** (-2i / Dh)``. A rotation keeps lengths, and the dot
product of a rotated query at position m with a rotated key at position n depends only on ``m - n``.

Two layouts of "which features form a pair" exist, and both are in the wild:

* **interleaved / complex form** (Meta's reference code, GGUF files): pairs are neighbours
  ``(x[2i], x[2i+1])``, read as one complex number ``x[2i] + 1j * x[2i+1]`` and multiplied by
  ``exp(1j * pos * freq_i)``. This is the form the model in this package uses
  (``apply_rotary_emb``).
  ``apply_rotary_emb_real`` computes the same rotation of the same pairs in real arithmetic,
  ``(x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos)``, from ``rope_cos_sin`` tables: what
  ``torch.compile`` can generate code for (it has no complex kernels), used by ``compiled.py``.
* **rotate-half form** (HF transformers): pairs are ``(x[i], x[i + Dh/2])``, computed with real
  cos/sin tensors: ``x * cos + rotate_half(x) * sin`` (``apply_rotary_emb_rotate_half``).

Why HF checkpoints store q/k rows permuted: row r of ``wq`` makes feature r of each query. HF's
conversion script (``convert_llama_weights_to_hf.py: permute``) reorders the rows of ``wq``/``wk``
inside each head, Meta row ``2i`` -> HF row ``i`` and Meta row ``2i+1`` -> HF row ``i + Dh/2``, so
that the rotate-half form rotates exactly the pairs Meta's complex form rotates. Attention only
needs ``q . k``, which does not change when q and k get the same feature permutation, so both
layouts give identical outputs, provided the weights match the form. ``wv`` and ``wo`` are never
permuted. Loading HF q/k weights into the complex form without undoing the permutation
(``hf_to_meta_qk``) rotates the wrong pairs: outputs look plausible for a few tokens, then drift.

Llama 3.1 frequency scaling (Meta ``llama_models/llama3/model.py: apply_scaling``; HF
``modeling_rope_utils._compute_llama3_parameters``), with wavelength ``w_i = 2 pi / freq_i`` and the
original context length L (8192)::

    w_i < L / high_freq_factor                 keep freq_i            (fine, local positions)
    w_i > L / low_freq_factor                  freq_i / factor        (coarse, long-range)
    otherwise   smooth = (L / w_i - low) / (high - low)
                freq_i = (1 - smooth) * freq_i / factor + smooth * freq_i

Meta's code hard-codes factor 8, right for Llama 3.1 but not for Llama 3.2 1B/3B (factor 32): here
every value comes from ``ModelArgs``.

Shapes: B batch, T new tokens, S positions, H heads, Dh head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import ModelArgs
from .errors import RopeError
from .norm import upcast

Device = torch.device | str | None
DType = torch.dtype

__all__ = [
    "RopeError", "apply_llama3_scaling", "precompute_freqs_cis", "rope_frequencies",
    "rope_description", "freqs_cis_from_args", "rope_cos_sin", "apply_rotary_emb",
    "apply_rotary_emb_real", "apply_rotary_emb_rotate_half",
    "rotate_half", "hf_to_meta_qk", "meta_to_hf_qk",
]  # fmt: skip


def apply_llama3_scaling(
    freqs: Tensor, factor: float, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0,
    original_max_seq_len: int = 8192,
) -> Tensor:  # fmt: skip
    """Llama 3.1/3.2 frequency scaling of inverse frequencies ``freqs`` (Dh/2,) -> (Dh/2,)."""
    low_freq_wavelen = original_max_seq_len / low_freq_factor  # longer waves: divide by factor
    high_freq_wavelen = original_max_seq_len / high_freq_factor  # shorter waves: keep
    wavelen = 2 * math.pi / freqs
    scaled = torch.where(wavelen > low_freq_wavelen, freqs / factor, freqs)
    smooth = (original_max_seq_len / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, blended, scaled)


def _inv_freq(
    head_dim: int, theta: float, device: Device = None, dtype: DType = torch.float32
) -> Tensor:
    """Unscaled inverse frequencies ``theta ** (-2i / Dh)``, float32 (or float64), (Dh/2,)."""
    if head_dim <= 0 or head_dim % 2:
        raise RopeError(f"rope: head_dim must be a positive even number, found {head_dim}")
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=dtype) / head_dim  # (Dh/2,)
    return 1.0 / (theta**exponents)


def precompute_freqs_cis(
    head_dim: int,
    end: int,
    theta: float = 500000.0,
    *,
    scaling_factor: float | None = None,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_max_seq_len: int = 8192,
    device: Device = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Unit complex numbers ``exp(1j * pos * freq_i)``, positions 0..end-1: complex64 (end, Dh/2).

    ``scaling_factor=None`` means plain RoPE (Llama 3.0); a number applies Llama 3.1 scaling.
    ``dtype=torch.float64`` gives a complex128 table (float64 reference checks); Meta uses float32.
    """
    freqs = _inv_freq(head_dim, theta, device, dtype)  # (Dh/2,)
    if scaling_factor is not None:
        freqs = apply_llama3_scaling(
            freqs, scaling_factor, low_freq_factor, high_freq_factor, original_max_seq_len
        )
    return _polar(freqs, end)


def _polar(freqs: Tensor, end: int) -> Tensor:
    t = torch.arange(end, device=freqs.device, dtype=freqs.dtype)  # (S,)
    angles = torch.outer(t, freqs)  # (S, Dh/2)
    return torch.polar(torch.ones_like(angles), angles)  # (S, Dh/2) complex


def rope_frequencies(
    args: ModelArgs, device: Device = None, dtype: DType = torch.float32
) -> Tensor:
    """A model's inverse frequencies, scaled if ``args.use_scaled_rope``: float32 (Dh/2,)."""
    freqs = _inv_freq(args.head_dim, args.rope_theta, device, dtype)  # (Dh/2,)
    if not args.use_scaled_rope:
        return freqs
    a = args
    low, high, length = a.rope_low_freq_factor, a.rope_high_freq_factor, a.rope_original_max_seq_len
    return apply_llama3_scaling(freqs, a.rope_scaling_factor, low, high, length)


def freqs_cis_from_args(
    args: ModelArgs, end: int | None = None, device: Device = None, dtype: DType = torch.float32
) -> Tensor:
    """``precompute_freqs_cis`` driven by ``ModelArgs``: complex (end or args.max_seq_len, Dh/2)."""
    return _polar(rope_frequencies(args, device, dtype), args.max_seq_len if end is None else end)


def rope_cos_sin(freqs_cis: Tensor) -> tuple[Tensor, Tensor]:
    """The table ``freqs_cis`` (S, Dh/2) as real tensors: cos (S, Dh/2) and sin (S, Dh/2) of the
    angles ``pos * freq_i`` (the same numbers: its real and imaginary parts)."""
    return freqs_cis.real.contiguous(), freqs_cis.imag.contiguous()


def rope_description(args: ModelArgs) -> str:
    """One line naming the RoPE variant a model uses (logged when the model is built)."""
    if not args.use_scaled_rope:
        return f"RoPE theta={args.rope_theta:g}, no frequency scaling (Llama 3.0 style)"
    return (
        f"RoPE theta={args.rope_theta:g}, Llama 3.1 scaling factor={args.rope_scaling_factor:g} "
        f"low_freq_factor={args.rope_low_freq_factor:g} "
        f"high_freq_factor={args.rope_high_freq_factor:g} "
        f"original_max_seq_len={args.rope_original_max_seq_len}"
    )


def _check(xq: Tensor, xk: Tensor, freqs_cis: Tensor) -> None:
    for name, x in (("xq", xq), ("xk", xk)):
        T, half = freqs_cis.shape
        if x.ndim != 4 or x.shape[1] != T or x.shape[-1] != 2 * half:
            raise RopeError(
                f"rope: {name} must be (B, T, heads, Dh) with T={freqs_cis.shape[0]} and "
                f"Dh={2 * freqs_cis.shape[-1]} to match freqs_cis {tuple(freqs_cis.shape)}, found "
                f"{tuple(x.shape)}"
            )


def apply_rotary_emb(xq: Tensor, xk: Tensor, freqs_cis: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate interleaved pairs of q (B, T, H, Dh) and k (B, T, K, Dh) by freqs_cis (T, Dh/2),
    Meta's form.

    Computed in float32 (float64 inputs stay float64); results have the input dtypes.
    """
    _check(xq, xk, freqs_cis)
    rot = freqs_cis[None, :, None, :]  # (1, T, 1, Dh/2): same rotation for every batch row and head
    xq_c = torch.view_as_complex(
        upcast(xq).reshape(*xq.shape[:-1], -1, 2)
    )  # (B, T, H, Dh/2) complex
    xk_c = torch.view_as_complex(
        upcast(xk).reshape(*xk.shape[:-1], -1, 2)
    )  # (B, T, K, Dh/2) complex
    xq_out = torch.view_as_real(xq_c * rot).flatten(3)  # (B, T, H, Dh/2, 2) -> (B, T, H, Dh)
    xk_out = torch.view_as_real(xk_c * rot).flatten(3)  # (B, T, K, Dh)
    return xq_out.type_as(xq), xk_out.type_as(xk)


def apply_rotary_emb_real(
    xq: Tensor, xk: Tensor, cos: Tensor, sin: Tensor
) -> tuple[Tensor, Tensor]:
    """``apply_rotary_emb`` in real arithmetic: the same interleaved pairs, the same rotation.

    q (B, T, H, Dh), k (B, T, K, Dh), cos and sin (T, Dh/2) (``rope_cos_sin``). The complex
    product ``(x0 + 1j x1) (cos + 1j sin)`` written out: ``x0 cos - x1 sin``, ``x0 sin + x1 cos``.
    Computed in float32 (float64 stays float64); results have the input dtypes.
    """
    T, half = cos.shape
    c, s = cos[:, None, :], sin[:, None, :]  # (T, 1, Dh/2): same for every batch row and head

    def rotate(x: Tensor, name: str) -> Tensor:
        if x.ndim != 4 or x.shape[1] != T or x.shape[-1] != 2 * half:
            found = tuple(x.shape)
            raise RopeError(f"rope: {name} must be (B, {T}, heads, {2 * half}), found {found}")
        pairs = upcast(x).unflatten(-1, (half, 2))  # (B, T, heads, Dh/2, 2)
        x0, x1 = pairs[..., 0], pairs[..., 1]  # (B, T, heads, Dh/2) each
        out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)  # (B, T, heads, Dh/2, 2)
        return out.flatten(3).type_as(x)  # (B, T, heads, Dh)

    return rotate(xq, "xq"), rotate(xk, "xk")


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dim: multiplication by 1j in the rotate-half layout."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., Dh/2) each
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_emb_rotate_half(
    xq: Tensor, xk: Tensor, freqs_cis: Tensor
) -> tuple[Tensor, Tensor]:
    """The same rotation for q/k in HF's rotate-half layout (pairs ``(i, i + Dh/2)``), for teaching
    and tests.

    ``apply_rotary_emb_rotate_half(perm(x)) == perm(apply_rotary_emb(x))`` with ``perm`` =
    ``meta_to_hf_qk`` applied to each head's features.
    """
    _check(xq, xk, freqs_cis)
    cos = torch.cat((freqs_cis.real, freqs_cis.real), dim=-1)[None, :, None, :]  # (1, T, 1, Dh)
    sin = torch.cat((freqs_cis.imag, freqs_cis.imag), dim=-1)[None, :, None, :]  # (1, T, 1, Dh)
    q, k = upcast(xq), upcast(xk)
    xq_out = q * cos + rotate_half(q) * sin
    xk_out = k * cos + rotate_half(k) * sin
    return xq_out.type_as(xq), xk_out.type_as(xk)


def _check_rows(w: Tensor, n_heads: int, fn: str) -> int:
    if n_heads <= 0 or w.ndim < 1 or w.shape[0] % (2 * n_heads):
        raise RopeError(
            f"{fn}: weight rows ({tuple(w.shape)[:1]}) must split into n_heads={n_heads} heads of "
            "even size"
        )
    return w.shape[0] // n_heads // 2


def meta_to_hf_qk(w: Tensor, n_heads: int) -> Tensor:
    """Reorder wq/wk rows (H*Dh, D) (or any (H*Dh, ...)) from Meta's interleaved layout to HF's
    rotate-half one.

    Within each head, row ``2i`` goes to ``i`` and row ``2i+1`` to ``i + Dh/2``. Use ``n_kv_heads``
    for wk.
    """
    half = _check_rows(w, n_heads, "meta_to_hf_qk")
    rest = w.shape[1:]
    # (H*Dh, ...) -> (H, Dh/2, 2, ...) -> (H, 2, Dh/2, ...) -> (H*Dh, ...)
    return w.reshape(n_heads, half, 2, *rest).transpose(1, 2).reshape(w.shape)


def hf_to_meta_qk(w: Tensor, n_heads: int) -> Tensor:
    """Inverse of ``meta_to_hf_qk``: HF rotate-half rows back to Meta's interleaved rows."""
    half = _check_rows(w, n_heads, "hf_to_meta_qk")
    rest = w.shape[1:]
    # (H*Dh, ...) -> (H, 2, Dh/2, ...) -> (H, Dh/2, 2, ...) -> (H*Dh, ...)
    return w.reshape(n_heads, 2, half, *rest).transpose(1, 2).reshape(w.shape)
