"""Chat prompts: turn a dialog (a list of ``{"role", "content"}`` dicts) into token ids.

- ``ChatFormat``: Meta's Llama 3 layout (llama_models/llama3/chat_format.py), text messages only::

      <|begin_of_text|>
      <|start_header_id|>system<|end_header_id|>\\n\\n{content}<|eot_id|>      (one block per message)
      <|start_header_id|>assistant<|end_header_id|>\\n\\n                      (the model continues here)

- ``ChatTemplate``: the jinja chat template a checkpoint carries (``tokenizer.chat_template`` in a GGUF,
  ``chat_template`` in tokenizer_config.json), rendered the way transformers' ``apply_chat_template`` does
  (transformers/utils/chat_template_utils.py): same jinja settings and variables, in jinja's
  ``ImmutableSandboxedEnvironment``, because a template from the internet is untrusted code.
"""

from __future__ import annotations

import json
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

__all__ = ["ChatFormatError", "UnsafeTemplateError", "ChatFormat", "ChatTemplate", "Message", "Dialog"]

Message = Mapping[str, Any]
Dialog = Sequence[Message]

ROLES = ("system", "user", "assistant", "ipython", "tool")  # "tool" is written as "ipython", as Meta does


class ChatFormatError(SimpleLlamaError):
    """A dialog or template that cannot be turned into a prompt."""


class UnsafeTemplateError(ChatFormatError, SecurityError):
    """A chat template tried something the jinja sandbox forbids (e.g. ``''.__class__``)."""


def _check_message(message: Any, where: str) -> tuple[str, str]:
    if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
        raise ChatFormatError(f"{where}: expected a dict with 'role' and 'content', found {message!r}")
    role, content = message["role"], message["content"]
    if role not in ROLES:
        raise ChatFormatError(f"{where}: role must be one of {ROLES}, found {role!r}")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]: join the text items
        content = "".join(c["text"] for c in content if isinstance(c, Mapping) and c.get("type") == "text")
    if not isinstance(content, str):
        raise ChatFormatError(f"{where}: content must be a str, found {type(content).__name__}")
    return role, content


class ChatFormat:
    """Meta's Llama 3 chat layout for a Llama 3 ``Tokenizer`` (header tokens + <|eot_id|>)."""

    def __init__(self, tokenizer: Any) -> None:
        needed = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
        missing = [t for t in needed if t not in tokenizer.special_tokens]
        if missing:
            raise ChatFormatError(
                f"ChatFormat: the tokenizer has no {', '.join(missing)}; it is not a Llama 3 tokenizer "
                "(use ChatTemplate with the checkpoint's chat template)"
            )
        self.tokenizer = tokenizer

    def encode_header(self, role: str) -> list[int]:
        """``<|start_header_id|>{role}<|end_header_id|>\\n\\n`` as ids."""
        tok = self.tokenizer
        role = "ipython" if role == "tool" else role
        return [
            tok.special_tokens["<|start_header_id|>"],
            *tok.encode(role, bos=False, eos=False),
            tok.special_tokens["<|end_header_id|>"],
            *tok.encode("\n\n", bos=False, eos=False),
        ]

    def encode_message(self, message: Message) -> list[int]:
        """Header, content (special-token text in it stays plain text), then <|eot_id|>."""
        role, content = _check_message(message, "ChatFormat.encode_message")
        tok = self.tokenizer
        return [
            *self.encode_header(role),
            *tok.encode(content, bos=False, eos=False),
            tok.special_tokens["<|eot_id|>"],
        ]

    def encode_dialog_prompt(self, dialog: Dialog) -> list[int]:
        """<|begin_of_text|>, every message, then an open assistant header for the model to complete."""
        tokens = [self.tokenizer.special_tokens["<|begin_of_text|>"]]
        for message in dialog:
            tokens.extend(self.encode_message(message))
        tokens.extend(self.encode_header("assistant"))
        return tokens


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
