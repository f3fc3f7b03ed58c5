"""The ``simplellama`` command line: generate, chat, convert, info, bench.

    simplellama generate --prompt "The capital of France is" --max-new-tokens 20
    simplellama chat "What is the capital of France?"
    simplellama chat --system "Answer briefly."       # interactive (tty) or one turn per stdin line
    simplellama convert model.gguf out_dir --to hf
    simplellama info path/to/checkpoint
    simplellama bench --dtypes float32

Generated text goes to stdout as it is produced; progress bars and logs go to stderr.
Exit status: 0 ok, 2 usage error (argparse), 1 runtime error, reported as one line
``simplellama: error: ...`` (``-vv`` logs the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from LogRelay import get_relay

__all__ = ["RunOptions", "build_parser", "main"]

log = get_relay("simplellama.cli")
PROG = "simplellama"


@dataclass
class RunOptions:
    """Options of ``generate`` and ``chat`` (each field is a ``--switch``)."""

    model: str | None = field(
        default=None, metadata={"help": "checkpoint: Meta dir, HF dir or .gguf; None = the embedded SmolLM2-135M"}
    )
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer file; None = the checkpoint's own"})
    max_new_tokens: int = field(default=256, metadata={"help": "most tokens to generate"})
    temperature: float = field(default=0.6, metadata={"help": "0 = greedy"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus mass in (0, 1]"})
    top_k: int | None = field(default=None, metadata={"help": "keep only the k most likely tokens"})
    seed: int = field(default=1, metadata={"help": "seed of the sampling generator"})
    dtype: Literal["float32", "bfloat16", "float16"] | None = field(
        default=None, metadata={"help": "None = float32 on CPU, bfloat16 (or float16) on CUDA"}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ...; None = cuda if available"})
    max_seq_len: int = field(default=2048, metadata={"help": "longest prompt + generation (sizes the KV cache)"})
    stream: bool = field(default=True, metadata={"help": "print tokens as they are produced"})


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("simplellama")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list]]:
    """The argument parser and, per subcommand, the (field, switch, converter) triples of :class:`RunOptions`."""
    from subroutines import ArgumentParser, add_dataclass_arguments

    from . import bench

    parser = ArgumentParser(prog=PROG, description="Run, inspect and convert Llama 3.x checkpoints.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info logs, -vv: debug + tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)

    gen = sub.add_parser("generate", help="continue a text prompt")
    gen.add_argument("--prompt", required=True, help="text to continue")
    triples = {"generate": add_dataclass_arguments(gen, RunOptions, dashes=True)}

    chat = sub.add_parser("chat", help="chat through the model's chat format")
    chat.add_argument("message", nargs="?", help="one user message (omit: interactive / one turn per stdin line)")
    chat.add_argument("--system", default=None, help="system prompt")
    triples["chat"] = add_dataclass_arguments(chat, RunOptions, dashes=True)

    conv = sub.add_parser("convert", help="convert a checkpoint (Meta, HF or GGUF) to Meta or HF layout")
    conv.add_argument("src", help="checkpoint to read")
    conv.add_argument("dst", help="directory to write (must not exist or be empty)")
    conv.add_argument("--to", choices=["meta", "hf"], required=True, help="output layout")
    conv.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="cast weights")

    info = sub.add_parser("info", help="architecture, parameter count, dtypes, tokenizer of a checkpoint")
    info.add_argument("path", nargs="?", default=None, help="checkpoint (default: embedded SmolLM2-135M)")

    b = sub.add_parser("bench", help="speed and memory of simplellama vs transformers on the embedded model")
    bench.add_arguments(b)
    return parser, triples


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def _options(args: argparse.Namespace, triples: dict[str, list]) -> RunOptions:
    from subroutines import override_config

    return override_config(RunOptions(), args, triples[args.command], printer=log.debug)


def _build(opts: RunOptions):
    from .generation import GenerationError, Llama

    if opts.max_new_tokens >= opts.max_seq_len:  # fail before loading: the prompt needs at least one position
        raise GenerationError(
            f"--max-new-tokens ({opts.max_new_tokens}) must be smaller than --max-seq-len ({opts.max_seq_len})"
        )

    return Llama.build(
        opts.model,
        opts.tokenizer,
        max_seq_len=opts.max_seq_len,
        max_batch_size=1,
        device=opts.device,
        dtype=opts.dtype,
        seed=opts.seed,
    )


def _emit(pieces: Iterator[str], stream: bool) -> str:
    """Write text pieces to stdout (each as it arrives when ``stream``); returns the whole text."""
    text = []
    for piece in pieces:
        text.append(piece)
        if stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    out = "".join(text)
    if not stream:
        sys.stdout.write(out)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return out


def cmd_generate(args: argparse.Namespace, opts: RunOptions) -> int:
    from .generation import GenerationError

    if not args.prompt.strip():
        raise GenerationError("--prompt is empty: give some text to continue")
    llama = _build(opts)
    pieces = llama.stream_text_completion(args.prompt, opts.max_new_tokens, opts.temperature, opts.top_p, opts.top_k)
    _emit(pieces, opts.stream)
    return 0


def _user_turns(message: str | None) -> Iterator[str]:
    """The user's messages: the one given, else lines typed at a tty prompt, else stdin lines."""
    if message is not None:
        yield message
        return
    interactive = sys.stdin.isatty()
    if interactive:
        sys.stderr.write("Chat with the model; an empty line or Ctrl-D ends.\n")
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and line == "":  # end of input
            return
        line = line.strip()
        if not line:
            if interactive:
                return
            continue
        yield line


