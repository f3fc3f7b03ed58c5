"""Reading the small files a checkpoint carries, and the paths they name, without surprises.

Every loader reads JSON (params.json, config.json, the safetensors index, tokenizer.json, ...)
through :func:`read_json`, which turns each way a file can be wrong (not UTF-8, empty, invalid,
nested too deep, NaN/Infinity, not an object) into one line naming the file. Every file opened
from inside a checkpoint directory goes through :func:`checkpoint_file`: a name a file gives (a
``weight_map`` entry of ``model.safetensors.index.json``) or a fixed one (``params.json``) must
resolve inside the checkpoint's directory and be a regular file, so an index cannot make the
loader read ``../../elsewhere``, block forever on a named pipe or fail on a directory.

The one exception to "inside": a Hugging Face hub cache snapshot (``.../snapshots/<rev>/``) holds
symlinks into its repository's ``blobs/`` directory, written by ``huggingface_hub`` itself.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .errors import SimpleLlamaError

__all__ = ["MAX_JSON_BYTES", "read_json", "regular_file", "checkpoint_file"]

MAX_JSON_BYTES = 256 << 20  # Llama 3's tokenizer.json is 9 MB; configs are a few KB


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: str | os.PathLike, error: type[SimpleLlamaError], what: str = "") -> Path:
    """``path`` if it is a regular file (symlinks followed), else ``error`` naming what it is.

    Checked with ``stat`` before any ``open``: opening a named pipe blocks until a writer comes.
    """
    path = Path(path)
    where = f"{what}: " if what else ""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{where}{path}: file not found") from None
    except OSError as e:
        raise error(f"{where}{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if not stat.S_ISREG(mode):
        raise error(f"{where}{path}: expected a regular file, found {_kind(mode)}")
    return path


def _hub_blobs(root: Path) -> Path | None:
    """``<repo>/blobs`` when ``root`` is a hub cache snapshot ``<repo>/snapshots/<revision>``."""
    if root.parent.name == "snapshots" and (root.parent.parent / "blobs").is_dir():
        return (root.parent.parent / "blobs").resolve()
    return None


def checkpoint_file(
    root: str | os.PathLike, name: Any, error: type[SimpleLlamaError], what: str = ""
) -> Path:
    """The regular file ``name`` (a relative path given by a checkpoint) inside directory ``root``.

    Refused, naming ``what`` (e.g. ``index.json: weight_map['lm_head.weight']``) or the path: a
    name that is not a non-empty string, is absolute, holds ``..`` or NUL, or resolves (through
    symlinks) outside ``root``; and a target that is missing or not a regular file. Nothing is
    opened.
    """
    root = Path(root)
    if not isinstance(name, str) or not name or "\x00" in name:
        where = what or str(root)
        raise error(f"{where}: expected a file name (a non-empty string), found {name!r:.80}")
    where = f"{what}: {name!r}" if what else str(root / name)
    parts = [*PurePosixPath(name).parts, *PureWindowsPath(name).parts]
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or ".." in parts:
        raise error(f"{where} leaves the checkpoint directory {root} (absolute path or '..')")
    base = root.resolve()
    try:
        target = (root / name).resolve(strict=True)
        mode = target.stat().st_mode
    except FileNotFoundError:
        raise error(f"{where} is missing" + (f" from {root}" if what else "")) from None
    except (OSError, RuntimeError) as e:  # symlink loops, permissions
        raise error(f"{where} cannot be resolved ({type(e).__name__}: {e})") from None
    blobs = _hub_blobs(base)
    if not (target.is_relative_to(base) or (blobs is not None and target.is_relative_to(blobs))):
        raise error(f"{where} resolves to {target}, outside the checkpoint directory {root}")
    if not stat.S_ISREG(mode):
        raise error(f"{where}: expected a regular file, found {_kind(mode)}")
    return target


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(
    path: str | os.PathLike,
    error: type[SimpleLlamaError],
    max_bytes: int = MAX_JSON_BYTES,
    expect: type = dict,
) -> Any:
    """Parse the JSON file ``path``, which must hold a ``expect`` (an object by default).

    Every failure is ``error`` with one line naming the file: missing, not a regular file, larger
    than ``max_bytes``, not UTF-8, empty, invalid (with line and column), NaN/Infinity (not JSON),
    nested too deep for the parser, or the wrong top-level type.
    """
    path = regular_file(path, error)
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path}: {size} bytes, more than the {max_bytes} a JSON file here may have")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        found = f"byte {data[e.start]:#04x} at offset {e.start}"
        raise error(f"{path}: not UTF-8 text ({found})") from None
    if not text.strip():
        raise error(f"{path}: empty file, expected a JSON {_json_type(expect)}")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        found = f"{e.msg} at line {e.lineno} column {e.colno}"
        raise error(f"{path}: not valid JSON ({found})") from None
    except ValueError as e:  # NaN / Infinity
        raise error(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to parse") from None
    if not isinstance(value, expect):
        found = _json_type(type(value))
        raise error(f"{path}: expected a JSON {_json_type(expect)}, found {found}")
    return value


def _json_type(t: type) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(t, "number")
