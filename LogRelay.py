"""LogRelay: lazy logging for any object, plus busy-state (progress) tracking.

Minimal first version; the full feature set is tracked in the subroutines/LogRelay issue.
Public API (stable): ``LogRelay`` (mixin), ``setup_log_relay(obj, name=None, level=None)``,
``get_relay(name)``, and on every relay ``debug/info/warning/error/exception`` and ``busy(kind, total=None)``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

__all__ = ["LogRelay", "Relay", "setup_log_relay", "get_relay", "setupLogRelay"]


class Busy:
    """Progress of one kind of work: ``done`` of ``total`` units; drives an optional tqdm bar."""

    def __init__(self, kind: str, total: int | None, progress: bool) -> None:
        self.kind, self.total, self.done = kind, total, 0
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=kind, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LogRelay:
    """Mixin: ``self.info("loaded %s", name)``; the logger is made on first use."""

    def _relay_logger(self) -> logging.Logger:
        logger = self.__dict__.get("_log_relay_logger")
        if logger is None:
            name = self.__dict__.get("_log_relay_name") or type(self).__name__
            logger = logging.getLogger(name)
            self.__dict__["_log_relay_logger"] = logger
        return logger

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        self._relay_logger().debug(msg, *args, stacklevel=2, **kw)

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        self._relay_logger().info(msg, *args, stacklevel=2, **kw)

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        self._relay_logger().warning(msg, *args, stacklevel=2, **kw)

    def error(self, msg: str, *args: Any, **kw: Any) -> None:
        self._relay_logger().error(msg, *args, stacklevel=2, **kw)

    def exception(self, msg: str, *args: Any, **kw: Any) -> None:
        self._relay_logger().exception(msg, *args, stacklevel=2, **kw)

    @contextlib.contextmanager
    def busy(self, kind: str, total: int | None = None, progress: bool = True) -> Iterator[Busy]:
        b = Busy(kind, total, progress)
        try:
            yield b
        finally:
            b.close()


class Relay(LogRelay):
    """A stand-alone relay for module-level code: ``log = get_relay(__name__)``."""

    def __init__(self, name: str) -> None:
        self._log_relay_name = name


def get_relay(name: str) -> Relay:
    return Relay(name)


def setup_log_relay(obj: Any, name: str | None = None, level: int | None = None) -> Any:
    """Give ``obj`` the LogRelay methods (by changing its class to a subclass with the mixin)."""
    if not isinstance(obj, LogRelay):
        cls = type(obj)
        obj.__class__ = type(cls.__name__, (cls, LogRelay), {})
    obj.__dict__["_log_relay_name"] = name or type(obj).__name__
    if level is not None:
        obj._relay_logger().setLevel(level)
    return obj


setupLogRelay = setup_log_relay
