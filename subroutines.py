"""subroutines: dataclass configs on the command line, nested field access, config files, tensor printing.

The project's original example (camelCase names are aliases of the snake_case API below)::

    import argparse
    from dataclasses import asdict, dataclass
    from subroutines import *
    from LogRelay import *

    @dataclass
    class SomeFoo:
        val: float = 8.0

    @dataclass
    class MyConfig:
        foo: int = 0
        somefoo: SomeFoo = DCField(SomeFoo)

    class MyConfigUser(MyConfig):
        def reconfigure(self, argv):
            parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
            triples = buildCmdLineParserFrom(MyConfig)
            for _field, switch, convert in triples:
                parser.add_argument(switch, type=convert)
            return overrideConfig(self, parser.parse_args(argv), triples, printer=self.info)

    cc = setupLogRelay(MyConfigUser())
    cc.reconfigure(splitByWhiteSpace("--somefoo.val=7 --foo=9"))
    print(asdict(cc))
    cc.info("reconfigured")

It prints ``{'foo': 9, 'somefoo': {'val': 7.0}}``; ``setupLogRelay`` shows the object's messages on stderr
(unless the application configured logging itself): ``...:INFO:MyConfigUser: overriding foo=9 (was 0)``,
``...:INFO:MyConfigUser: overriding somefoo.val=7.0 (was 8.0)`` and ``...:INFO:MyConfigUser: reconfigured``.
The snake_case way::

    parser = ArgumentParser()                    # unknown switch -> error plus "did you mean --closest?"
    triples = add_dataclass_arguments(parser, MyConfig)
    cfg = override_config(MyConfig(), parser.parse_args(argv), triples)

or ``parse_config(MyConfig, argv)``, which also loads ``--config file.json`` before applying the switches.
Switch types: int, float, str, bool (``true/false/yes/no/1/0``, ``--flag``/``--no-flag``), ``X | None``
(``none``), ``Literal[...]`` and Enum choices, ``list[X]`` (comma separated), ``Path``, nested dataclasses
(``--outer.inner.field``). Help text comes from ``field(metadata={"help": ...})``.

Ascii-art printing: ``hprt`` pastes its arguments side by side (tops aligned), ``vprt`` stacks them (left
aligned); ``hformat``/``vformat`` return the same text, so blocks nest::

    >>> x = [[1.0, 2.0], [3.0, 4.0]]                   # or a torch tensor, numpy array, tinytorch tensor
    >>> hprt("x =", vformat((2, 2), x), sep=" ")
    x = (2, 2)
        1.0000 2.0000
        3.0000 4.0000
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import difflib
import enum
import json
import os
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from LogRelay import get_relay

# fmt: off
__all__ = [
    "ArgumentParser", "ConfigError", "ConfigValueError", "Converter", "add_dataclass_arguments",
    "build_cmdline_parser_from", "override_config", "parse_config", "convert_value", "get_field", "set_field",
    "diff_configs", "config_to_dict", "config_from_dict", "config_to_json", "config_from_json", "save_config",
    "load_config", "format_tensors", "hformat", "vformat", "hprt", "vprt", "dc_field", "split_by_whitespace",
    # the project's original names; its examples also use these stdlib names after `import *`
    "buildCmdLineParserFrom", "overrideConfig", "DCField", "splitByWhiteSpace", "argparse", "asdict", "dataclass",
    "field",
]
# fmt: on

T = TypeVar("T")
log = get_relay("subroutines")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


class ConfigError(ValueError):
    """A config field, value or file does not match its dataclass."""


class ConfigValueError(ConfigError, argparse.ArgumentTypeError):
    """A value that does not convert to its field's type (argparse reports it against the switch)."""


# ---------------------------------------------------------------- types and values


