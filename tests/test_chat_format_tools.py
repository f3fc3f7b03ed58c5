"""Llama 3.1 tool messages in ChatFormat against Meta's own code, token for token, on the real Llama 3 tokenizer.

Reference: llama_models 0.3.0 (installed --no-deps by `make setup`; pydantic and pillow, which its chat_format
imports, are test dependencies): ``llama3/chat_format.py`` ``ChatFormat.encode_dialog_prompt`` /
``decode_assistant_message`` and ``llama3/tool_utils.py``, run on Meta's ``Tokenizer``. Dialogs follow Meta's
``llama3_1/prompt_format.md``. ``chat_completion`` is driven by a scripted model (it emits a fixed reply, so the
decode loop's stopping is what is tested) and its result is compared with Meta's reading of the same tokens.
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest
import torch

from simplellama.chat_format import ChatFormat, ChatFormatError, encode_tool_call, stop_reason
from simplellama.config import ModelArgs
from simplellama.generation import Llama
from simplellama.tokenizer import Tokenizer

meta_datatypes = pytest.importorskip("llama_models.datatypes", reason="pydantic/pillow missing: run `make setup`")
from llama_models.llama3.chat_format import ChatFormat as MetaChatFormat  # noqa: E402
from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer  # noqa: E402

META_DIR = Path(importlib.util.find_spec("llama_models").submodule_search_locations[0]) / "llama3"
EOM, EOT, PYTHON_TAG = 128008, 128009, 128010  # <|eom_id|>, <|eot_id|>, <|python_tag|> in Meta's tokenizer.py


@pytest.fixture(scope="module")
def fmt():
    return ChatFormat(Tokenizer(META_DIR / "tokenizer.model"))


@pytest.fixture(scope="module")
def meta():
    return MetaChatFormat(MetaTokenizer(META_DIR / "tokenizer.model"))


def to_meta(message: dict) -> meta_datatypes.RawMessage:
    """Our message dict as Meta's RawMessage (Meta spells the ipython role "tool")."""
    kw = {k: v for k, v in message.items() if k in ("content", "context", "stop_reason")}
    calls = [meta_datatypes.ToolCall(call_id=c.get("call_id", "0"), **c) for c in message.get("tool_calls", [])]
    role = "tool" if message["role"] == "ipython" else message["role"]
    return meta_datatypes.RawMessage(role=role, tool_calls=calls, **kw)


SYSTEM_TOOLS = {
    "role": "system",
    "content": "Environment: ipython\nTools: brave_search, wolfram_alpha\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: 23 July 2024\n\nYou are a helpful assistant",
}
DIALOGS = {
    "builtin_search": [  # prompt_format.md "Built-in Python based tool calling"
        SYSTEM_TOOLS,
        {"role": "user", "content": "What is the current price of gold?"},
        {
            "role": "assistant",
            "content": "",
            "stop_reason": "end_of_message",
            "tool_calls": [{"tool_name": "brave_search", "arguments": {"query": "latest price of 1oz gold"}}],
        },
        {"role": "ipython", "content": '{"price": "2,400 USD"}'},
        {"role": "assistant", "content": "About 2,400 USD per ounce.", "stop_reason": "end_of_turn"},
        {"role": "user", "content": "And the 100th decimal of pi?"},
        {
            "role": "assistant",
            "content": "",
            "stop_reason": "end_of_message",
            "tool_calls": [{"tool_name": "wolfram_alpha", "arguments": {"query": "100th decimal of pi"}}],
        },
        {"role": "tool", "content": "9"},  # "tool" is written as ipython too
    ],
    "code_interpreter": [  # "Builtin Code Interpreter": <|python_tag|> before the code
        {"role": "system", "content": "Environment: ipython"},
        {"role": "user", "content": "Write code to check if number is prime, use that to see if 7 is prime"},
        {
            "role": "assistant",
            "content": "",
            "stop_reason": "end_of_message",
            "tool_calls": [
                {
                    "tool_name": "code_interpreter",
                    "arguments": {
                        "code": "def is_prime(n):\n    return n > 1 and all(n % i for i in range(2, n))\n"
                        "\nprint(is_prime(7))  # Output: True"
                    },
                }
            ],
        },
        {"role": "ipython", "content": "True"},
        {"role": "assistant", "content": "Yes, 7 is prime.", "stop_reason": "end_of_turn"},
    ],
    "custom_json": [  # "JSON based tool calling"; content before the call, special-token text kept as text
        {"role": "system", "content": "Environment: ipython"},
        {"role": "user", "content": "Use trending_songs to list 10 songs <|eot_id|> of any genre."},
        {
            "role": "assistant",
            "content": "Let me look.",
            "stop_reason": "end_of_message",
            "tool_calls": [{"tool_name": "trending_songs", "arguments": {"n": "10", "genre": "all"}}],
        },
        {"role": "ipython", "content": '["Song A", "Song B"]'},
        {"role": "assistant", "content": "Song A and Song B.\n"},  # no stop_reason: <|eot_id|>
    ],
    "custom_typed_args_and_rag_context": [
        {"role": "user", "content": "Boiling point of water?", "context": "Water boils at 100 C at sea level."},
        {
            "role": "assistant",
            "content": "",
            "stop_reason": "end_of_turn",
            "tool_calls": [
                {"tool_name": "get_boiling_point", "arguments": {"liquid_name": "water", "celsius": True, "n": 2}}
            ],
        },
    ],
    "two_calls_and_out_of_tokens": [
        {"role": "user", "content": "Search two things."},
        {
            "role": "assistant",
            "content": "Searching.",
            "stop_reason": "out_of_tokens",
            "tool_calls": [
                {"tool_name": "brave_search", "arguments": {"query": "llamas"}},
                {"tool_name": "photogen", "arguments": {"query": "a llama on a hill"}},
            ],
        },
    ],
}


