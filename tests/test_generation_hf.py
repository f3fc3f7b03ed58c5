"""Greedy generation on the embedded SmolLM2 equals transformers' ``generate(do_sample=False)`` (fp32).

transformers loads the same GGUF file itself (its own dequantisation and q/k handling). Tokens must be
identical while the top-1 margin of transformers' logits is clear (>= 1e-3); logits within 1e-3.
"""

import pytest
import torch

from simplellama.checkpoint import default_model_path
from simplellama.generation import Llama

pytestmark = pytest.mark.slow  # two model loads and 3 x 48 tokens on each side

NEW_TOKENS = 48
MARGIN = 1e-3


@pytest.fixture(scope="module")
def llama():
    # one torch thread: `make test` runs 2 pytest workers on 2 cores, and oversubscribed threads make
    # every matmul wait for a descheduled peer (measured 10x slower decode steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Llama.build(dtype="float32", device="cpu", max_seq_len=256)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hf():
    from transformers import AutoModelForCausalLM

    path = default_model_path()
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


PROMPTS = {
    "text": "The capital of France is",
    "code": "def fibonacci(n):\n",
    "chat": [{"role": "user", "content": "What is gravity? Answer in two sentences."}],
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_greedy_tokens_match_transformers(llama, hf, name):
    prompt = PROMPTS[name]
    ids = llama.encode_dialog(prompt) if name == "chat" else llama.encode_prompt(prompt)
    out = hf.generate(
        torch.tensor([ids]),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        eos_token_id=llama.tokenizer.stop_tokens,
        pad_token_id=0,
    )
    ref = out.sequences[0, len(ids) :].tolist()
    ref_logits = torch.stack(out.logits, dim=1)[0]  # (steps, V)

    (ours,), _ = llama.generate([ids], NEW_TOKENS, temperature=0)

    top2 = ref_logits.topk(2, dim=-1).values
    unclear = (top2[:, 0] - top2[:, 1] < MARGIN).nonzero().flatten().tolist()
    n = unclear[0] if unclear else len(ref)
    assert n >= 16, f"only {n} steps with a clear margin: pick another prompt"
    stop = set(llama.tokenizer.stop_tokens)
    ref_text = ref[:-1] if ref and ref[-1] in stop else ref  # transformers keeps the stop token, we drop it
    assert ours[:n] == ref_text[:n]
    if n == len(ref):
        assert ours == ref_text

    # logits of the prompt's last position and of each compared step, in one causal forward
    with torch.no_grad():
        full = llama.model(torch.tensor([ids + ref_text[: n - 1]]), None)[0]  # (S, V)
    torch.testing.assert_close(full[len(ids) - 1 :], ref_logits[:n], atol=1e-3, rtol=0)
