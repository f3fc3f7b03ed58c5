"""Chat prompts: turn a dialog (a list of ``{"role", "content"}`` dicts) into token ids.

- ``ChatFormat``: Meta's Llama 3 layout (llama_models/llama3/chat_format.py), with Llama 3.1's tool messages::

      <|begin_of_text|>
      <|start_header_id|>system<|end_header_id|>\\n\\n{content}<|eot_id|>      (one block per message)
      <|start_header_id|>assistant<|end_header_id|>\\n\\n                      (the model continues here)

  Llama 3.1 extras, as Meta's ``encode_message`` / ``decode_assistant_message`` write and read them
  (llama_models/llama3/chat_format.py and tool_utils.py, llama-models 0.3.0), with Meta's field names in
  plain dicts::

      {"role": "assistant", "content": "", "stop_reason": "end_of_message",      # ends with <|eom_id|>
       "tool_calls": [{"tool_name": "brave_search", "arguments": {"query": "gold price"}}]}
      {"role": "ipython", "content": "{...tool output...}"}                       # "tool" is written "ipython"

  ``stop_reason`` "end_of_message" ends an assistant message with <|eom_id|> (a tool call awaiting its
  result), anything else with <|eot_id|>. A tool call is written after the content: the builtin tools
  ``brave_search``/``wolfram_alpha``/``photogen`` as ``name.call(query="...")``, ``code_interpreter`` as its
  code after <|python_tag|>, other (custom) tools as JSON ``{"type": "function", "name", "parameters"}`` (or
  ``<function=name>{...}</function>`` / ``[name(k=v)]`` with ``tool_prompt_format``).

- ``ChatTemplate``: the jinja chat template a checkpoint carries (``tokenizer.chat_template`` in a GGUF,
  ``chat_template`` in tokenizer_config.json), rendered the way transformers' ``apply_chat_template`` does
  (transformers/utils/chat_template_utils.py): same jinja settings and variables, in jinja's
  ``ImmutableSandboxedEnvironment``, because a template from the internet is untrusted code.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import SimpleLlamaError

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

Message = Mapping[str, Any]
Dialog = Sequence[Message]

ROLES = ("system", "user", "assistant", "ipython", "tool")  # "tool" is written as "ipython", as Meta does
STOP_REASONS = ("end_of_turn", "end_of_message", "out_of_tokens")  # Meta's StopReason values
BUILTIN_TOOLS = ("brave_search", "wolfram_alpha", "photogen", "code_interpreter")  # Meta's BuiltinTool
TOOL_PROMPT_FORMATS = ("json", "function_tag", "python_list")  # Meta's ToolPromptFormat
ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"
# llama_models/llama3/tool_utils.py: BUILTIN_TOOL_PATTERN and CUSTOM_TOOL_CALL_PATTERN
_BUILTIN_CALL = re.compile(r'\b(?P<tool_name>\w+)\.call\(query="(?P<query>[^"]*)"\)')
_FUNCTION_TAG = re.compile(r"<function=(?P<function_name>[^}]+)>(?P<args>{.*?})")


class ChatFormatError(SimpleLlamaError):
    """A dialog or template that cannot be turned into a prompt."""


class UnsafeTemplateError(ChatFormatError, SecurityError):
    """A chat template tried something the jinja sandbox forbids (e.g. ``''.__class__``)."""


def _text(content: Any, where: str) -> str:
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]: join the text items
        content = "".join(c["text"] for c in content if isinstance(c, Mapping) and c.get("type") == "text")
    if not isinstance(content, str):
        raise ChatFormatError(f"{where}: content must be a str, found {type(content).__name__}")
    return content


def _check_message(message: Any, where: str) -> tuple[str, str]:
    if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
        raise ChatFormatError(f"{where}: expected a dict with 'role' and 'content', found {message!r}")
    role = message["role"]
    if role not in ROLES:
        raise ChatFormatError(f"{where}: role must be one of {ROLES}, found {role!r}")
    if message.get("stop_reason") not in (None, *STOP_REASONS):
        raise ChatFormatError(f"{where}: stop_reason must be one of {STOP_REASONS}, found {message['stop_reason']!r}")
    return role, _text(message["content"], where)


def stop_reason(tokenizer: Any, token: int | None) -> str:
    """Meta's stop reason for a generation ended by ``token``: <|eom_id|> -> "end_of_message", another stop
    token -> "end_of_turn", None (the length limit) -> "out_of_tokens"."""
    if token is None:
        return "out_of_tokens"
    return "end_of_message" if token == getattr(tokenizer, "special_tokens", {}).get("<|eom_id|>") else "end_of_turn"


def encode_tool_call(call: Mapping[str, Any], tool_prompt_format: str = "json") -> str:
    """The text of one tool call in an assistant message (Meta's ``ToolUtils.encode_tool_call``).

    Args:
        call: ``{"tool_name": str, "arguments": dict}``; builtin tools take ``query`` (``code`` for the
            code interpreter).
        tool_prompt_format: how custom tools are written: "json", "function_tag" or "python_list".
    """
    where = f"encode_tool_call({call!r:.80})"
    if not isinstance(call, Mapping) or not isinstance(call.get("tool_name"), str) or "arguments" not in call:
        raise ChatFormatError(f"{where}: expected a dict with 'tool_name' (str) and 'arguments'")
    name, args = call["tool_name"], call["arguments"]
    if name in BUILTIN_TOOLS:
        key = "code" if name == "code_interpreter" else "query"
        if not isinstance(args, Mapping) or key not in args:
            raise ChatFormatError(f"{where}: {name} arguments must be a dict with {key!r}, found {args!r:.80}")
        return args[key] if key == "code" else f'{name}.call(query="{args[key]}")'
    if tool_prompt_format == "json":
        return json.dumps({"type": "function", "name": name, "parameters": args})
    if tool_prompt_format == "function_tag":
        return f"<function={name}>{json.dumps(args)}</function>"
    if tool_prompt_format == "python_list":
        if not isinstance(args, Mapping):
            raise ChatFormatError(f"{where}: python_list arguments must be a dict, found {args!r:.80}")
        return f"[{name}({', '.join(f'{k}={_python_value(v, where)}' for k, v in args.items())})]"
    raise ChatFormatError(f"tool_prompt_format must be one of {TOOL_PROMPT_FORMATS}, found {tool_prompt_format!r}")


def _python_value(value: Any, where: str) -> str:
    """A value in Meta's python_list layout (tool_utils.py ``format_value``: strings quoted, not escaped)."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None or isinstance(value, int | float | bool):
        return str(value)
    if isinstance(value, list):
        return f"[{', '.join(_python_value(v, where) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_python_value(v, where)}" for k, v in value.items()) + "}"
    raise ChatFormatError(f"{where}: unsupported argument type {type(value).__name__}")