@pytest.mark.parametrize("tool_prompt_format", ["json", "function_tag", "python_list"])
@pytest.mark.parametrize("name", list(DIALOGS))
def test_dialogs_encode_to_metas_ids(fmt, meta, name, tool_prompt_format):
    dialog = DIALOGS[name]
    fmt_enum = meta_datatypes.ToolPromptFormat(tool_prompt_format)
    expected = meta.encode_dialog_prompt([to_meta(m) for m in dialog], fmt_enum).tokens
    assert fmt.encode_dialog_prompt(dialog, tool_prompt_format) == expected
    for m in dialog:  # message by message too
        assert fmt.encode_message(m, tool_prompt_format) == meta.encode_message(to_meta(m), fmt_enum)[0]


def test_stop_reason_and_python_tag_tokens(fmt):
    search, code = DIALOGS["builtin_search"][2], DIALOGS["code_interpreter"][2]
    assert fmt.encode_message(search)[-1] == EOM
    assert fmt.encode_message({**search, "stop_reason": "end_of_turn"})[-1] == EOT
    assert fmt.encode_message({**search, "role": "user"})[-1] == EOT  # eom only ends assistant messages
    assert fmt.encode_message(code)[:5] == [128006, 78191, 128007, 271, PYTHON_TAG]  # header "assistant", tag
    assert PYTHON_TAG not in fmt.encode_message(search)  # Meta tags only code_interpreter calls when encoding


# Replies as the model writes them (prompt_format.md), and edge cases of Meta's parser.
REPLIES = [
    ('<|python_tag|>brave_search.call(query="latest price of 1oz gold")<|eom_id|>', "end_of_turn"),
    ('wolfram_alpha.call(query="100th decimal of pi")<|eom_id|>', "end_of_turn"),
    ("<|python_tag|>def is_prime(n):\n    return n > 1\n\nprint(is_prime(7))  # Output: True<|eom_id|>", "end_of_turn"),
    (
        '<|python_tag|>{\n    "type": "function",\n    "name": "trending_songs",\n    "parameters": {\n'
        '        "n": "10",\n        "genre": "all"\n    }\n}<|eom_id|>',
        "end_of_turn",
    ),  # fmt: skip
    ('<function=spotify_trending_songs>{"n": "5"}</function><|eot_id|>', "end_of_message"),
    ("<function=get_weather>{'city': 'Paris'}</function>", "end_of_turn"),  # single quotes read as double
    ("<function=broken>{not json}</function>", "end_of_turn"),
    ('[get_boiling_point(liquid_name="water", celcius=True), melt(x=1)]<|eot_id|>', "end_of_turn"),
    ('{"name": "brave_search", "parameters": {"q": "weather in Menlo Park"}}', "end_of_turn"),
    ('{"type": "function", "name": "f", "parameters": null}', "end_of_turn"),
    ('{"not": "a call"}<|eot_id|>', "end_of_message"),
    ("<|start_header_id|>assistant<|end_header_id|>\n\n  The capital of France is Paris. <|eot_id|>", "out_of_tokens"),
    ("<|python_tag|>print('cut off", "out_of_tokens"),
    ("Lists are not calls: [1, 2] and [f(1)]", "out_of_tokens"),
    ("[f(1)]", "end_of_turn"),
    ("", "out_of_tokens"),
]


def meta_message_dict(m) -> dict:
    calls = [{"tool_name": getattr(c.tool_name, "value", c.tool_name), "arguments": c.arguments} for c in m.tool_calls]
    return {"role": m.role, "content": m.content, "stop_reason": m.stop_reason.value, "tool_calls": calls}