def cmd_chat(args: argparse.Namespace, opts: RunOptions) -> int:
    from .generation import GenerationError
    from .parallel import shared_items

    if args.message is not None and not args.message.strip():
        raise GenerationError("chat: the message is empty: give some text")
    llama = _build(opts)
    dialog = [{"role": "system", "content": args.system}] if args.system else []
    for text in shared_items(_user_turns(args.message)):  # read by rank 0, sent to every rank
        dialog.append({"role": "user", "content": text})
        pieces = llama.stream_chat_completion(dialog, opts.max_new_tokens, opts.temperature, opts.top_p, opts.top_k)
        dialog.append({"role": "assistant", "content": _emit(pieces, opts.stream)})
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import convert
    from .generation import pick_dtype

    dtype = pick_dtype(torch.device("cpu"), args.dtype) if args.dtype else None
    out = convert(args.src, args.dst, to=args.to, dtype=dtype)
    print(f"wrote {args.to} checkpoint to {out}")
    return 0


def describe_checkpoint(path: str | None) -> list[tuple[str, str]]:
    """(label, value) rows describing a checkpoint: architecture, parameters, dtypes, tokenizer."""
    from collections import Counter

    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    a = ckpt.args
    unique = {t.data_ptr(): t for t in ckpt.state_dict.values()}  # tied output counted once
    n_params = sum(t.numel() for t in unique.values())
    dtypes = Counter(str(t.dtype).replace("torch.", "") for t in ckpt.state_dict.values())
    rope = f"theta {a.rope_theta:g}, " + (
        f"llama3 scaling x{a.rope_scaling_factor:g} (low {a.rope_low_freq_factor:g}, high "
        f"{a.rope_high_freq_factor:g}, original context {a.rope_original_max_seq_len})"
        if a.use_scaled_rope
        else "no scaling"
    )
    tok = ckpt.tokenizer
    tok_desc = (
        "none found"
        if tok is None
        else f"{type(tok).__name__}, {tok.n_words} tokens, stop ids {sorted(tok.stop_tokens)}"
    )
    return [
        ("path", str(ckpt.path)),
        ("format", ckpt.format),
        (
            "architecture",
            f"Llama: {a.n_layers} layers, dim {a.dim}, {a.n_heads} heads ({a.n_kv_heads} kv, head dim "
            f"{a.head_dim}), FFN {a.hidden_dim}, vocab {a.vocab_size}, norm eps {a.norm_eps:g}",
        ),
        ("rope", rope),
        ("tied embeddings", "yes" if a.tie_word_embeddings else "no"),
        ("parameters", f"{n_params:,} ({n_params / 1e6:.1f} M)"),
        ("dtypes", ", ".join(f"{k} ({v} tensors)" for k, v in dtypes.most_common())),
        ("tokenizer", tok_desc),
        ("chat template", "yes" if ckpt.chat_template else "no"),
    ]


def cmd_info(args: argparse.Namespace) -> int:
    for label, value in describe_checkpoint(args.path):
        print(f"{label + ':':<17}{value}")
    return 0


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


# The project's errors (ConfigError, CheckpointError, TokenizerError, ChatFormatError, GenerationError, ModelError,
# KVCacheError) subclass ValueError and already name the file/field at fault, as do OSErrors (FileNotFoundError, ...):
# their message is shown as is. Anything else is unexpected: its type name is shown too.
EXPECTED_ERRORS = (ValueError, OSError, RuntimeError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on usage errors)."""
    parser, triples = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command in ("generate", "chat"):  # under torchrun: join the ranks; only rank 0 prints
            from .parallel import join_torchrun

            join_torchrun(getattr(args, "device", None))
        if args.command == "generate":
            return cmd_generate(args, _options(args, triples))
        if args.command == "chat":
            return cmd_chat(args, _options(args, triples))
        if args.command == "convert":
            return cmd_convert(args)
        if args.command == "info":
            return cmd_info(args)
        from . import bench

        return bench.run(args)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except Exception as e:  # one line, never a traceback (-vv logs it)
        log.debug("traceback", exc_info=True)
        sys.stdout.flush()
        name = "" if isinstance(e, EXPECTED_ERRORS) else f"{type(e).__name__}: "
        msg = " ".join(str(e).split()) or type(e).__name__
        sys.stderr.write(f"{PROG}: error: {name}{msg}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
