"""Llama 3.1 tool calls: how an assistant message writes one, and how a reply is read back.

As Meta's ``ToolUtils`` (llama_models/llama3/tool_utils.py, llama-models 0.3.0), with Meta's
field names in plain dicts: ``{"tool_name": "brave_search", "arguments": {"query": "gold"}}``.
The builtin tools ``brave_search``/``wolfram_alpha``/``photogen`` are written
``name.call(query="...")``, ``code_interpreter`` as its code (after <|python_tag|>, which
``chat_format.ChatFormat`` adds), other (custom) tools as JSON ``{"type": "function", "name",
"parameters"}`` (or ``<function=name>{...}</function>`` / ``[name(k=v)]`` with
``tool_prompt_format``). Replies are parsed, never run.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import ChatFormatError

__all__ = ["BUILTIN_TOOLS", "TOOL_PROMPT_FORMATS", "encode_tool_call", "parse_tool_call"]

BUILTIN_TOOLS = ("brave_search", "wolfram_alpha", "photogen", "code_interpreter")  # BuiltinTool
TOOL_PROMPT_FORMATS = ("json", "function_tag", "python_list")  # Meta's ToolPromptFormat
# llama_models/llama3/tool_utils.py: BUILTIN_TOOL_PATTERN and CUSTOM_TOOL_CALL_PATTERN
_BUILTIN_CALL = re.compile(r'\b(?P<tool_name>\w+)\.call\(query="(?P<query>[^"]*)"\)')
_FUNCTION_TAG = re.compile(r"<function=(?P<function_name>[^}]+)>(?P<args>{.*?})")


def encode_tool_call(call: Mapping[str, Any], tool_prompt_format: str = "json") -> str:
    """The text of one tool call in an assistant message (Meta's ``ToolUtils.encode_tool_call``).

    Args:
        call: ``{"tool_name": str, "arguments": dict}``; builtin tools take ``query`` (``code``
            for the code interpreter).
        tool_prompt_format: how custom tools are written: "json", "function_tag" or "python_list".
    """
    where = f"encode_tool_call({call!r:.80})"
    named = isinstance(call, Mapping) and isinstance(call.get("tool_name"), str)
    if not named or "arguments" not in call:
        raise ChatFormatError(f"{where}: expected a dict with 'tool_name' (str) and 'arguments'")
    name, args = call["tool_name"], call["arguments"]
    if name in BUILTIN_TOOLS:
        key = "code" if name == "code_interpreter" else "query"
        if not isinstance(args, Mapping) or key not in args:
            raise ChatFormatError(
                f"{where}: {name} arguments must be a dict with {key!r}, found {args!r:.80}"
            )
        return args[key] if key == "code" else f'{name}.call(query="{args[key]}")'
    if tool_prompt_format == "json":
        return json.dumps({"type": "function", "name": name, "parameters": args})
    if tool_prompt_format == "function_tag":
        return f"<function={name}>{json.dumps(args)}</function>"
    if tool_prompt_format == "python_list":
        if not isinstance(args, Mapping):
            raise ChatFormatError(
                f"{where}: python_list arguments must be a dict, found {args!r:.80}"
            )
        kwargs = ", ".join(f"{k}={_python_value(v, where)}" for k, v in args.items())
        return f"[{name}({kwargs})]"
    raise ChatFormatError(
        f"tool_prompt_format must be one of {TOOL_PROMPT_FORMATS}, found {tool_prompt_format!r}"
    )


def _python_value(value: Any, where: str) -> str:
    """A value in Meta's python_list layout (tool_utils.py ``format_value``: strings quoted, not
    escaped)."""
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
    """``[f(a=1), g(b="x")]`` -> ``[("f", {"a": 1}), ...]`` if ``body`` is exactly such a list
    (parsed, never run)."""
    try:
        tree = ast.parse(body)
    except (SyntaxError, ValueError):
        return None
    top = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(top, ast.Expr) or not isinstance(top.value, ast.List):
        return None
    calls = top.value.elts
    simple = (
        isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and not c.args for c in calls
    )
    if not calls or not all(simple):
        return None
    try:
        kwargs = [{k.arg: ast.literal_eval(k.value) for k in c.keywords if k.arg} for c in calls]
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return [(c.func.id, k) for c, k in zip(calls, kwargs)]


def _custom_tool_call(body: str) -> tuple[str, Any] | None:
    """Meta's ``ToolUtils.maybe_extract_custom_tool_call``: <function=...> tag, JSON object, or
    python list."""
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
        # Meta raises KeyError when "name" or "parameters" is missing; we read such a reply as text
        if "name" in obj and "parameters" in obj:
            return obj["name"], obj["parameters"]
        return None
    calls = _python_calls(body)
    return calls[0] if calls else None  # Meta reads the first call only


def parse_tool_call(body: str, python_tag: bool = False) -> tuple[str, Any] | None:
    """``(tool_name, arguments)`` of the tool call in an assistant reply, or None (Meta's
    ``decode_assistant_message`` order: custom tool, then ``name.call(query=...)``, then code after
    <|python_tag|>)."""
    custom = _custom_tool_call(body)
    if custom is not None:
        name, args = custom
        if name in BUILTIN_TOOLS and isinstance(args, dict) and args:  # builtin, custom layout
            args = {"query": next(iter(args.values()))}
        return name, args
    builtin = _BUILTIN_CALL.search(body)
    if builtin:
        return builtin["tool_name"], {"query": builtin["query"]}
    return ("code_interpreter", {"code": body}) if python_tag else None