def _hints(cls: type) -> dict[str, Any]:
    """Field types of a dataclass, resolving string annotations (``from __future__ import annotations``)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a name local to a function: resolve field by field
        pass
    hints, module = {}, vars(sys.modules.get(cls.__module__, builtins))
    for f in dataclasses.fields(cls):
        try:
            hints[f.name] = eval(f.type, module) if isinstance(f.type, str) else f.type  # what get_type_hints does
        except Exception:  # fall back on the default's class (e.g. DCField(SomeFoo) for a local SomeFoo)
            factory = f.default_factory if isinstance(f.default_factory, type) else None
            hints[f.name] = factory or (type(f.default) if f.default not in (None, dataclasses.MISSING) else f.type)
    return hints


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(m.name for m in tp)
    if _is_union(tp):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if tp is bool:
        return "bool (true/false/yes/no/1/0)"
    if origin in (list, tuple):
        return f"comma-separated list of {_type_name(args[0]) if args else 'str'}"
    return getattr(tp, "__name__", str(tp))


def _metavar(tp: Any) -> str:
    tp = next((a for a in get_args(tp) if a is not type(None)), tp) if _is_union(tp) else tp
    is_enum = isinstance(tp, type) and issubclass(tp, enum.Enum)
    choices = get_args(tp) if get_origin(tp) is Literal else [m.name for m in tp] if is_enum else None
    if choices is not None:
        return "{" + ",".join(map(str, choices)) + "}"
    return "A,B,..." if get_origin(tp) in (list, tuple) else getattr(tp, "__name__", "VALUE").upper()


def convert_value(tp: Any, value: Any, path: str = "value") -> Any:
    """Convert ``value`` (command-line text or a JSON value) to the field type ``tp``.

    Raises:
        ConfigValueError: naming ``path``, the expected type and the value found.
    """
    origin, args = get_origin(tp), get_args(tp)
    text = value.strip() if isinstance(value, str) else None
    bad = ConfigValueError(f"invalid value {value!r} for {path}: expected {_type_name(tp)}")
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        if type(None) in args and (value is None or (text or "").lower() in ("none", "null")):
            return None
        for a in args:
            try:
                return convert_value(a, value, path)
            except ConfigValueError:
                pass
        raise bad
    if origin is Literal:
        for choice in args:
            if value == choice or (text is not None and text == str(choice)):
                return choice
        raise bad
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for m in tp:
            if value is m or value == m.value or (text is not None and text.lower() in (m.name.lower(), str(m.value))):
                return m
        raise bad
    if origin in (list, tuple) or tp in (list, tuple):
        items = ([] if text == "" else [s.strip() for s in text.split(",")]) if text is not None else value
        if not isinstance(items, list | tuple):
            raise bad
        out = [convert_value(args[0] if args else str, x, f"{path}[{i}]") for i, x in enumerate(items)]
        return tuple(out) if (origin or tp) is tuple else out
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(tp, value, _path=path + ".")
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise bad
    if isinstance(value, bool) and tp in (int, float):  # True is an int in Python, not in a config
        raise bad
    if tp is float and isinstance(value, int):
        return float(value)
    cls = origin or tp
    if isinstance(cls, type):
        if isinstance(value, cls):
            return value
        if text is not None:
            try:
                return cls(text)  # int, float, Path, and any class built from a string
            except (TypeError, ValueError):
                pass
    raise bad


class Converter:
    """``text -> value`` for one field; usable as argparse ``type=`` (errors name the field)."""

    def __init__(self, path: str, tp: Any) -> None:
        self.path, self.tp, self.__name__ = path, tp, _type_name(tp)

    def __call__(self, text: Any) -> Any:
        return convert_value(self.tp, text, self.path)

    def __repr__(self) -> str:
        return f"Converter({self.path!r}, {self.__name__})"


# ---------------------------------------------------------------- command line


def _leaves(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """(dotted path, type, field) of every init field, descending into nested dataclasses."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, f.type)
        if not f.init:
            continue
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            yield from _leaves(tp, prefix + f.name + ".")
        else:
            yield prefix + f.name, tp, f


