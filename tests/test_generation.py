"""Llama.generate and friends on the embedded SmolLM2: batching, echo/logprobs, stop tokens, errors, streaming.

References: the model's own logits through torch's log_softmax (no KV cache, ``start_pos=None``), the
same prompt generated alone, and the tokenizer's full decode. Greedy (temperature 0) in float32.
"""

import dataclasses
import importlib.util
import textwrap
from pathlib import Path

import pytest
import torch

from simplellama.checkpoint import default_model_path
from simplellama.generation import GenerationError, Llama
from simplellama.tokenizer import IncrementalDecoder, Tokenizer


@pytest.fixture(scope="module")
def llama():
    # one torch thread: `make test` runs 2 pytest workers on 2 cores, and oversubscribed threads make
    # every matmul wait for a descheduled peer (measured 10x slower decode steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Llama.build(dtype="float32", device="cpu", max_seq_len=512, max_batch_size=4)
    torch.set_num_threads(threads)


def reference_logprobs(llama: Llama, tokens: list[int]) -> torch.Tensor:
    """log p(tokens[j] | tokens[:j]) for j >= 1, from one causal forward without the cache."""
    with torch.no_grad():
        logits = llama.model(torch.tensor([tokens]), None)[0]  # (S, V)
    logp = torch.log_softmax(logits.double(), dim=-1)
    return logp[:-1].gather(-1, torch.tensor(tokens[1:])[:, None]).squeeze(-1)


def test_batch_of_different_lengths_equals_each_alone(llama):
    prompts = ["Hello", "The quick brown fox jumps over the lazy dog because", "In 1492,"]
    ids = [llama.encode_prompt(p) for p in prompts]
    assert len({len(i) for i in ids}) == 3
    batched, _ = llama.generate(ids, 6, temperature=0)
    alone = [llama.generate([i], 6, temperature=0)[0][0] for i in ids]
    assert batched == alone
    assert all(len(t) > 0 for t in batched)


def test_completions_split_lists_longer_than_max_batch_size(llama):
    prompts = ["One", "Two words", "Three words here", "Four words are here", "Five words are here now"]
    together = llama.text_completion(prompts, temperature=0, max_gen_len=4)  # max_batch_size=4: two batches
    alone = [llama.text_completion([p], temperature=0, max_gen_len=4)[0] for p in prompts]
    assert together == alone
    assert set(together[0]) == {"generation"}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_logprobs_are_log_softmax_of_the_models_logits(llama, temperature):
    ids = llama.encode_prompt("The capital of France is")
    toks, lps = llama.generate([ids], 8, temperature=temperature, logprobs=True, echo=True)
    toks, lps = toks[0], lps[0]
    assert toks[: len(ids)] == ids and len(toks) == len(lps)
    assert lps[0] == 0.0  # nothing precedes the first token
    torch.testing.assert_close(
        torch.tensor(lps[1:], dtype=torch.float64), reference_logprobs(llama, toks), atol=1e-3, rtol=1e-4
    )
    # without echo: the same numbers for the new tokens only
    llama.generator.manual_seed(0)
    new, new_lps = llama.generate([ids], 8, temperature=temperature, logprobs=True)
    llama.generator.manual_seed(0)
    again, _ = llama.generate([ids], 8, temperature=temperature, logprobs=True, echo=True)
    assert new[0] == again[0][len(ids) :]
    assert len(new_lps[0]) == len(new[0])


def test_echo_with_no_new_tokens_scores_the_prompt(llama):
    ids = llama.encode_prompt("Paris is the capital of France.")
    toks, lps = llama.generate([ids], 0, logprobs=True, echo=True)
    assert toks[0] == ids
    torch.testing.assert_close(
        torch.tensor(lps[0][1:], dtype=torch.float64), reference_logprobs(llama, ids), atol=1e-3, rtol=1e-4
    )


