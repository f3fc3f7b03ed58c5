"""One-off measurement: eager decode speed of the embedded SmolLM2 with quantized layers swapped in.

Loads today's model with ``simplellama.load_model`` (fp32, dequantized from the GGUF), then per
configuration replaces its linear layers (``quantize_model``, or ``gguf_linear`` on the file's own blocks),
prefills a fixed prompt and decodes greedily. Reports prefill and decode tok/s and, teacher-forced on
the fp32 model's greedy tokens, the share of steps whose top-1 token agrees with fp32.

    .venv/bin/python benchmarks/quantize_decode.py [--threads 1] [--steps 32] [--configs fp32 int4 ...]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from simplellama import default_model_path, load_model, load_tokenizer
from simplellama.checkpoint.keys import gguf_to_meta_name
from simplellama.quantize import quantize_model
from simplellama.quantize_gguf import gguf_linear

PROMPT = (
    "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. One stormy night, "
    "he noticed a small boat struggling against the waves near the rocks. Without hesitating, he"
)


def swap_gguf_layers(model: torch.nn.Module) -> torch.nn.Module:
    """Replace each linear layer by ``gguf_linear`` on the GGUF file's own blocks (tied output: token_embd)."""
    from gguf import GGUFReader

    reader = GGUFReader(default_model_path())
    for t in reader.tensors:
        name = gguf_to_meta_name(t.name)
        module = name.rsplit(".", 1)[0] if name else None
        if module == "tok_embeddings" and model.args.tie_word_embeddings:
            module = "output"
        if module is None or not isinstance(model.get_submodule(module), torch.nn.Linear):
            continue
        layer = gguf_linear(t.data, t.tensor_type)
        if layer is not None:
            model.set_submodule(module, layer)
    return model


CONFIGS = {
    "fp32": lambda m: m,
    "bf16": lambda m: m.to(torch.bfloat16),
    "int8": lambda m: quantize_model(m, "int8"),
    "int8-bf16": lambda m: quantize_model(m.to(torch.bfloat16), "int8"),
    "int4": lambda m: quantize_model(m, "int4", 32),
    "int4-bf16": lambda m: quantize_model(m.to(torch.bfloat16), "int4", 32),
    "int4-g64": lambda m: quantize_model(m, "int4", 64),
    "int4-out8": lambda m: quantize_model(m, "int4", 32, output_mode="int8"),
    "gguf": swap_gguf_layers,
    "gguf-bf16": lambda m: swap_gguf_layers(m.to(torch.bfloat16)),
}


@torch.no_grad()
def run(model: torch.nn.Module, prompt: torch.Tensor, steps: int, forced: list[int] | None) -> dict:
    """Prefill ``prompt`` (1, T), then ``steps`` greedy steps (or teacher-forced on ``forced``)."""
    T = prompt.shape[1]
    model.setup_cache(1, T + steps + 1)
    t0 = time.perf_counter()
    logits = model(prompt, start_pos=0, logits_to_keep=1)
    prefill = time.perf_counter() - t0
    tokens, agree = [], 0
    t0 = time.perf_counter()
    for i in range(steps):
        top = int(logits[0, -1].argmax())
        tokens.append(top)
        if forced is not None:
            agree += top == forced[i]
        nxt = forced[i] if forced is not None else top
        logits = model(torch.tensor([[nxt]]), start_pos=T + i)
    decode = time.perf_counter() - t0
    return {"prefill": T / prefill, "decode": steps / decode, "tokens": tokens, "agree": agree / steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs per configuration")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base, _ = load_model()
    ids = load_tokenizer(default_model_path()).encode(PROMPT, bos=False, eos=False)
    prompt = torch.tensor([ids])
    reference = run(base, prompt, args.steps, None)["tokens"]
    print(f"# SmolLM2-135M, {prompt.shape[1]}-token prompt, {args.steps} decode steps, {args.threads} thread(s)")
    print(f"{'config':10} {'prefill tok/s':>14} {'decode tok/s':>13} {'top-1 agree':>12}")
    for name in args.configs:
        model = CONFIGS[name](copy.deepcopy(base)).eval()
        runs = [run(model, prompt, args.steps, reference) for _ in range(args.repeats)]
        best = {k: max(r[k] for r in runs) for k in ("prefill", "decode")}
        print(f"{name:10} {best['prefill']:>14.1f} {best['decode']:>13.1f} {runs[0]['agree']:>12.0%}", flush=True)
        del model


if __name__ == "__main__":
    main()
