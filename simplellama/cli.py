"""The ``simplellama`` command line: generate, chat, convert, info, bench.

    simplellama generate --prompt "The capital of France is" --max-new-tokens 20
    simplellama chat "What is the capital of France?"
    simplellama chat --system "Answer briefly."       # interactive (tty) or one turn per stdin line
    simplellama convert model.gguf out_dir --to hf
    simplellama convert Llama3.2-1B llama-1b.Q8_0.gguf --to gguf --outtype q8_0
    simplellama info path/to/checkpoint
    simplellama bench --rows fp32,int4 --threads 1

Generated text goes to stdout as it is produced; progress bars and logs go to stderr.
Exit status: 0 ok, 2 usage error (argparse, including argument values that cannot work together),
1 runtime error, reported as one line ``simplellama: error: ...`` (``-vv`` logs the traceback).
``--version`` and ``--help`` import neither torch nor the model code: only the chosen command loads
them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from LogRelay import get_relay
from subroutines import ArgumentParser, add_dataclass_arguments, override_config

__all__ = ["RunOptions", "build_parser", "add_bench_arguments", "check_arguments", "main"]

log = get_relay("simplellama.cli")
PROG = "simplellama"


@dataclass
class RunOptions:
    """Options of ``generate`` and ``chat`` (each field is a ``--switch``)."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "checkpoint: Meta dir, HF dir or .gguf; None = the embedded SmolLM2-135M"
        },
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "tokenizer file; None = the checkpoint's own"}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "most tokens to generate"})
    temperature: float = field(default=0.6, metadata={"help": "0 = greedy"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus mass in (0, 1]"})
    top_k: int | None = field(default=None, metadata={"help": "keep only the k most likely tokens"})
    seed: int = field(default=1, metadata={"help": "seed of the sampling generator"})
    dtype: Literal["float32", "bfloat16", "float16"] | None = field(
        default=None, metadata={"help": "None = float32 on CPU, bfloat16 (or float16) on CUDA"}
    )
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1 ...; None = cuda if available"}
    )
    max_seq_len: int = field(
        default=2048, metadata={"help": "longest prompt + generation (sizes the KV cache)"}
    )
    stream: bool = field(default=True, metadata={"help": "print tokens as they are produced"})
    quantize: Literal["none", "auto", "int8", "int4"] = field(
        default="auto",
        metadata={"help": "int8/int4: quantize weights while loading; auto only affects "
                  "quantized GGUF files (their Q4_0/Q4_1/Q8_0 blocks run packed)"},
    )  # fmt: skip
    group_size: Literal[32, 64, 128, 256] = field(
        default=32, metadata={"help": "inputs per int4 scale (--quantize int4)"}
    )
    compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the decode step (first step compiles: tens of seconds)"},
    )


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------


def _version() -> str:
    try:
        return version("simplellama")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list]]:
    """The argument parser and, per subcommand, the (field, switch, converter) triples of
    :class:`RunOptions`."""
    parser = ArgumentParser(
        prog=PROG, description="Run, inspect and convert Llama 3.x checkpoints."
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: info logs, -vv: debug + tracebacks"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser
    )

    gen = sub.add_parser("generate", help="continue a text prompt")
    gen.add_argument("--prompt", required=True, help="text to continue")
    triples = {"generate": add_dataclass_arguments(gen, RunOptions, dashes=True)}

    chat = sub.add_parser("chat", help="chat through the model's chat format")
    chat.add_argument(
        "message", nargs="?", help="one user message (omit: interactive / one turn per stdin line)"
    )
    chat.add_argument("--system", default=None, help="system prompt")
    triples["chat"] = add_dataclass_arguments(chat, RunOptions, dashes=True)

    conv = sub.add_parser(
        "convert", help="convert a checkpoint (Meta, HF or GGUF) to Meta, HF or GGUF"
    )
    conv.add_argument("src", help="checkpoint to read")
    conv.add_argument(
        "dst", help="directory (meta, hf: must not exist or be empty) or .gguf file to write"
    )
    conv.add_argument("--to", choices=["meta", "hf", "gguf"], required=True, help="output layout")
    conv.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="cast weights"
    )
    conv.add_argument(
        "--outtype",
        choices=["f32", "f16", "q8_0", "q4_0"],
        default=None,
        help="GGUF weight type (default f16; norms stay f32)",
    )

    info = sub.add_parser(
        "info", help="architecture, parameter count, dtypes, tokenizer of a checkpoint"
    )
    info.add_argument(
        "path", nargs="?", default=None, help="checkpoint (default: embedded SmolLM2-135M)"
    )

    b = sub.add_parser(
        "bench", help="speed, peak RAM, agreement and perplexity per weight format (embedded model)"
    )
    add_bench_arguments(b)
    return parser, triples


BENCH_ROWS = ("fp32", "bf16", "int8", "int4", "auto")  # each also as ROW+compile (bench.ROWS)