def _dest(switch: str) -> str:
    return switch.lstrip("-").replace("-", "_")  # what argparse derives from an option string


def build_cmdline_parser_from(cls: type, prefix: str = "") -> list[tuple[str, str, Converter]]:
    """``(field path, switch, converter)`` for every field of dataclass ``cls``: ``("a.b", "--a.b", conv)``.

    ``prefix`` puts the switches under a name (``prefix="model"`` gives ``--model.dim``); paths stay relative.
    """
    pre = prefix.strip(".") + "." if prefix else ""
    return [(path, f"--{pre}{path}", Converter(path, tp)) for path, tp, _ in _leaves(cls)]


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, prefix: str = "", *, dashes: bool = False
) -> list[tuple[str, str, Converter]]:
    """Add one switch per field of ``cls`` (bools also get ``--no-x``); returns the triples for override_config.

    Switches default to ``argparse.SUPPRESS``, so the namespace holds only the switches actually given.
    ``dashes=True`` spells field ``max_seq_len`` ``--max-seq-len`` (the spelling help shows) and also accepts
    ``--max_seq_len``.
    """
    triples = build_cmdline_parser_from(cls, prefix)
    try:
        defaults: Any = cls()
    except TypeError:  # required fields: no defaults to show
        defaults = None
    for (path, switch, conv), (_, tp, f) in zip(triples, _leaves(cls)):
        help_text = f.metadata.get("help", "")
        if defaults is not None:
            help_text += f" (default: {_plain(get_field(defaults, path))})"
        kw: dict[str, Any] = dict(dest=_dest(switch), default=argparse.SUPPRESS, help=help_text.strip())
        kw["help"] = kw["help"].replace("%", "%%")  # argparse %-formats help strings
        names = [switch.replace("_", "-"), switch] if dashes and "_" in switch else [switch]
        if tp is bool or (_is_union(tp) and bool in get_args(tp)):
            group = parser.add_mutually_exclusive_group()
            group.add_argument(*names, type=conv, nargs="?", const=True, metavar="BOOL", **kw)
            kw["help"] = f"set {path} to False"
            group.add_argument(*[f"--no-{n[2:]}" for n in names], action="store_false", **kw)
        else:
            parser.add_argument(*names, type=conv, metavar=_metavar(tp), **kw)
    return triples