@pytest.mark.parametrize("reply, reason", REPLIES, ids=range(len(REPLIES)))
def test_replies_decode_as_metas_decode_assistant_message(fmt, meta, reply, reason):
    tokens = fmt.tokenizer.encode(reply, bos=False, eos=False, allowed_special="all")
    assert tokens == meta.tokenizer.encode(reply, bos=False, eos=False, allowed_special="all")
    ours = fmt.decode_assistant_message(tokens, reason)
    expected = meta_message_dict(meta.decode_assistant_message(tokens, meta_datatypes.StopReason(reason)))
    for call in ours["tool_calls"]:
        uuid.UUID(call.pop("call_id"))  # a fresh uuid4, as Meta's
    assert ours == expected


def test_decoded_tool_call_encodes_back_to_the_same_ids(fmt):
    for message in (DIALOGS["builtin_search"][2], DIALOGS["custom_json"][2] | {"content": ""}):
        ids = fmt.encode_message(message)
        decoded = fmt.decode_assistant_message(ids[4:], "end_of_turn")  # after the header; the <|eom_id|> is read
        assert decoded["stop_reason"] == "end_of_message"
        assert [{k: c[k] for k in ("tool_name", "arguments")} for c in decoded["tool_calls"]] == message["tool_calls"]
        assert fmt.encode_message(decoded) == ids


def test_bad_tool_messages_are_clear_errors(fmt):
    with pytest.raises(ChatFormatError, match=r"stop_reason must be one of .* found 'done'"):
        fmt.encode_message({"role": "assistant", "content": "x", "stop_reason": "done"})
    with pytest.raises(ChatFormatError, match=r"expected a dict with 'tool_name' \(str\) and 'arguments'"):
        fmt.encode_message({"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]})
    with pytest.raises(ChatFormatError, match=r"brave_search arguments must be a dict with 'query'"):
        encode_tool_call({"tool_name": "brave_search", "arguments": {"q": "x"}})
    with pytest.raises(ChatFormatError, match=r"tool_prompt_format must be one of .* found 'xml'"):
        encode_tool_call({"tool_name": "f", "arguments": {}}, "xml")
    with pytest.raises(ChatFormatError, match=r"tool_calls must be a list, found str"):
        fmt.encode_message({"role": "assistant", "content": "", "tool_calls": "f()"})


# --- chat_completion stops on <|eom_id|> and reports the stop reason ----------------------------------------------


class ScriptedModel(torch.nn.Module):
    """A stand-in Transformer whose next token at position p of row i is ``replies[i][p - prompt_len[i]]``."""

    def __init__(self, replies: list[list[int]], vocab: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # Llama reads the device from the parameters
        self.replies, self.vocab, self.prompt_lens = replies, vocab, []

    def setup_cache(self, batch: int, seq_len: int) -> None:
        pass

    def forward(self, tokens: torch.Tensor, start_pos: int, keep: int = 0) -> torch.Tensor:
        B, T = tokens.shape
        logits = torch.zeros(B, T, self.vocab)  # (B, T, V)
        for i in range(B):
            reply, step = self.replies[i], start_pos + T - self.prompt_lens[i]
            if 0 <= step < len(reply):
                logits[i, -1, reply[step]] = 1.0
        return logits[:, -keep:] if keep else logits


def test_chat_completion_stops_on_eom_and_reports_metas_stop_reason(fmt, meta):
    tok = fmt.tokenizer
    call = '<|python_tag|>brave_search.call(query="gold price")'
    texts = [call + "<|eom_id|>ignored after the stop", "Paris.<|eot_id|>more", "and so on " * 20]
    replies = [tok.encode(t, bos=False, eos=False, allowed_special="all") for t in texts]
    model = ScriptedModel(replies, tok.n_words)
    llama = Llama(model, tok, ModelArgs(dim=8, n_layers=1, n_heads=1, vocab_size=tok.n_words, max_seq_len=128), fmt)
    dialogs = [[SYSTEM_TOOLS, {"role": "user", "content": q}] for q in ("Gold?", "Capital of France?", "Go on")]
    model.prompt_lens = [len(llama.encode_dialog(d)) for d in dialogs]
    results = llama.chat_completion(dialogs, temperature=0, max_gen_len=24)

    expected_ids = [replies[0][: replies[0].index(EOM) + 1], replies[1][: replies[1].index(EOT) + 1], replies[2][:24]]
    reasons = ["end_of_message", "end_of_turn", "out_of_tokens"]
    for result, ids, reason in zip(results, expected_ids, reasons):
        expected = meta_message_dict(meta.decode_assistant_message(ids, meta_datatypes.StopReason(reason)))
        got = result["generation"]
        for c in got["tool_calls"]:
            del c["call_id"]
        assert got == expected
    assert results[0]["generation"]["tool_calls"] == [
        {"tool_name": "brave_search", "arguments": {"query": "gold price"}}
    ]
    assert [stop_reason(tok, t) for t in (EOM, EOT, tok.eos_id, None)] == [*reasons[:2], "end_of_turn", reasons[2]]
