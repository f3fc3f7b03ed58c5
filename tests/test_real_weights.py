"""Checks that need assets this machine may not have: a real Meta/HF checkpoint, or a CUDA device.

Real weights: point ``SIMPLELLAMA_REAL_CKPT`` at a download (e.g. ``Llama-3.2-1B-Instruct/original``); when an
HF copy of the same model is available, ``SIMPLELLAMA_REAL_HF`` lets transformers check our logits.
GPU: runs when ``torch.cuda.is_available()``. Each test says why it is skipped otherwise.
"""

import os
from pathlib import Path

import pytest
import torch
from ckpt_factory import random_state_dict, tiny_args

from simplellama import Llama, Transformer, load_model

REAL = os.environ.get("SIMPLELLAMA_REAL_CKPT")
REAL_HF = os.environ.get("SIMPLELLAMA_REAL_HF")

needs_real = pytest.mark.skipif(not REAL, reason="set SIMPLELLAMA_REAL_CKPT to a Meta/HF/GGUF Llama 3.x checkpoint")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.real_weights
@needs_real
def test_real_checkpoint_chats_greedily():
    llm = Llama.build(REAL, max_seq_len=256, max_batch_size=1, dtype=torch.bfloat16)
    dialog = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    out = llm.chat_completion([dialog], temperature=0.0, max_gen_len=16)
    assert "paris" in out[0]["generation"]["content"].lower()


@pytest.mark.real_weights
@pytest.mark.skipif(not (REAL and REAL_HF), reason="set SIMPLELLAMA_REAL_CKPT and SIMPLELLAMA_REAL_HF (same model)")
def test_real_checkpoint_logits_match_transformers():
    from transformers import AutoModelForCausalLM

    from simplellama.checkpoint import load_tokenizer

    tokens = torch.tensor([load_tokenizer(REAL).encode("The capital of France is", bos=True, eos=False)])
    model, args = load_model(REAL, dtype=torch.float32, max_seq_len=64)
    ours = model(tokens, start_pos=None)[0, -1]
    del model
    hf = AutoModelForCausalLM.from_pretrained(Path(REAL_HF), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(tokens).logits[0, -1]
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_logits_match_cpu(dtype):
    args = tiny_args(max_seq_len=32)
    sd = random_state_dict(args, seed=0)
    cpu = Transformer(args)
    cpu.load_state_dict(sd, strict=True)
    gpu = Transformer(args, device="cuda", dtype=dtype)
    gpu.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True)
    tokens = torch.randint(0, args.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    want = cpu(tokens, start_pos=None)
    got = gpu(tokens.cuda(), start_pos=0).cpu()  # the cached path on the GPU, the plain one on the CPU
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
