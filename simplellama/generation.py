"""Text generation: Meta's ``Llama`` API (build, generate, text/chat completion) and streaming.

The API mirrors Meta's ``llama3/generation.py`` (the original meta-llama/llama3 repo):
``Llama.build(...)``, ``generate(prompt_tokens, max_gen_len, ...) -> (tokens, logprobs)``,
``text_completion`` and ``chat_completion``, so Meta's example scripts run after changing
their import to ``simplellama``. Additions: top-k, a seeded ``torch.Generator``, streaming
(``stream_text_completion`` / ``stream_chat_completion``), and clear errors instead of asserts.

The decode loop (prefill, then one token per step over the KV cache) is in ``decode.py``; sampling
(greedy, temperature, top-k, top-p) in ``sampling.py`` (its names are re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypedDict

import torch

from LogRelay import get_relay

from .chat_format import ChatFormat, ChatTemplate, Dialog, Message, stop_reason
from .checkpoint import check_tokenizer, load_for_inference
from .compiled import CompiledDecoder
from .decode import Batch, check_request, decode_steps
from .devices import pick_device, pick_dtype
from .errors import ChatFormatError, CheckpointError, GenerationError
from .sampling import sample, sample_greedy, sample_top_p, top_k_probs, top_p_probs
from .tokenizer import Tokenizer, load_tokenizer, stream_text

# the sampling functions live in sampling.py; re-exported here
__all__ = [
    "GenerationError", "Message", "Dialog", "CompletionPrediction", "ChatPrediction", "Llama",
    "sample_greedy", "top_k_probs", "top_p_probs", "sample_top_p", "sample",
]  # fmt: skip

log = get_relay("simplellama.generation")


class CompletionPrediction(TypedDict, total=False):
    generation: str
    tokens: list[str]  # only with logprobs=True
    logprobs: list[float]  # only with logprobs=True


class ChatPrediction(TypedDict, total=False):
    generation: Message
    tokens: list[str]
    logprobs: list[float]


class Llama:
    """A loaded model ready to generate: ``.model`` (Transformer), ``.tokenizer``, ``.formatter``
    (ChatFormat / ChatTemplate, or None when the checkpoint has no chat layout)."""

    def __init__(
        self, model, tokenizer, args, formatter=None, seed: int = 1, source=None, compile=False
    ) -> None:
        self.model, self.tokenizer, self.args, self.formatter = model, tokenizer, args, formatter
        # compile: one-token decode steps through torch.compile (compiled.py), prefill eager
        self.decoder = CompiledDecoder(model) if compile else model
        self.source = source  # the checkpoint's path, named by errors during generation
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @staticmethod
    def build(
        ckpt_dir: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        max_seq_len: int = 2048,
        max_batch_size: int = 4,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        seed: int = 1,
        model_parallel_size: int | None = None,
        special_in_content: bool = False,
        quantize: str | None = None,
        group_size: int = 32,
        compile: bool = False,
    ) -> Llama:
        """Load a checkpoint (Meta dir, HF dir or GGUF file) and its tokenizer.

        Args:
            ckpt_dir: checkpoint path; None loads the embedded SmolLM2 GGUF.
            tokenizer_path: tokenizer file; None uses the one beside (or inside) the checkpoint.
            max_seq_len: longest prompt + generation served.
            max_batch_size: most prompts per ``generate`` call (completions split longer lists).
            device: None -> CUDA if available else CPU.
            dtype: None -> float32 on CPU, bfloat16 (or float16) on CUDA.
            seed: seed of the sampling generator.
            model_parallel_size: ranks sharing the model (default: torchrun's world size, else 1);
                > 1 loads this rank's slice (``checkpoint/sharded.py``).
            special_in_content: with a checkpoint's chat template, encode special-token text in
                message content as control tokens, as transformers does (default: as text, so a
                user message cannot forge a turn; see ``ChatTemplate``).
            quantize: None (float weights), ``"int8"``, ``"int4"`` (quantized while loading), or
                ``"auto"`` (a GGUF file's Q4_0/Q4_1/Q8_0 blocks kept packed, float checkpoints
                left float); see ``checkpoint/quantized.py``.
            group_size: inputs per int4 scale (32, 64, 128 or 256).
            compile: run the one-token decode steps through ``torch.compile`` (``compiled.py``;
                the first step of each batch size and cache length compiles, tens of seconds).
        """
        device = pick_device(device)
        dtype = pick_dtype(device, dtype)
        t0 = time.perf_counter()
        ckpt, model = load_for_inference(
            ckpt_dir, device, dtype, model_parallel_size, with_tokenizer=not tokenizer_path,
            max_seq_len=max_seq_len, max_batch_size=max_batch_size,
            quantize=quantize, group_size=group_size,
        )  # fmt: skip
        path = ckpt.path
        tokenizer = ckpt.tokenizer  # checked against the model by the loader
        if tokenizer_path:
            tokenizer = check_tokenizer(
                load_tokenizer(tokenizer_path), ckpt.args, str(tokenizer_path)
            )
        if tokenizer is None:
            found = "(tokenizer.model or tokenizer.json): pass tokenizer_path"
            raise CheckpointError(f"{path}: no tokenizer found with the checkpoint {found}")
        if ckpt.chat_template:
            try:
                formatter = ChatTemplate(
                    ckpt.chat_template, tokenizer, special_in_content=special_in_content
                )
            except ChatFormatError as e:  # a template that does not compile: name the checkpoint
                raise ChatFormatError(f"{path}: chat template: {e}") from None
        else:
            formatter = ChatFormat(tokenizer) if isinstance(tokenizer, Tokenizer) else None
        took = time.perf_counter() - t0
        weights = f"{dtype}, quantize={quantize}" if quantize else dtype
        log.info("loaded %s (%s, %s, %s) in %.1f s", path, ckpt.format, weights, device, took)
        return Llama(
            model, tokenizer, ckpt.args, formatter, seed=seed, source=path, compile=compile
        )

    # ---- the decode loop (decode.py) ----

    def _steps(self, prompts, max_gen_len, logprobs, temperature, top_p, top_k) -> tuple:
        """Check a request, size the KV cache from it; (its token buffer, the steps filling it)."""
        prompts = [list(p) for p in prompts]
        total_len = check_request(prompts, max_gen_len, self.args)
        self.decoder.setup_cache(len(prompts), total_len)  # sized from this request, logged
        batch = Batch(prompts, total_len, self.device, logprobs)
        stop = self.tokenizer.stop_tokens
        where = "generate" if self.source is None else f"{self.source}: generate"
        steps = decode_steps(self.decoder, batch, stop, temperature, top_p, top_k, self.generator,
                             self.tokenizer.n_words, where)  # fmt: skip
        return batch, steps

    @torch.inference_mode()
    def generate(
        self,
        prompt_tokens: Sequence[Sequence[int]],
        max_gen_len: int | None,
        temperature: float = 0.6,
        top_p: float = 0.9,
        top_k: int | None = None,
        logprobs: bool = False,
        echo: bool = False,
        *,
        stops: list[int | None] | None = None,
    ) -> tuple[list[list[int]], list[list[float]] | None]:
        """Continue each prompt (Meta's ``Llama.generate``).

        Args:
            prompt_tokens: one list of token ids per prompt (lengths may differ).
            max_gen_len: most new tokens per prompt; None fills the context (max_seq_len).
            temperature, top_p, top_k: see :func:`sample`; temperature 0 is greedy.
            logprobs: also return log p(token | prefix) for every returned token.
            echo: return the prompt tokens too (their first logprob is 0: nothing precedes it).
            stops: if a list, gets one entry per prompt: the stop token that ended it, or None
                (the length limit).

        Returns:
            (tokens, logprobs): per prompt, the new tokens (prompt + new with ``echo``) up to and
            excluding the first stop token; logprobs None unless requested.
        """
        batch, steps = self._steps(prompt_tokens, max_gen_len, logprobs, temperature, top_p, top_k)
        for _ in steps:
            pass
        return batch.results(echo, set(self.tokenizer.stop_tokens), stops)

    @torch.inference_mode()
    def generate_stream(
        self,
        prompt_tokens: Sequence[int],
        max_gen_len: int | None = None,
        temperature: float = 0.6,
        top_p: float = 0.9,
        top_k: int | None = None,
    ) -> Iterator[int]:
        """Yield the new token ids of one prompt as they are produced (not the stop token)."""
        batch, steps = self._steps([prompt_tokens], max_gen_len, False, temperature, top_p, top_k)
        stop = set(self.tokenizer.stop_tokens)
        for pos in steps:
            if pos >= batch.prompt_lens[0]:
                token = int(batch.tokens[0, pos])
                if token in stop:
                    return
                yield token

    # ---- text and chat ----

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a text prompt, with BOS as Meta's ``text_completion`` does (unless the
        tokenizer adds none: ``add_bos`` of GGUF / HF byte-level tokenizers, e.g. SmolLM2)."""
        return self.tokenizer.encode(
            prompt, bos=getattr(self.tokenizer, "add_bos", True), eos=False
        )

    def encode_dialog(self, dialog: Dialog) -> list[int]:
        """Token ids of a dialog in the model's chat format, ending with the assistant header."""
        if self.formatter is None:
            why = "neither a chat template nor a Llama 3 tokenizer"
            raise GenerationError(f"this checkpoint has {why}: use generate")
        if not dialog:
            raise GenerationError("chat: the dialog is empty; give at least one message")
        return self.formatter.encode_dialog_prompt(dialog)

    def _completions(self, prompts: list[list[int]], generation, logprobs: bool, **options) -> list:
        """generate() over chunks of max_batch_size prompts; Meta's result dicts
        ``{"generation": generation(tokens, stop token or None)}``, plus ``tokens``/``logprobs``."""
        out, step, decode = [], self.args.max_batch_size, self.tokenizer.decode
        for i in range(0, len(prompts), step):
            stops: list[int | None] = []
            toks, lps = self.generate(
                prompts[i : i + step], logprobs=logprobs, stops=stops, **options
            )
            for t, lp, stop in zip(toks, lps or [None] * len(toks), stops):
                pred = {"generation": generation(t, stop)}
                if logprobs:
                    pred["tokens"], pred["logprobs"] = [decode([x]) for x in t], lp
                out.append(pred)
        return out

    def text_completion(
        self,
        prompts: list[str],
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_gen_len: int | None = None,
        logprobs: bool = False,
        echo: bool = False,
        top_k: int | None = None,
    ) -> list[CompletionPrediction]:
        """Continue each text prompt: ``[{"generation": str}]`` (+ ``tokens``/``logprobs``)."""
        ids = [self.encode_prompt(p) for p in prompts]
        options = dict(max_gen_len=max_gen_len, temperature=temperature, top_p=top_p, top_k=top_k)
        return self._completions(
            ids, lambda t, _: self.tokenizer.decode(t), logprobs, echo=echo, **options
        )

    def chat_completion(
        self,
        dialogs: list[Dialog],
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_gen_len: int | None = None,
        logprobs: bool = False,
        top_k: int | None = None,
    ) -> list[ChatPrediction]:
        """Answer each dialog: ``[{"generation": {"role": "assistant", "content": str,
        "stop_reason": str}}]``.

        Generation stops at any stop token, including Llama 3.1's <|eom_id|> (a tool call awaiting
        its result). ``stop_reason`` is Meta's: "end_of_message" (<|eom_id|>), "end_of_turn"
        (another stop token) or "out_of_tokens". With Meta's ChatFormat the message is read as
        Meta's ``decode_assistant_message`` does: a tool call becomes ``tool_calls``.
        """
        ids = [self.encode_dialog(d) for d in dialogs]
        options = dict(max_gen_len=max_gen_len, temperature=temperature, top_p=top_p, top_k=top_k)

        def reply(tokens: list[int], stop: int | None) -> dict:
            return self.formatter.decode_assistant_message(
                tokens, stop_reason(self.tokenizer, stop)
            )

        return self._completions(ids, reply, logprobs, **options)

    def stream_tokens_as_text(self, tokens: Iterator[int]) -> Iterator[str]:
        """Text pieces of a token stream, never splitting a multi-byte character."""
        return stream_text(self.tokenizer, tokens)

    def stream_text_completion(
        self, prompt: str, max_gen_len: int | None = None, temperature: float = 0.6,
        top_p: float = 0.9, top_k: int | None = None,
    ) -> Iterator[str]:  # fmt: skip
        """Continue one text prompt, yielding text pieces as tokens are produced."""
        ids = self.encode_prompt(prompt)
        return stream_text(
            self.tokenizer, self.generate_stream(ids, max_gen_len, temperature, top_p, top_k)
        )

    def stream_chat_completion(
        self, dialog: Dialog, max_gen_len: int | None = None, temperature: float = 0.6,
        top_p: float = 0.9, top_k: int | None = None,
    ) -> Iterator[str]:  # fmt: skip
        """Answer one dialog, yielding text pieces of the assistant's reply as they are produced."""
        ids = self.encode_dialog(dialog)
        return stream_text(
            self.tokenizer, self.generate_stream(ids, max_gen_len, temperature, top_p, top_k)
        )