def _python_calls(body: str) -> list[tuple[str, dict]] | None:
    """``[f(a=1), g(b="x")]`` -> ``[("f", {"a": 1}), ...]`` if ``body`` is exactly such a list (parsed, never run)."""
    try:
        tree = ast.parse(body)
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr) or not isinstance(tree.body[0].value, ast.List):
        return None
    calls = tree.body[0].value.elts
    if not calls or not all(isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and not c.args for c in calls):
        return None
    try:
        return [(c.func.id, {k.arg: ast.literal_eval(k.value) for k in c.keywords if k.arg}) for c in calls]
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _custom_tool_call(body: str) -> tuple[str, Any] | None:
    """Meta's ``ToolUtils.maybe_extract_custom_tool_call``: <function=...> tag, JSON object, or python list."""
    match = _FUNCTION_TAG.search(body)
    if match:
        try:
            return match["function_name"], json.loads(match["args"].replace("'", '"'))
        except json.JSONDecodeError:
            return None
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        # Meta raises KeyError when "name" or "parameters" is missing; we read such a reply as plain text
        is_call = obj.get("type") == "function" or "name" in obj
        return (obj["name"], obj["parameters"]) if is_call and "name" in obj and "parameters" in obj else None
    calls = _python_calls(body)
    return calls[0] if calls else None  # Meta reads the first call only


def parse_tool_call(body: str, python_tag: bool = False) -> tuple[str, Any] | None:
    """``(tool_name, arguments)`` of the tool call in an assistant reply, or None (Meta's
    ``decode_assistant_message`` order: custom tool, then ``name.call(query=...)``, then code after <|python_tag|>)."""
    custom = _custom_tool_call(body)
    if custom is not None:
        name, args = custom
        if name in BUILTIN_TOOLS and isinstance(args, dict) and args:  # a builtin tool called in custom layout
            args = {"query": next(iter(args.values()))}
        return name, args
    builtin = _BUILTIN_CALL.search(body)
    if builtin:
        return builtin["tool_name"], {"query": builtin["query"]}
    return ("code_interpreter", {"code": body}) if python_tag else None