def _switches(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--switch`` of a parser and of its subcommands."""
    out = []
    for action in parser._actions:
        out += [s for s in action.option_strings if s.startswith("--")]
        for sub in (action.choices or {}).values() if isinstance(action, argparse._SubParsersAction) else ():
            out += _switches(sub)
    return out


class ArgumentParser(argparse.ArgumentParser):
    """argparse parser whose unknown-switch error also names the closest valid switch (exit status 2).

    Abbreviated switches are off by default (``--somefoo.v`` is an error, not ``--somefoo.val``).
    """

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kw: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kw)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)  # for error(): the words this parser saw
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("the following arguments are required"):
            # A misspelt required switch ("--promt") is the likelier mistake: name it first.
            known = _switches(self)
            unknown = [a for a in getattr(self, "_argv", []) if a.startswith("--") and a.split("=")[0] not in known]
            if unknown:
                message = "unrecognized arguments: " + " ".join(unknown)
        if message.startswith("unrecognized arguments:"):
            known = _switches(self)
            for arg in message.split(":", 1)[1].split():
                switch = arg.split("=", 1)[0]
                close = difflib.get_close_matches(switch, known, n=1, cutoff=0.6) if switch.startswith("-") else []
                if close:
                    message += f"; {switch}: did you mean {close[0]}?"
        super().error(message)


def _report(printer: Any, message: str) -> None:
    if printer is None:
        log.info("%s", message)
    elif callable(getattr(printer, "info", None)):  # a logging.Logger or a LogRelay
        printer.info(message)
    elif callable(printer):  # self.info, print, list.append, ...
        printer(message)
    else:
        raise ConfigError(f"override_config: printer must be a callable or a logger, found {type(printer).__name__}")


def override_config(config: T, namespace: Any, triples: list[tuple[str, str, Any]], printer: Any = None) -> T:
    """Set the fields whose switches are present in ``namespace`` (argparse Namespace or dict); return ``config``.

    Each override is reported as ``overriding a.b=7.0 (was 8.0)`` through ``printer`` (a callable such as
    ``self.info`` or ``print``, or a logger; default: the ``subroutines`` logger at INFO).
    """
    values = namespace if isinstance(namespace, Mapping) else vars(namespace)
    for path, switch, conv in triples:
        if _dest(switch) not in values:
            continue
        new = values[_dest(switch)]
        new = conv(new) if isinstance(new, str) else new  # also when the switch was added without type=
        old = get_field(config, path)
        set_field(config, path, new)
        _report(printer, f"overriding {path}={_plain(new)} (was {_plain(old)})")
    return config


def parse_config(
    cls: type[T], argv: list[str] | None = None, *, description: str | None = None, printer: Any = None
) -> T:
    """Build ``cls`` from an optional ``--config FILE.json`` and then the command-line switches."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=None, help="JSON config file, applied before the switches")
    triples = add_dataclass_arguments(parser, cls)
    ns = parser.parse_args(argv)
    config = load_config(cls, ns.config) if ns.config is not None else cls()
    return override_config(config, ns, triples, printer)


# ---------------------------------------------------------------- nested fields, dicts, JSON


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else list(vars(obj))


def get_field(obj: Any, path: str) -> Any:
    """``get_field(cfg, "somefoo.val")`` is ``cfg.somefoo.val``; a wrong name raises ConfigError."""
    cur = obj
    for name in path.split("."):
        if name not in _field_names(cur):
            valid = [p for p, _, _ in _leaves(type(obj))] if dataclasses.is_dataclass(obj) else _field_names(cur)
            raise ConfigError(f"no field {path!r} in {type(obj).__name__}" + _did_you_mean(path, valid))
        cur = getattr(cur, name)
    return cur


def set_field(obj: Any, path: str, value: Any) -> None:
    """``set_field(cfg, "somefoo.val", 7.0)`` sets ``cfg.somefoo.val`` (the field must exist)."""
    head, _, last = path.rpartition(".")
    get_field(obj, path)  # checks every name on the way
    setattr(get_field(obj, head) if head else obj, last, value)


def _plain(v: Any) -> Any:
    """JSON-ready form of a config value: dataclasses as dicts, Paths as str, Enums by name."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, enum.Enum):
        return v.name
    if isinstance(v, PurePath):
        return str(v)
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass: nested dataclasses as dicts, Paths as str, Enums by name."""
    return _plain(config)


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, _path: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict; values are converted and checked like switches.

    Raises:
        ConfigError: an unknown key (with the closest valid one) or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_path or cls.__name__}: expected a mapping of fields, found {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            hint = _did_you_mean(_path + str(key), [_path + name for name in fields])
            raise ConfigError(f"unknown field {_path + str(key)!r} for {cls.__name__}" + hint)
    hints = _hints(cls)
    return cls(**{k: convert_value(hints.get(k, fields[k].type), v, _path + k) for k, v in data.items()})


def diff_configs(a: Any, b: Any) -> list[str]:
    """Dotted paths of the fields whose values differ between configs ``a`` and ``b`` (nested included)."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix[:-1]: d}
        return {k: v for key, x in d.items() for k, v in flat(x, f"{prefix}{key}.").items()}

    fa, fb = flat(config_to_dict(a)), flat(config_to_dict(b))
    missing = object()
    return [k for k in dict.fromkeys([*fa, *fb]) if fa.get(k, missing) != fb.get(k, missing)]


def config_to_json(config: Any, indent: int = 2) -> str:
    return json.dumps(config_to_dict(config), indent=indent)


def config_from_json(cls: type[T], text: str) -> T:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"config for {cls.__name__} is not valid JSON: {err}") from None
    return config_from_dict(cls, data)


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write ``config`` as JSON; written to a temp file and renamed, so never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(config_to_json(config) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    """Read a JSON config file into ``cls``; errors name the file."""
    try:
        return config_from_json(cls, Path(path).read_text())
    except (OSError, ConfigError) as err:
        raise ConfigError(f"{path}: {err}") from None


def dc_field(factory: Callable[[], Any], **kw: Any) -> Any:
    """``field(default_factory=factory)``: a nested dataclass default, fresh for each instance."""
    return field(default_factory=factory, **kw)


def split_by_whitespace(text: str | None) -> list[str]:
    """``"--a=1  --b=2"`` -> ``["--a=1", "--b=2"]``: an argv from one string (no shell quoting)."""
    return text.split() if text else []


# ---------------------------------------------------------------- tensor printing


def _trim(seq: list, n: int) -> list:
    """The ends of a long axis, with None for the elided middle."""
    return list(seq) if len(seq) <= n else [*seq[: max(n // 2, 1)], None, *seq[-max(n // 2, 1) :]]


def _grid(values: Any, precision: int, n: int) -> list[str]:
    """Text rows of a 0-, 1- or 2-d nested list, all cells right-aligned to one width."""
    if not isinstance(values, list) or not values or not isinstance(values[0], list):
        values = [values if isinstance(values, list) else [values]]  # 0-d and 1-d: one row

    def cell(x: Any) -> str:
        return "..." if x is None else f"{x:.{precision}f}" if isinstance(x, float) else str(x)

    cells = [None if r is None else [cell(x) for x in _trim(r, n)] for r in _trim(values, n)]
    width = max((len(c) for r in cells if r for c in r), default=0)
    return ["..." if r is None else " ".join(c.rjust(width) for c in r) for r in cells]


def _blocks(values: Any, ndim: int, precision: int, n: int, idx: tuple = ()) -> list[str]:
    """Lines for an n-d nested list: one labelled 2-d grid per index of the leading axes."""
    if ndim <= 2:
        return ([f"[{', '.join(map(str, idx))}, :, :]"] if idx else []) + _grid(values, precision, n)
    lines = []
    for i in _trim(list(range(len(values))), n):
        lines += ["..."] if i is None else _blocks(values[i], ndim - 1, precision, n, (*idx, i))
    return lines


def _tensor_lines(name: str | None, t: Any, precision: int, n: int) -> list[str]:
    """``name shape dtype`` (skipped when name is None), then the value grids."""
    if hasattr(t, "detach"):  # torch: leave the autograd graph
        t = t.detach()
    values = t.tolist() if hasattr(t, "tolist") else t
    if hasattr(t, "shape"):
        shape = tuple(int(d) for d in t.shape)
    else:
        shape, v = [], values
        while isinstance(v, list):
            shape, v = [*shape, len(v)], (v[0] if v else None)
        shape = tuple(shape)
    lines = _blocks(values, len(shape), precision, n)
    if name is None:
        return lines
    first = values
    while isinstance(first, list) and first:
        first = first[0]
    dtype = str(getattr(t, "dtype", type(first).__name__)).removeprefix("torch.")
    return [f"{name} {shape} {dtype}", *lines]


def _lines(x: Any, precision: int, n: int) -> list[str]:
    """The block of text lines that hformat/vformat draw for one argument."""
    if isinstance(x, str):
        return x.split("\n")
    if isinstance(x, list) or (hasattr(x, "shape") and hasattr(x, "tolist")):  # tensors, arrays, nested lists
        return _tensor_lines(None, x, precision, n)
    if isinstance(x, float):
        return [f"{x:.{precision}f}"]
    if isinstance(x, tuple):  # torch.Size, tinytorch.Size: (2, 3), not torch.Size([2, 3])
        return [str(tuple(x))]
    return str(x).split("\n")


def hformat(*args: Any, sep: str = " ", precision: int = 4, max_items: int = 8) -> str:
    """The arguments as blocks of lines pasted side by side, tops aligned, ``sep`` between columns.

    An argument is a (multi-line) string, a number, a tuple (a shape), or a torch tensor, numpy array,
    tinytorch Tensor/TinyArray or nested list, drawn as its values the way :func:`format_tensors` does
    (``precision`` digits, axes longer than ``max_items`` elided). ``hformat("x =", vformat(x.shape, x))``
    puts a name beside a shape stacked over values.
    """
    blocks = [_lines(a, precision, max_items) for a in args]
    height = max(map(len, blocks), default=0)
    widths = [max(map(len, b)) for b in blocks]
    rows = zip(*(b + [""] * (height - len(b)) for b in blocks))
    return "\n".join(sep.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def vformat(*args: Any, sep: str = "\n", precision: int = 4, max_items: int = 8) -> str:
    """The arguments as blocks of lines stacked top to bottom, left aligned, joined by ``sep``.

    Arguments are drawn as in :func:`hformat`; ``sep="\\n\\n"`` leaves a blank line between blocks.
    """
    return sep.join("\n".join(_lines(a, precision, max_items)) for a in args)


def hprt(
    *args: Any, sep: str = " ", end: str = "\n", file: Any = None, flush: bool = False, precision: int = 4,
    max_items: int = 8,
) -> None:  # fmt: skip
    """Print the arguments side by side, tops aligned (:func:`hformat`); ``sep``, ``end``, ``file`` as print."""
    print(hformat(*args, sep=sep, precision=precision, max_items=max_items), end=end, file=file, flush=flush)


def vprt(
    *args: Any, sep: str = "\n", end: str = "\n", file: Any = None, flush: bool = False, precision: int = 4,
    max_items: int = 8,
) -> None:  # fmt: skip
    """Print the arguments one under another, left aligned (:func:`vformat`); ``end``, ``file`` as print."""
    print(vformat(*args, sep=sep, precision=precision, max_items=max_items), end=end, file=file, flush=flush)


def format_tensors(
    *tensors: Any, layout: str = "horizontal", precision: int = 4, max_items: int = 8, gap: int = 4, **named: Any
) -> str:
    """Name, shape, dtype and values of several tensors, side by side or stacked.

    Works for torch tensors, numpy arrays, tinytorch Tensors (anything with ``.shape`` and ``.tolist()``) and
    nested lists. Pass them as keywords ``format_tensors(q=q, k=k)``, as ``(name, tensor)`` pairs, or bare.
    Axes longer than ``max_items`` show their ends around ``...``.

    Args:
        layout: "horizontal" (blocks side by side, :func:`hformat`) or "vertical" (blocks one under another,
            :func:`vformat`).
        precision: digits after the point for floats.
    """
    if layout not in ("horizontal", "vertical"):
        raise ValueError(f"format_tensors: layout must be 'horizontal' or 'vertical', found {layout!r}")
    items = [t if isinstance(t, tuple) and len(t) == 2 and isinstance(t[0], str) else (f"t{i}", t) for i, t in
             enumerate(tensors)]  # fmt: skip
    blocks = ["\n".join(_tensor_lines(name, t, precision, max_items)) for name, t in [*items, *named.items()]]
    return hformat(*blocks, sep=" " * gap) if layout == "horizontal" else vformat(*blocks, sep="\n\n")


buildCmdLineParserFrom = build_cmdline_parser_from  # noqa: N816 (the project's original names)
overrideConfig = override_config  # noqa: N816
DCField = dc_field
splitByWhiteSpace = split_by_whitespace  # noqa: N816
