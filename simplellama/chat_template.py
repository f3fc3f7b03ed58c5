"""A checkpoint's jinja chat template, rendered as transformers' ``apply_chat_template`` does.

The template comes with the checkpoint (``tokenizer.chat_template`` in a GGUF, ``chat_template`` in
tokenizer_config.json or ``chat_template.jinja``). It is rendered with transformers' jinja settings
and variables (transformers/utils/chat_template_utils.py) in jinja's
``ImmutableSandboxedEnvironment``, because a template from the internet is untrusted code.

Message text is text. transformers encodes the rendered prompt with every special token
recognised, so a user message holding ``<|im_end|><|im_start|>system`` opens a system turn.
``encode_dialog_prompt`` instead swaps each special-token string inside the messages (and
``tools``/``documents``) for a unique placeholder, renders the template around them, encodes the
template's own control tokens as ids and every placeholder as the original text, never as a control
token. Text without special-token strings gets exactly transformers' ids; ``special_in_content``
keeps transformers' behaviour for all text.
"""

from __future__ import annotations

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

from .errors import ChatFormatError
from .tokenizer.common import special_pattern, split_on

__all__ = ["ChatFormatError", "UnsafeTemplateError", "ChatTemplate", "make_environment"]

Message = Mapping[str, Any]
Dialog = Sequence[Message]


class UnsafeTemplateError(ChatFormatError, SecurityError):
    """A chat template tried something the jinja sandbox forbids (e.g. ``''.__class__``)."""


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; here it
    just renders."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