class ChatFormat:
    """Meta's Llama 3 chat layout for a Llama 3 ``Tokenizer`` (header tokens + <|eot_id|> or <|eom_id|>)."""

    def __init__(self, tokenizer: Any) -> None:
        needed = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
        missing = [t for t in needed if t not in tokenizer.special_tokens]
        if missing:
            raise ChatFormatError(
                f"ChatFormat: the tokenizer has no {', '.join(missing)}; it is not a Llama 3 tokenizer "
                "(use ChatTemplate with the checkpoint's chat template)"
            )
        self.tokenizer = tokenizer

    def _special(self, token: str) -> int:
        if token not in self.tokenizer.special_tokens:
            raise ChatFormatError(f"ChatFormat: the tokenizer has no {token} (Llama 3.1 tool messages need it)")
        return self.tokenizer.special_tokens[token]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, bos=False, eos=False)  # special-token text stays plain text

    def encode_header(self, role: str) -> list[int]:
        """``<|start_header_id|>{role}<|end_header_id|>\\n\\n`` as ids."""
        role = "ipython" if role == "tool" else role
        start, end = self._special("<|start_header_id|>"), self._special("<|end_header_id|>")
        return [start, *self._encode(role), end, *self._encode("\n\n")]

    def encode_message(self, message: Message, tool_prompt_format: str = "json") -> list[int]:
        """Header, content, tool calls, then <|eom_id|> (assistant with stop_reason "end_of_message") or <|eot_id|>.

        As Meta's ``encode_message``: an assistant's first tool call to ``code_interpreter`` puts <|python_tag|>
        before the content; each tool call is encoded on its own after the content; a user message's
        ``context`` follows its content after a blank line. Special-token text in content stays plain text.
        """
        where = "ChatFormat.encode_message"
        role, content = _check_message(message, where)
        calls = (message.get("tool_calls") or []) if role == "assistant" else []
        if not isinstance(calls, Sequence) or isinstance(calls, str):
            raise ChatFormatError(f"{where}: tool_calls must be a list, found {type(calls).__name__}")
        texts = [encode_tool_call(c, tool_prompt_format) for c in calls]
        tokens = self.encode_header(role)
        if calls and calls[0]["tool_name"] == "code_interpreter":
            tokens.append(self._special("<|python_tag|>"))
        tokens += self._encode(content)
        if role == "user" and message.get("context") is not None:  # Meta's RAG context
            tokens += self._encode("\n\n") + self._encode(_text(message["context"], where + " (context)"))
        for text in texts:
            tokens += self._encode(text)
        eom = role == "assistant" and message.get("stop_reason") == "end_of_message"
        tokens.append(self._special("<|eom_id|>" if eom else "<|eot_id|>"))
        return tokens

    def encode_dialog_prompt(self, dialog: Dialog, tool_prompt_format: str = "json") -> list[int]:
        """<|begin_of_text|>, every message, then an open assistant header for the model to complete."""
        tokens = [self._special("<|begin_of_text|>")]
        for message in dialog:
            tokens.extend(self.encode_message(message, tool_prompt_format))
        tokens.extend(self.encode_header("assistant"))
        return tokens

    def decode_assistant_message(self, tokens: Sequence[int], stop_reason: str) -> dict[str, Any]:
        """The assistant message the model wrote in ``tokens`` (Meta's ``decode_assistant_message``).

        Returns ``{"role": "assistant", "content", "stop_reason", "tool_calls"}``: a trailing <|eot_id|> or
        <|eom_id|> sets the stop reason; a recognised tool call becomes ``tool_calls`` (``call_id``,
        ``tool_name``, ``arguments``) and empties ``content``.
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
            tool_calls = [{"call_id": str(uuid.uuid4()), "tool_name": call[0], "arguments": call[1]}]
            content = ""
        return {"role": "assistant", "content": content, "stop_reason": stop_reason, "tool_calls": tool_calls}


# --------------------------------------------------------------------------------------- jinja templates


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; here it just renders."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


class _TemplateDict:
    """``dict(...)`` for templates without exposing the ``dict`` type itself (as transformers does)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace(...)`` that refuses underscore names, so templates cannot reach CPython internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 (jinja's signature trick: self may be a kwarg)
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"chat templates cannot set underscore attributes on a namespace: {name!r}")


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False):
    # transformers overrides jinja's tojson, which would HTML-escape <, > and &
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _plain(value: Any) -> Any:
    """Copy template inputs into plain JSON types (rich objects may expose unsafe methods), as transformers does."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    for base in (str, int, float):  # subclasses (enums, numpy scalars...) carry extra methods: keep the base value
        if isinstance(value, base):
            return getattr(base, f"__{base.__name__}__")(value)
    return f"<{type(value).__name__}>"


def make_environment() -> ImmutableSandboxedEnvironment:
    """The sandboxed jinja environment transformers renders chat templates in (same options and globals)."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


