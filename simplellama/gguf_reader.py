"""Opening a GGUF file (llama.cpp) safely and fast: ``open_gguf`` and ``FastGGUFReader``.

Both the checkpoint loader and the byte-level BPE tokenizer read GGUF metadata; they open files
here, so a corrupt or hostile file ends in one line naming it: truncated data, bytes that are not
UTF-8, tensors past the end of the file, and array lengths larger than the file (which would
otherwise make the reader loop for as long as the length says) are all refused.
"""

from __future__ import annotations

import os
import struct
import sys
from typing import Any

import gguf
import numpy as np
from gguf import GGUFValueType

from .errors import SimpleLlamaError
from .files import regular_file

__all__ = ["FastGGUFReader", "open_gguf", "gguf_metadata", "gguf_field"]

# Fewest bytes one array element takes: a string is a u64 length (+ bytes), an array a u32 type
# and a u64 length (+ items).
_MIN_ITEM_BYTES = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}


class FastGGUFReader(gguf.GGUFReader):
    """``gguf.GGUFReader`` with a faster, bounded parse of metadata arrays.

    The stock reader calls ``_get`` (several numpy calls) for every element of an array field:
    parsing the 49152 tokens + 48900 merges of a Llama 3 style vocabulary takes seconds. This
    subclass walks little-endian arrays with ``struct`` and slices the memory map once per element,
    producing the same ``ReaderField`` parts (tests compare every field with the stock reader; it
    overrides a private method, so pyproject.toml pins gguf). Big-endian files and nested arrays
    take the stock path. Every array's length is first checked against the bytes left in the file.
    """

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list, list[int], list]:
        V = GGUFValueType
        if raw_type != V.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        item_type = V(int(self._get(orig_offs, np.uint32)[0]))  # ValueError: unknown type
        count = int(self._get(orig_offs + 4, np.uint64)[0])
        scalar = self.gguf_scalar_to_np.get(item_type)
        least = _MIN_ITEM_BYTES.get(item_type) or np.dtype(scalar).itemsize
        room = len(self.data) - orig_offs - 12
        if count * least > room:
            raise ValueError(
                f"an array of {count} {item_type.name} items at offset {orig_offs} needs at "
                f"least {count * least} bytes, {max(room, 0)} are left in the file"
            )
        if item_type == V.ARRAY or self.byte_order != "I" or sys.byteorder != "little":
            return super()._get_field_parts(orig_offs, raw_type)
        parts: list[np.ndarray] = [
            self._get(orig_offs, np.uint32),
            self._get(orig_offs + 4, np.uint64),
        ]
        offs, data = orig_offs + 12, self.data.view(np.ndarray)  # plain views: memmap is slow
        if item_type == V.STRING:  # (u64 length, bytes) per element: two parts, data is the bytes
            unpack = struct.Struct("<Q").unpack_from
            for _ in range(count):
                (n,) = unpack(data, offs)
                parts += (data[offs : offs + 8].view(np.uint64), data[offs + 8 : offs + 8 + n])
                offs += 8 + n
            idxs = list(range(3, len(parts), 2))
        else:  # one part of one element each, as the stock reader
            size = np.dtype(scalar).itemsize
            values = data[offs : offs + size * count].view(scalar)
            parts += (values[i : i + 1] for i in range(count))
            offs += size * count
            idxs = list(range(2, len(parts)))
        return offs - orig_offs, parts, idxs, [V.ARRAY, item_type]


def open_gguf(path: str | os.PathLike, error: type[SimpleLlamaError]) -> FastGGUFReader:
    """A parsed GGUF file whose tensors all lie inside it; any defect is ``error`` naming it."""
    path = regular_file(path, error)
    try:
        reader = FastGGUFReader(path)
    except Exception as e:  # whatever numpy/struct/gguf raise on bytes that are not a GGUF file
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise error(
            f"{path}: truncated or corrupt GGUF file ({type(e).__name__}: {first})"
        ) from None
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size or t.data.nbytes != t.n_bytes:
            raise error(
                f"{path}: truncated GGUF file: tensor {t.name} needs bytes up to "
                f"{t.data_offset + t.n_bytes}, file has {size}"
            )
    reader.path, reader.error = path, error  # for the messages of gguf_field / gguf_metadata
    return reader


def gguf_field(reader: Any, key: str, default: Any = None) -> Any:
    """The Python value of metadata ``key`` (``default`` if absent); text that is not UTF-8 is the
    reader's error (``open_gguf``) naming the file and key."""
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except UnicodeDecodeError as e:
        error = getattr(reader, "error", SimpleLlamaError)
        where = getattr(reader, "path", None) or reader.data.filename
        raise error(f"{where}: metadata {key}: not UTF-8 text ({e.reason})") from None


def gguf_metadata(reader: Any) -> dict[str, Any]:
    """All key/value metadata except the (large) tokenizer arrays, as Python values."""
    return {
        key: gguf_field(reader, key)
        for key, field in reader.fields.items()
        if not (key.startswith("tokenizer.ggml.") and len(field.data) > 1)  # LIST, MERGES, ...
    }