def test_text_completion_with_logprobs_returns_token_texts(llama):
    (out,) = llama.text_completion(["Water boils at"], temperature=0, max_gen_len=6, logprobs=True)
    assert set(out) == {"generation", "tokens", "logprobs"}
    assert len(out["tokens"]) == len(out["logprobs"]) == 6
    assert "".join(out["tokens"]) == out["generation"]


def test_stop_token_ends_generation_and_is_excluded(llama):
    ids = llama.encode_dialog([{"role": "user", "content": "Say hi."}])
    (toks,), _ = llama.generate([ids], 64, temperature=0)
    stop = set(llama.tokenizer.stop_tokens)
    assert 0 < len(toks) < 64 and not stop & set(toks)
    with torch.no_grad():  # the model's next choice after the returned tokens is a stop token
        logits = llama.model(torch.tensor([ids + toks]), None)[0, -1]
    assert int(logits.argmax()) in stop


def test_chat_completion_reports_the_stop_reason(llama):
    dialog = [{"role": "user", "content": "Say hi."}]
    ids, stops = llama.encode_dialog(dialog), []
    (toks,), _ = llama.generate([ids], 64, temperature=0, stops=stops)
    with torch.no_grad():  # the stop token reported is the model's next choice after the returned tokens
        logits = llama.model(torch.tensor([ids + toks]), None)[0, -1]
    assert stops == [int(logits.argmax())] and stops[0] in llama.tokenizer.stop_tokens and len(toks) > 2
    (done,) = llama.chat_completion([dialog], temperature=0, max_gen_len=64)
    text = llama.tokenizer.decode(toks)
    assert done["generation"] == {"role": "assistant", "content": text, "stop_reason": "end_of_turn"}
    (cut,) = llama.chat_completion([dialog], temperature=0, max_gen_len=2)
    assert cut["generation"]["stop_reason"] == "out_of_tokens"


def test_chat_completion_format(llama):
    (out,) = llama.chat_completion(
        [[{"role": "user", "content": "What is the capital of France?"}]], temperature=0, max_gen_len=24
    )
    assert out["generation"]["role"] == "assistant"
    assert "Paris" in out["generation"]["content"]


def test_streaming_equals_the_whole_generation(llama):
    prompt = "The three primary colors are"
    whole = llama.text_completion([prompt], temperature=0, max_gen_len=8)[0]["generation"]
    pieces = list(llama.stream_text_completion(prompt, max_gen_len=8, temperature=0))
    assert len(pieces) > 1 and "".join(pieces) == whole
    dialog = [{"role": "user", "content": "Name a fruit."}]
    chat = llama.chat_completion([dialog], temperature=0, max_gen_len=8)[0]["generation"]["content"]
    assert "".join(llama.stream_chat_completion(dialog, max_gen_len=8, temperature=0)) == chat


def test_sampling_is_reproducible_with_the_seed(llama):
    def sampled(seed: int) -> str:
        other = Llama(llama.model, llama.tokenizer, llama.args, llama.formatter, seed=seed)
        return other.text_completion(["Once upon a time"], temperature=1.0, top_p=1.0, max_gen_len=8)[0]["generation"]

    first = sampled(5)
    assert sampled(5) == first
    assert sampled(6) != first


TEXT = "Grüße, 世界! 🎉🦙 naïve café — ok"


@pytest.mark.parametrize("which", ["smollm2", "llama3"])
def test_incremental_decoder_never_splits_a_character(llama, which):
    if which == "smollm2":
        tok = llama.tokenizer
        ids = tok.encode(TEXT, bos=False, eos=False)
    else:
        root = Path(importlib.util.find_spec("llama_models").submodule_search_locations[0])
        tok = Tokenizer(root / "llama3" / "tokenizer.model")
        ids = tok.encode(TEXT, bos=False, eos=False)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some token holds part of a character
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) == TEXT