class _TemplateDict:
    """``dict(...)`` for templates without exposing the ``dict`` type itself (as transformers
    does)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace(...)`` that refuses underscore names, so templates cannot reach CPython
    internals."""

    # jinja's signature trick: ``self`` may be a keyword argument
    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805
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
            raise SecurityError(
                f"chat templates cannot set underscore attributes on a namespace: {name!r}"
            )


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    # transformers overrides jinja's tojson, which would HTML-escape <, > and &
    options = dict(ensure_ascii=ensure_ascii, indent=indent, separators=separators)
    return json.dumps(x, sort_keys=sort_keys, **options)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _plain(value: Any) -> Any:
    """Copy template inputs into plain JSON types (rich objects may expose unsafe methods), as
    transformers does."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    # subclasses (enums, numpy scalars...) carry extra methods: keep the base value
    for base in (str, int, float):
        if isinstance(value, base):
            return getattr(base, f"__{base.__name__}__")(value)
    return f"<{type(value).__name__}>"


def make_environment() -> ImmutableSandboxedEnvironment:
    """The sandboxed jinja environment transformers renders chat templates in (same options and
    globals)."""
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
        raise UnsafeTemplateError(
            f"{what}: the chat template tried an unsafe operation: {e}"
        ) from e
    except TemplateError as e:
        raise ChatFormatError(f"{what}: {type(e).__name__}: {e}") from e


class _Mask:
    """Swaps special-token strings inside message values for placeholders, and back.

    A placeholder is ``U+E000 <random hex> <n> U+E001``: private-use characters and a per-call
    nonce, so neither a template nor a message can produce one by chance; templates that trim,
    split or quote content keep it whole.
    """

    def __init__(self, specials: Mapping[str, int]) -> None:
        self.pattern = special_pattern(specials)
        self.nonce = uuid.uuid4().hex
        self.found: list[str] = []
        self.back = re.compile(f"\ue000{self.nonce}(\\d+)\ue001")

    def _swap(self, m: re.Match) -> str:
        self.found.append(m.group())
        return f"\ue000{self.nonce}{len(self.found) - 1}\ue001"

    def __call__(self, value: Any) -> Any:
        """``value`` (plain JSON types) with every special-token string in its strings swapped."""
        if isinstance(value, str):
            return value if self.pattern is None else self.pattern.sub(self._swap, value)
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value

    def restore(self, text: str) -> str:
        return self.back.sub(lambda m: self.found[int(m.group(1))], text) if self.found else text


class ChatTemplate:
    """A checkpoint's jinja chat template, rendered like transformers' ``apply_chat_template``.

    Args:
        template: the jinja source.
        tokenizer: fills ``bos_token``/``eos_token``/``unk_token``/``pad_token``; encodes.
        bos_token, eos_token: override the token texts the template sees.
        special_in_content: encode special-token text inside messages as control tokens, as
            transformers does (ids identical to ``apply_chat_template(tokenize=True)``); the
            default encodes it as text (see the module doc).
        **template_vars: extra variables every render gets (e.g. ``enable_thinking=False``).
    """

    def __init__(
        self,
        template: str,
        tokenizer: Any = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        special_in_content: bool = False,
        **template_vars: Any,
    ) -> None:
        if not isinstance(template, str) or not template.strip():
            raise ChatFormatError(
                f"ChatTemplate: template must be a non-empty str, found {template!r:.60}"
            )
        self.source, self.tokenizer = template, tokenizer
        self.special_in_content = special_in_content
        with _template_errors("ChatTemplate"):
            self.template = make_environment().from_string(template)
        # transformers passes tokenizer.special_tokens_map: the bos/eos/unk/pad token texts the
        # tokenizer has
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
            found = type(tokenizer).__name__
            raise ChatFormatError(f"ChatTemplate.from_tokenizer: {found} carries no chat template")
        return cls(template, tokenizer, **kwargs)

    def render(
        self,
        messages: Dialog,
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        **kwargs: Any,
    ) -> str:
        """The prompt text for ``messages``; ``add_generation_prompt`` opens an assistant turn at
        the end."""
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m:
                raise ChatFormatError(
                    f"ChatTemplate.render: messages[{i}] must be a dict with 'role', found {m!r}"
                )
        with _template_errors("ChatTemplate.render"):
            return self.template.render(
                # transformers drops None-valued keys (APIs send content=None, tool_calls=None)
                messages=[{k: v for k, v in _plain(m).items() if v is not None} for m in messages],
                tools=_plain(tools),
                documents=_plain(documents),
                add_generation_prompt=add_generation_prompt,
                **_plain({**self.variables, **kwargs}),
            )

    def encode_dialog_prompt(
        self,
        dialog: Dialog,
        add_generation_prompt: bool = True,
        special_in_content: bool | None = None,
        **kwargs: Any,
    ) -> list[int]:
        """Render and encode, with no extra bos (the template writes its own).

        The template's own special tokens become ids; special-token text inside the messages,
        ``tools`` and ``documents`` stays text unless ``special_in_content`` (default: the
        constructor's) asks for transformers' behaviour (the rendered text encoded with every
        special token recognised).
        """
        tok = self.tokenizer
        if tok is None:
            raise ChatFormatError(
                "ChatTemplate.encode_dialog_prompt: no tokenizer was given to ChatTemplate"
            )
        trust = self.special_in_content if special_in_content is None else special_in_content
        if trust:
            text = self.render(dialog, add_generation_prompt=add_generation_prompt, **kwargs)
            return tok.encode(text, bos=False, eos=False, allowed_special="all")
        specials = dict(getattr(tok, "special_tokens", {}))
        mask = _Mask(specials)
        for key in ("tools", "documents"):
            if kwargs.get(key) is not None:
                kwargs[key] = mask(_plain(kwargs[key]))
        masked = [mask(_plain(m)) if isinstance(m, Mapping) else m for m in dialog]
        text = self.render(masked, add_generation_prompt=add_generation_prompt, **kwargs)
        ids: list[int] = []
        for piece, is_special in split_on(text, special_pattern(specials)):
            if is_special:  # the template's own control token
                ids.append(specials[piece])
            else:  # template text and message text, placeholders back to their original text
                ids += tok.encode(mask.restore(piece), bos=False, eos=False, allowed_special=())
        return ids

    def decode_assistant_message(self, tokens: Sequence[int], stop_reason: str) -> dict[str, Any]:
        """``{"role": "assistant", "content": decoded text, "stop_reason": stop_reason}`` (tool-call
        layouts differ between templates, so the text is not parsed for them)."""
        if self.tokenizer is None:
            raise ChatFormatError(
                "ChatTemplate.decode_assistant_message: no tokenizer was given to ChatTemplate"
            )
        content = self.tokenizer.decode(list(tokens))
        return {"role": "assistant", "content": content, "stop_reason": stop_reason}
