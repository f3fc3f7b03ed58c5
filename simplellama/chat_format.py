"""Chat prompts: turn a dialog (a list of ``{"role", "content"}`` dicts) into token ids.

- ``ChatFormat``: Meta's Llama 3 layout (llama_models/llama3/chat_format.py), with Llama 3.1's
  tool messages::

      <|begin_of_text|>
      <|start_header_id|>system<|end_header_id|>\\n\\n{content}<|eot_id|>   (one block per message)
      <|start_header_id|>assistant<|end_header_id|>\\n\\n                   (the model continues)

  Llama 3.1 extras, as Meta's ``encode_message`` / ``decode_assistant_message`` write and read
  them (llama_models/llama3/chat_format.py and tool_utils.py, llama-models 0.3.0), with Meta's
  field names in plain dicts::

      {"role": "assistant", "content": "", "stop_reason": "end_of_message",  # ends with <|eom_id|>
       "tool_calls": [{"tool_name": "brave_search", "arguments": {"query": "gold price"}}]}
      {"role": "ipython", "content": "{...tool output...}"}        # "tool" is written "ipython"

  ``stop_reason`` "end_of_message" ends an assistant message with <|eom_id|> (a tool call
  awaiting its result), anything else with <|eot_id|>. A tool call is written after the content
  (``tool_calls.py``): the builtin tools ``brave_search``/``wolfram_alpha``/``photogen`` as
  ``name.call(query="...")``, ``code_interpreter`` as its code after <|python_tag|>, other
  (custom) tools as JSON ``{"type": "function", "name", "parameters"}`` (or
  ``<function=name>{...}</function>`` / ``[name(k=v)]`` with ``tool_prompt_format``).

- ``ChatTemplate`` (``chat_template.py``): the jinja chat template a checkpoint carries, rendered
  the way transformers' ``apply_chat_template`` does, in a sandbox. It and the tool-call helpers
  are importable from here too (``from simplellama.chat_format import ChatTemplate``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .chat_template import ChatTemplate, Dialog, Message, UnsafeTemplateError
from .errors import ChatFormatError
from .tool_calls import BUILTIN_TOOLS, TOOL_PROMPT_FORMATS, encode_tool_call, parse_tool_call

__all__ = [
    "ChatFormatError",
    "UnsafeTemplateError",
    "ChatFormat",
    "ChatTemplate",
    "Message",
    "Dialog",
    "STOP_REASONS",
    "BUILTIN_TOOLS",
    "TOOL_PROMPT_FORMATS",
    "stop_reason",
    "encode_tool_call",
    "parse_tool_call",
]

ROLES = ("system", "user", "assistant", "ipython", "tool")  # "tool" is written "ipython", as Meta
STOP_REASONS = ("end_of_turn", "end_of_message", "out_of_tokens")  # Meta's StopReason values
ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _text(content: Any, where: str) -> str:
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]: join the text items
        content = "".join(
            c["text"] for c in content if isinstance(c, Mapping) and c.get("type") == "text"
        )
    if not isinstance(content, str):
        raise ChatFormatError(f"{where}: content must be a str, found {type(content).__name__}")
    return content


def _check_message(message: Any, where: str) -> tuple[str, str]:
    if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
        raise ChatFormatError(
            f"{where}: expected a dict with 'role' and 'content', found {message!r}"
        )
    role = message["role"]
    if role not in ROLES:
        raise ChatFormatError(f"{where}: role must be one of {ROLES}, found {role!r}")
    if message.get("stop_reason") not in (None, *STOP_REASONS):
        raise ChatFormatError(
            f"{where}: stop_reason must be one of {STOP_REASONS}, found {message['stop_reason']!r}"
        )
    return role, _text(message["content"], where)


def stop_reason(tokenizer: Any, token: int | None) -> str:
    """Meta's stop reason for a generation ended by ``token``: <|eom_id|> -> "end_of_message",
    another stop token -> "end_of_turn", None (the length limit) -> "out_of_tokens"."""
    if token is None:
        return "out_of_tokens"
    eom = getattr(tokenizer, "special_tokens", {}).get("<|eom_id|>")
    return "end_of_message" if token == eom else "end_of_turn"


class ChatFormat:
    """Meta's Llama 3 chat layout for a Llama 3 ``Tokenizer`` (header tokens + <|eot_id|> or
    <|eom_id|>)."""

    def __init__(self, tokenizer: Any) -> None:
        needed = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
        missing = [t for t in needed if t not in tokenizer.special_tokens]
        if missing:
            raise ChatFormatError(
                f"ChatFormat: the tokenizer has no {', '.join(missing)}; it is not a Llama 3 "
                "tokenizer (use ChatTemplate with the checkpoint's chat template)"
            )
        self.tokenizer = tokenizer

    def _special(self, token: str) -> int:
        if token not in self.tokenizer.special_tokens:
            raise ChatFormatError(
                f"ChatFormat: the tokenizer has no {token} (Llama 3.1 tool messages need it)"
            )
        return self.tokenizer.special_tokens[token]

    def _encode(self, text: str) -> list[int]:
        # special-token text stays plain text (the tokenizer's default)
        return self.tokenizer.encode(text, bos=False, eos=False)

    def encode_header(self, role: str) -> list[int]:
        """``<|start_header_id|>{role}<|end_header_id|>\\n\\n`` as ids."""
        role = "ipython" if role == "tool" else role
        start, end = self._special("<|start_header_id|>"), self._special("<|end_header_id|>")
        return [start, *self._encode(role), end, *self._encode("\n\n")]

    def encode_message(self, message: Message, tool_prompt_format: str = "json") -> list[int]:
        """Header, content, tool calls, then <|eom_id|> (assistant with stop_reason
        "end_of_message") or <|eot_id|>.

        As Meta's ``encode_message``: an assistant's first tool call to ``code_interpreter`` puts
        <|python_tag|> before the content; each tool call is encoded on its own after the content;
        a user message's ``context`` follows its content after a blank line. Special-token text in
        content stays plain text.
        """
        where = "ChatFormat.encode_message"
        role, content = _check_message(message, where)
        calls = (message.get("tool_calls") or []) if role == "assistant" else []
        if not isinstance(calls, Sequence) or isinstance(calls, str):
            raise ChatFormatError(
                f"{where}: tool_calls must be a list, found {type(calls).__name__}"
            )
        texts = [encode_tool_call(c, tool_prompt_format) for c in calls]
        tokens = self.encode_header(role)
        if calls and calls[0]["tool_name"] == "code_interpreter":
            tokens.append(self._special("<|python_tag|>"))
        tokens += self._encode(content)
        if role == "user" and message.get("context") is not None:  # Meta's RAG context
            context = _text(message["context"], where + " (context)")
            tokens += self._encode("\n\n") + self._encode(context)
        for text in texts:
            tokens += self._encode(text)
        eom = role == "assistant" and message.get("stop_reason") == "end_of_message"
        tokens.append(self._special("<|eom_id|>" if eom else "<|eot_id|>"))
        return tokens

    def encode_dialog_prompt(self, dialog: Dialog, tool_prompt_format: str = "json") -> list[int]:
        """<|begin_of_text|>, every message, then an open assistant header for the model."""
        tokens = [self._special("<|begin_of_text|>")]
        for message in dialog:
            tokens.extend(self.encode_message(message, tool_prompt_format))
        tokens.extend(self.encode_header("assistant"))
        return tokens

    def decode_assistant_message(self, tokens: Sequence[int], stop_reason: str) -> dict[str, Any]:
        """The assistant message the model wrote in ``tokens`` (Meta's
        ``decode_assistant_message``).

        Returns ``{"role": "assistant", "content", "stop_reason", "tool_calls"}``: a trailing
        <|eot_id|> or <|eom_id|> sets the stop reason; a recognised tool call becomes
        ``tool_calls`` (``call_id``, ``tool_name``, ``arguments``) and empties ``content``.
        """
        content = self.tokenizer.decode(list(tokens)).strip(" ")
        content = content.removeprefix(ASSISTANT_HEADER)
        python_tag = content.startswith("<|python_tag|>")
        content = content.removeprefix("<|python_tag|>")
        for token, reason in (("<|eot_id|>", "end_of_turn"), ("<|eom_id|>", "end_of_message")):
            if content.endswith(token):
                content, stop_reason = content[: -len(token)], reason
                break
        call = parse_tool_call(content, python_tag)
        tool_calls = []
        if call is not None and call[1] is not None:
            call_id = str(uuid.uuid4())
            tool_calls = [{"call_id": call_id, "tool_name": call[0], "arguments": call[1]}]
            content = ""
        reply = {"role": "assistant", "content": content, "stop_reason": stop_reason}
        return {**reply, "tool_calls": tool_calls}