@contextmanager
def _template_errors(what: str) -> Iterator[None]:
    try:
        yield
    except SecurityError as e:
        raise UnsafeTemplateError(f"{what}: the chat template tried an unsafe operation: {e}") from e
    except TemplateError as e:
        raise ChatFormatError(f"{what}: {type(e).__name__}: {e}") from e


class ChatTemplate:
    """A checkpoint's jinja chat template, rendered like transformers' ``apply_chat_template``.

    Args:
        template: the jinja source.
        tokenizer: used to fill ``bos_token``/``eos_token``/``unk_token``/``pad_token`` and to encode.
        bos_token, eos_token: override the token texts the template sees.
        **template_vars: extra variables every render gets (e.g. ``enable_thinking=False``).
    """

    def __init__(
        self,
        template: str,
        tokenizer: Any = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        **template_vars: Any,
    ) -> None:
        if not isinstance(template, str) or not template.strip():
            raise ChatFormatError(f"ChatTemplate: template must be a non-empty str, found {template!r:.60}")
        self.source, self.tokenizer = template, tokenizer
        with _template_errors("ChatTemplate"):
            self.template = make_environment().from_string(template)
        # transformers passes tokenizer.special_tokens_map: bos/eos/unk/pad token texts, when the tokenizer has them
        names = {}
        for name in ("bos", "eos", "unk", "pad"):
            tid = getattr(tokenizer, f"{name}_id", None)
            if tid is not None and tid >= 0:
                names[f"{name}_token"] = tokenizer.decode([tid])
        if bos_token is not None:
            names["bos_token"] = bos_token
        if eos_token is not None:
            names["eos_token"] = eos_token
        self.variables = {**names, **template_vars}

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> ChatTemplate:
        """The template a tokenizer carries (``tokenizer.chat_template``)."""
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise ChatFormatError(f"ChatTemplate.from_tokenizer: {type(tokenizer).__name__} carries no chat template")
        return cls(template, tokenizer, **kwargs)

    def render(
        self,
        messages: Dialog,
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        **kwargs: Any,
    ) -> str:
        """The prompt text for ``messages``; ``add_generation_prompt`` opens an assistant turn at the end."""
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m:
                raise ChatFormatError(f"ChatTemplate.render: messages[{i}] must be a dict with 'role', found {m!r}")
        with _template_errors("ChatTemplate.render"):
            return self.template.render(
                # transformers drops None-valued keys from messages (APIs send content=None, tool_calls=None)
                messages=[{k: v for k, v in _plain(m).items() if v is not None} for m in messages],
                tools=_plain(tools),
                documents=_plain(documents),
                add_generation_prompt=add_generation_prompt,
                **_plain({**self.variables, **kwargs}),
            )

    def encode_dialog_prompt(self, dialog: Dialog, add_generation_prompt: bool = True, **kwargs: Any) -> list[int]:
        """Render, then encode with special tokens recognised and no extra bos (the template writes its own)."""
        if self.tokenizer is None:
            raise ChatFormatError("ChatTemplate.encode_dialog_prompt: no tokenizer was given to ChatTemplate")
        text = self.render(dialog, add_generation_prompt=add_generation_prompt, **kwargs)
        return self.tokenizer.encode(text, bos=False, eos=False, allowed_special="all")

    def decode_assistant_message(self, tokens: Sequence[int], stop_reason: str) -> dict[str, Any]:
        """``{"role": "assistant", "content": decoded text, "stop_reason": stop_reason}`` (tool-call layouts
        differ between templates, so the text is not parsed for them)."""
        if self.tokenizer is None:
            raise ChatFormatError("ChatTemplate.decode_assistant_message: no tokenizer was given to ChatTemplate")
        return {"role": "assistant", "content": self.tokenizer.decode(list(tokens)), "stop_reason": stop_reason}
