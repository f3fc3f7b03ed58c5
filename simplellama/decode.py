"""The decode loop over a KV cache: one request's token buffer, prefill, then one token per step.

Meta's scheme (``llama3/generation.py: generate``): all prompts are padded into one (B, total_len)
buffer; the first forward call runs positions [0, min_prompt_len) (prefill), then one position per
call (decode), each reusing the KV cache. Rows whose prompt is longer keep their prompt token at a
position instead of the sampled one, so a batch behaves like each prompt run alone. ``Llama``
(generation.py) turns text into prompts and the filled buffer back into text.

Shapes: B batch, T new tokens in a forward call, V vocabulary.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from .config import ModelArgs
from .errors import GenerationError
from .parallel import broadcast_
from .sampling import sample

__all__ = ["Batch", "check_request", "decode_steps"]


class Batch:
    """Token buffer of one generate() call: prompts left-aligned in (B, total_len), padding
    after."""

    def __init__(
        self, prompts: list[list[int]], total_len: int, device: torch.device, logprobs: bool
    ) -> None:
        B = len(prompts)
        self.prompt_lens = [len(p) for p in prompts]
        self.total_len = total_len
        # Padding is never fed to the model: a position is filled (prompt or sample) before it is
        # read.
        self.tokens = torch.zeros((B, total_len), dtype=torch.long, device=device)  # (B, total_len)
        for i, p in enumerate(prompts):
            self.tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long, device=device)
        lens = torch.tensor(self.prompt_lens, device=device)
        self.is_prompt = (
            torch.arange(total_len, device=device)[None, :] < lens[:, None]
        )  # (B, total_len)
        self.logprobs = torch.zeros((B, total_len), device=device) if logprobs else None
        self.done = torch.zeros(B, dtype=torch.bool, device=device)

    def results(
        self, echo: bool, stop: set[int], stops: list[int | None] | None = None
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        """Per prompt, the generated tokens (prompt + generated with ``echo``) up to the first
        generated stop token, and their logprobs (None unless recorded). ``stops``, if a list,
        gets the stop token that ended each prompt (None: the length limit)."""
        all_tokens = self.tokens.tolist()
        all_logprobs = self.logprobs.tolist() if self.logprobs is not None else None
        out_tokens, out_logprobs = [], []
        max_gen = self.total_len - max(self.prompt_lens)
        for i, n in enumerate(self.prompt_lens):
            start, end = (0 if echo else n), n + max_gen
            toks = all_tokens[i][start:end]
            # cut at the first stop token among the *generated* ones (an echoed prompt may have one)
            cut = next((j for j in range(n - start, len(toks)) if toks[j] in stop), len(toks))
            out_tokens.append(toks[:cut])
            if stops is not None:
                stops.append(toks[cut] if cut < len(toks) else None)
            if all_logprobs is not None:
                out_logprobs.append(all_logprobs[i][start:end][:cut])
        return out_tokens, (out_logprobs if all_logprobs is not None else None)


def check_request(
    prompt_tokens: Sequence[Sequence[int]], max_gen_len: int | None, args: ModelArgs
) -> int:
    """Check a request against the model (the boundary's checks: the model itself has none beyond
    argument types); returns the number of positions it needs, longest prompt + max_gen_len."""
    if not prompt_tokens:
        raise GenerationError("generate: no prompts given (prompt_tokens is empty)")
    for i, p in enumerate(prompt_tokens):
        if not p:
            raise GenerationError(
                f"generate: prompt {i} is empty (0 tokens); give at least one token"
            )
        bad = next((t for t in p if not _is_token_id(t, args.vocab_size)), None)
        if bad is not None:
            raise GenerationError(
                f"generate: prompt {i} holds {bad!r}, not a token id in 0..{args.vocab_size - 1}"
            )
    if len(prompt_tokens) > args.max_batch_size:
        raise GenerationError(
            f"generate: {len(prompt_tokens)} prompts exceed max_batch_size={args.max_batch_size}"
        )
    max_prompt = max(len(p) for p in prompt_tokens)
    room = args.max_seq_len - max_prompt
    if room < 0:
        raise GenerationError(
            f"prompt of {max_prompt} tokens exceeds max_seq_len={args.max_seq_len}"
        )
    if max_gen_len is None:
        max_gen_len = room
    if max_gen_len < 0:
        raise GenerationError(f"max_gen_len: expected >= 0, found {max_gen_len}")
    if max_gen_len > room:
        raise GenerationError(
            f"prompt ({max_prompt} tokens) + max_gen_len ({max_gen_len}) = "
            f"{max_prompt + max_gen_len} "
            f"exceeds max_seq_len={args.max_seq_len}"
        )
    return max_prompt + max_gen_len


def _is_token_id(t: object, vocab_size: int) -> bool:
    try:
        return (
            not isinstance(t, bool) and 0 <= operator.index(t) < vocab_size
        )  # int, numpy int, int tensor
    except TypeError:
        return False


def _finite(logits: torch.Tensor, pos: int, where: str) -> torch.Tensor:
    """``logits`` (B, V) if all finite: sampling from NaN/Inf gives torch's "probability tensor
    contains either inf, nan" or, greedy, a meaningless argmax."""
    if not bool(torch.isfinite(logits).all()):
        row = int((~torch.isfinite(logits)).any(-1).nonzero()[0, 0])
        raise GenerationError(
            f"{where}: the logits of prompt {row} at position {pos} are not finite (NaN or Inf): "
            "non-finite weights, or an overflow in this dtype (try float32); nothing was sampled"
        )
    return logits