@pytest.fixture()
def small(llama) -> Llama:
    """The same model served with a 32-position context."""
    args = dataclasses.replace(llama.args, max_seq_len=32)
    return Llama(llama.model, llama.tokenizer, args, llama.formatter)


@pytest.mark.parametrize(
    "prompts,max_gen_len,message",
    [
        ([[1, 2, 3, 4, 5]], 40, r"prompt \(5 tokens\) \+ max_gen_len \(40\) = 45 exceeds max_seq_len=32"),
        ([list(range(40))], None, "prompt of 40 tokens exceeds max_seq_len=32"),
        ([[1, 2], []], 4, "prompt 1 is empty"),
        ([], 4, "no prompts given"),
        ([[1]] * 5, 4, "5 prompts exceed max_batch_size=4"),
        ([[1]], -1, "max_gen_len: expected >= 0, found -1"),
    ],
)
def test_bad_requests_raise_generation_error(small, prompts, max_gen_len, message):
    with pytest.raises(GenerationError, match=message):
        small.generate(prompts, max_gen_len, temperature=0)


def test_max_gen_len_none_fills_the_context(small):
    ids = small.encode_prompt("a b c d e f g h i j k l m n o p q r s t u v w x y")
    assert 20 < len(ids) < 32
    (toks,), _ = small.generate([ids], None, temperature=0)
    assert len(toks) <= 32 - len(ids)
    assert small.model.cache_bytes == small.args.kv_cache_bytes(1, 32, 4)  # sized from the request


def test_empty_dialog_and_empty_text_prompt_are_errors(small):
    with pytest.raises(GenerationError, match="the dialog is empty"):
        small.chat_completion([[]])
    with pytest.raises(GenerationError, match="prompt 0 is empty"):
        small.text_completion([""])  # SmolLM2 adds no BOS: "" is 0 tokens


META_EXAMPLE = """
from typing import List, Optional

from simplellama import Dialog, Llama


def main(ckpt_dir: str, tokenizer_path: str, temperature: float = 0.6, top_p: float = 0.9,
         max_seq_len: int = 512, max_batch_size: int = 4, max_gen_len: Optional[int] = None):
    generator = Llama.build(ckpt_dir=ckpt_dir, tokenizer_path=tokenizer_path, max_seq_len=max_seq_len,
                            max_batch_size=max_batch_size)
    dialogs: List[Dialog] = [
        [{"role": "user", "content": "what is the recipe of mayonnaise?"}],
        [
            {"role": "user", "content": "I am going to Paris, what should I see?"},
            {"role": "assistant", "content": "Paris, the capital of France, is known for the Eiffel Tower."},
            {"role": "user", "content": "What is so great about #1?"},
        ],
        [{"role": "system", "content": "Always answer with Haiku"},
         {"role": "user", "content": "I am going to Paris, what should I see?"}],
        [{"role": "system", "content": "Always answer with emojis"},
         {"role": "user", "content": "How to go from Beijing to NY?"}],
    ]
    results = generator.chat_completion(dialogs, max_gen_len=max_gen_len, temperature=temperature, top_p=top_p)
    for dialog, result in zip(dialogs, results):
        for msg in dialog:
            print(f"{msg['role'].capitalize()}: {msg['content']}\\n")
        print(f"> {result['generation']['role'].capitalize()}: {result['generation']['content']}")
        print("\\n==================================\\n")
"""


@pytest.mark.slow  # loads the model a second time
def test_metas_example_chat_completion_script_runs(tmp_path, capsys):
    """Meta's llama3 example_chat_completion.py body, with its import changed to simplellama."""
    path = tmp_path / "example_chat_completion.py"
    path.write_text(textwrap.dedent(META_EXAMPLE))
    spec = importlib.util.spec_from_file_location("example_chat_completion", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gguf = str(default_model_path())
    module.main(gguf, gguf, max_gen_len=8)
    out = capsys.readouterr().out
    assert out.count("> Assistant: ") == 4
    assert out.count("==================================") == 4