def _row_list(text: str) -> list[str]:
    names = [d.strip() for d in text.split(",") if d.strip()]
    known = [*BENCH_ROWS, *(r + "+compile" for r in BENCH_ROWS)]
    for d in names:
        if d not in known:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of {', '.join(BENCH_ROWS)} (each optionally +compile), "
                f"found {d!r}"
            )
    return names


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text!r}")
    return int(text)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` options (also ``benchmarks/compare.py``'s)."""
    parser.add_argument(
        "--rows",
        type=_row_list,
        default=None,
        help="comma list of fp32, bf16, int8, int4, auto, each optionally +compile "
        "(default: all; +compile where this version can compile)",
    )
    parser.add_argument(
        "--prompt-tokens", type=_positive, default=128, help="prompt length for prefill"
    )
    parser.add_argument(
        "--new-tokens", type=_positive, default=64, help="tokens decoded per prompt"
    )
    parser.add_argument(
        "--threads", type=_positive, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--repeat", type=_positive, default=3, help="runs per measurement (median reported)"
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--worker", default=None, help=argparse.SUPPRESS
    )  # internal: one row, job on stdin, JSON out


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def _options(args: argparse.Namespace, triples: dict[str, list]) -> RunOptions:
    return override_config(RunOptions(), args, triples[args.command], printer=log.debug)


def check_arguments(args: argparse.Namespace, opts: RunOptions | None) -> str | None:
    """What is wrong with argument values that parse but cannot work (None if nothing): usage
    errors."""
    if args.command == "generate" and not args.prompt.strip():
        return "--prompt is empty: give some text to continue"
    if args.command == "chat" and args.message is not None and not args.message.strip():
        return "chat: the message is empty: give some text"
    if opts is not None and opts.max_new_tokens >= opts.max_seq_len:  # the prompt needs a position
        n, s = opts.max_new_tokens, opts.max_seq_len
        return f"--max-new-tokens ({n}) must be smaller than --max-seq-len ({s})"
    return None


def _build(opts: RunOptions):
    from .generation import Llama

    return Llama.build(
        opts.model,
        opts.tokenizer,
        max_seq_len=opts.max_seq_len,
        max_batch_size=1,
        device=opts.device,
        dtype=opts.dtype,
        seed=opts.seed,
        quantize=None if opts.quantize == "none" else opts.quantize,
        group_size=opts.group_size,
        compile=opts.compile,
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
    llama = _build(opts)
    pieces = llama.stream_text_completion(
        args.prompt, opts.max_new_tokens, opts.temperature, opts.top_p, opts.top_k
    )
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
    from .parallel import shared_items

    llama = _build(opts)
    dialog = [{"role": "system", "content": args.system}] if args.system else []
    for text in shared_items(_user_turns(args.message)):  # read by rank 0, sent to every rank
        dialog.append({"role": "user", "content": text})
        pieces = llama.stream_chat_completion(
            dialog, opts.max_new_tokens, opts.temperature, opts.top_p, opts.top_k
        )
        dialog.append({"role": "assistant", "content": _emit(pieces, opts.stream)})
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import convert
    from .devices import pick_dtype

    dtype = pick_dtype(torch.device("cpu"), args.dtype) if args.dtype else None
    out = convert(args.src, args.dst, to=args.to, dtype=dtype, outtype=args.outtype)
    print(f"wrote {args.to} checkpoint to {out}")
    return 0


def describe_checkpoint(path: str | None) -> list[tuple[str, str]]:
    """(label, value) rows describing a checkpoint: architecture, parameters, dtypes, tokenizer.

    Reads headers only (``checkpoint.read_header``): no weight is loaded or dequantized.
    """
    from .checkpoint import read_header

    ckpt = read_header(path)
    a = ckpt.args
    unique = {id(t): t for t in ckpt.state_dict.values()}  # tied output counted once
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
            f"Llama: {a.n_layers} layers, dim {a.dim}, {a.n_heads} heads ({a.n_kv_heads} kv, head "
            "dim "
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


# The project's errors (errors.SimpleLlamaError, a ValueError) already name the file/field at fault,
# as do
# OSErrors (FileNotFoundError, ...): their message is shown as is. Anything else: its type name is
# shown too.
EXPECTED_ERRORS = (ValueError, OSError, RuntimeError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on usage errors)."""
    parser, triples = build_parser()
    args = parser.parse_args(argv)
    opts = _options(args, triples) if args.command in ("generate", "chat") else None
    if (problem := check_arguments(args, opts)) is not None:
        parser.error(problem)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command in (
            "generate",
            "chat",
        ):  # under torchrun: join the ranks; only rank 0 prints
            from .parallel import join_torchrun

            join_torchrun(getattr(args, "device", None))
        if args.command == "generate":
            return cmd_generate(args, opts)
        if args.command == "chat":
            return cmd_chat(args, opts)
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