def decode_steps(
    model: torch.nn.Module,
    batch: Batch,
    stop_tokens: Sequence[int],
    temperature: float,
    top_p: float,
    top_k: int | None,
    generator: torch.Generator | None,
    n_words: int | None = None,
    where: str = "generate",
) -> Iterator[int]:
    """Fill ``batch.tokens`` position by position; yields each position once it holds a token.

    ``n_words``: sample only ids below it (a tokenizer smaller than a padded embedding table
    cannot decode the rest). ``where`` begins error messages (e.g. the checkpoint's path)."""
    tokens, min_len, device = batch.tokens, min(batch.prompt_lens), batch.tokens.device
    stop = torch.tensor(sorted(stop_tokens), device=device)
    if min_len == batch.total_len:  # nothing to generate: score the prompts (echo + logprobs)
        if batch.logprobs is not None:
            logits = model(tokens, 0)  # (B, S, V)
            batch.logprobs[:, 1:] = -F.cross_entropy(
                logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none"
            )
        return
    prev_pos, max_len = 0, max(batch.prompt_lens)
    keep = (
        0 if batch.logprobs is not None else 1
    )  # logprobs need every position's logits, sampling the last
    parallel = bool(getattr(model, "model_parallel", None))
    for cur_pos in range(min_len, batch.total_len):
        logits = model(
            tokens[:, prev_pos:cur_pos], prev_pos, keep
        )  # (B, T or 1, V): prefill, then T = 1
        last = _finite(logits[:, -1, :n_words], cur_pos, where)  # (B, V) or (B, n_words)
        next_token = sample(last, temperature, top_p, top_k, generator)  # (B,)
        if parallel:  # all ranks continue with rank 0's tokens
            broadcast_(next_token)
        if cur_pos < max_len:  # rows whose prompt reaches this position keep their prompt token
            next_token = torch.where(batch.is_prompt[:, cur_pos], tokens[:, cur_pos], next_token)
        tokens[:, cur_pos] = next_token
        if (
            batch.logprobs is not None
        ):  # log p(token at t+1 | tokens <= t) for the positions just computed
            target = tokens[:, prev_pos + 1 : cur_pos + 1]  # (B, T)
            batch.logprobs[:, prev_pos + 1 : cur_pos + 1] = -F.cross_entropy(
                logits.transpose(1, 2), target, reduction="none"
            )
        batch.done |= ~batch.is_prompt[:, cur_pos] & torch.isin(next_token, stop)
        yield cur_pos
        prev_pos = cur_pos
        if bool(batch.done.all()):
            break
