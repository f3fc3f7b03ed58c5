"""LogRelay: lazy logging that any object can carry, plus busy-state (progress) tracking.

Three ways to get ``.debug/.info/.warning/.error/.exception`` and ``.busy``::

    class Loader(LogRelay):                  # 1. mixin: no __init__ or super() call needed
        def load(self, path):
            self.info("loading %s", path)    # %-args are formatted only if a handler emits the record

    cfg = setup_log_relay(SomeConfig())      # 2. attach to an object whose class you don't own
    log = get_relay("simplellama.checkpoint")  # 3. a stand-alone relay for module-level code

    with log.busy("layers", total=30) as b:  # progress: done/total/rate, tqdm bar, throttled log lines
        for layer in layers:
            b.update()

Underneath is the standard :mod:`logging`: a relay's logger is ``logging.getLogger(name)`` (name defaults to
the object's class name), made on first use, so handlers, levels and propagation are configured as usual.
Log records point at the code that called ``.info(...)``, not at this file.

What shows: an object's relay (1. and 2.) makes its INFO messages visible on stderr as
``2024-10-29 16:11:56,893:INFO:MyConfigUser: message`` while the application has configured no logging
(no handler on the logger or its ancestors, e.g. no ``logging.basicConfig``), as if ``basicConfig`` had been
called for that logger alone. Once the application configures logging, its handlers show the messages and
this fallback stays quiet, so nothing is printed twice. Module relays (3., what library code uses) never
add a handler: a library leaves logging to its users. Importing this module configures nothing.
"""

from __future__ import annotations

import contextlib
import copyreg
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "LogRelay",
    "Relay",
    "Busy",
    "LogRelayError",
    "get_relay",
    "setup_log_relay",
    "setupLogRelay",
    "log_to_console",
]

_LOCK = threading.RLock()  # guards the module registries below and every relay's busy chain
_now = time.monotonic  # the busy clock (tests replace it)


class LogRelayError(ValueError):
    """An object cannot carry a relay (e.g. a built-in ``list``)."""


class _State:
    """Per-object relay state: logger name, the logger once made, the active busy chain, per-kind totals."""

    __slots__ = ("name", "logger", "chain", "totals")

    def __init__(self, name: str) -> None:
        self.name, self.logger = name, None
        self.chain: list[Busy] = []
        self.totals: dict[str, dict[str, float]] = {}

    def __deepcopy__(self, memo: dict) -> _State:  # copies of a config get a fresh, idle relay
        return _State(self.name)

    def __reduce__(self) -> tuple:
        return _State, (self.name,)


_CLASS_STATES: dict[type, _State] = {}  # state of objects without a __dict__ (__slots__ classes): one per class
_CLASSES: dict[tuple[type, str | None], type] = {}  # classes made by setup_log_relay, reused
_RELAYS: dict[str, Relay] = {}  # get_relay(name) cache


def _state(obj: Any) -> _State:
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        st = d.get("_log_relay")
        return st if st is not None else d.setdefault("_log_relay", _State(_default_name(obj)))
    with _LOCK:
        return _CLASS_STATES.setdefault(type(obj), _State(_default_name(obj)))


def _default_name(obj: Any) -> str:
    return getattr(type(obj), "_log_relay_name", None) or type(obj).__name__


def _logger(obj: Any) -> logging.Logger:
    st = _state(obj)
    if st.logger is None:
        logger = logging.getLogger(st.name)
        if not isinstance(obj, Relay):  # an object's relay shows its messages; a library module's stays silent
            _show_when_unconfigured(logger)
        st.logger = logger
    return st.logger


CONSOLE_FORMAT = "%(asctime)s:%(levelname)s:%(name)s: %(message)s"


class _FallbackHandler(logging.StreamHandler):
    """Writes to stderr only while no other handler would take the record (logging is unconfigured).

    The check is made per record, so an application that calls ``logging.basicConfig`` later still sees
    each message once. When several fallbacks lie on one logger chain, the one nearest the record's logger
    writes.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter(CONSOLE_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if _first_fallback(logging.getLogger(record.name)) is self:
            self.stream = sys.stderr  # the current stderr (replaced by test runners, notebooks, redirects)
            super().emit(record)


def _first_fallback(logger: logging.Logger) -> logging.Handler | None:
    """The fallback handler nearest ``logger`` on its propagation chain, or None if any other handler is there."""
    first, node = None, logger
    while node is not None:
        for h in node.handlers:
            if not isinstance(h, _FallbackHandler):
                return None  # the application configured logging: its handler shows the record
            first = first or h
        node = node.parent if node.propagate else None
    return first


def _show_when_unconfigured(logger: logging.Logger) -> None:
    """``basicConfig(level=INFO)`` for this logger alone, if the application has configured no logging."""
    with _LOCK:
        chain, node = [], logger
        while node is not None:
            chain += node.handlers
            node = node.parent if node.propagate else None
        if chain:  # configured (by the application, or a fallback up the chain already shows it)
            return
        logger.addHandler(_FallbackHandler())
        if logger.level == logging.NOTSET and logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)


def _emit(obj: Any, level: int, msg: object, args: tuple, kw: dict[str, Any]) -> None:
    logger = _logger(obj)
    if logger.isEnabledFor(level):  # a disabled level costs one check: no record, no formatting
        # skip this frame and the relay method's frame so the record names the caller's file and line
        kw["stacklevel"] = kw.get("stacklevel", 1) + 2
        logger.log(level, msg, *args, **kw)


class LogRelay:
    """Mixin giving ``debug/info/warning/error/exception/log`` and ``busy`` to any class.

    Messages take logging's %-style arguments: ``self.info("loaded %s in %.1f s", name, secs)``.
    """

    __slots__ = ()  # so __slots__ classes can mix it in, and setup_log_relay can re-class slotted objects

    @property
    def relay_logger(self) -> logging.Logger:
        """The :class:`logging.Logger` behind this relay (created on first use)."""
        return _logger(self)

    def log(self, level: int, msg: object, *args: Any, **kw: Any) -> None:
        _emit(self, level, msg, args, kw)

    def debug(self, msg: object, *args: Any, **kw: Any) -> None:
        _emit(self, logging.DEBUG, msg, args, kw)

    def info(self, msg: object, *args: Any, **kw: Any) -> None:
        _emit(self, logging.INFO, msg, args, kw)

    def warning(self, msg: object, *args: Any, **kw: Any) -> None:
        _emit(self, logging.WARNING, msg, args, kw)

    def error(self, msg: object, *args: Any, **kw: Any) -> None:
        _emit(self, logging.ERROR, msg, args, kw)

    def exception(self, msg: object, *args: Any, **kw: Any) -> None:
        """Log at ERROR with the current exception's traceback."""
        kw.setdefault("exc_info", True)
        _emit(self, logging.ERROR, msg, args, kw)

    @contextlib.contextmanager
    def busy(
        self, kind: str, total: int | None = None, progress: bool = True, log_interval: float | None = 10.0
    ) -> Iterator[Busy]:
        """Track one kind of work: ``with self.busy("loading", total=n) as b: ... b.update(k)``.

        Args:
            kind: what is being done; nested ``busy`` calls form a chain ("model > layers").
            total: expected number of units, or None if unknown.
            progress: drive a tqdm bar (tqdm hides it when stderr is not a terminal).
            log_interval: log an INFO progress line at most every this many seconds (None: never).
        """
        st = _state(self)
        with _LOCK:
            parent = st.chain[-1] if st.chain else None
            b = Busy(kind, total, parent=parent, relay=self, progress=progress, log_interval=log_interval)
            st.chain.append(b)
        try:
            yield b
        finally:
            b.close()
            with _LOCK:
                st.chain.remove(b)
                t = st.totals.setdefault(kind, {"runs": 0, "done": 0, "seconds": 0.0})
                t["runs"] += 1
                t["done"] += b.done
                t["seconds"] += b.elapsed
            self.debug("%s", b, stacklevel=3)  # final line, attributed to the `with` statement

    def busy_status(self) -> str:
        """The active busy chain as text (``"model: 1/2 > layers: 3/30 ..."``), or ``"idle"``."""
        with _LOCK:
            chain = list(_state(self).chain)
        return " > ".join(b.status() for b in chain) or "idle"

    def busy_totals(self) -> dict[str, dict[str, float]]:
        """Per kind, over finished ``busy`` blocks: ``runs``, units ``done``, ``seconds`` and ``rate`` (units/s)."""
        with _LOCK:
            items = [(k, dict(v)) for k, v in _state(self).totals.items()]
        return {k: {**v, "rate": v["done"] / v["seconds"] if v["seconds"] > 0 else 0.0} for k, v in items}


class Busy:
    """Progress of one kind of work: ``done`` of ``total`` units, the rate, and its parent in the busy chain.

    ``update`` is thread-safe: several threads may count into the same object.
    """

    def __init__(
        self,
        kind: str,
        total: int | None = None,
        *,
        parent: Busy | None = None,
        relay: LogRelay | None = None,
        progress: bool = False,
        log_interval: float | None = None,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"busy({kind!r}): total must be >= 0, found {total}")
        self.kind, self.total, self.parent, self.done = kind, total, parent, 0
        self.started = self._last_log = _now()
        self.finished: float | None = None
        self._relay, self._log_interval = relay, log_interval
        self._lock = threading.Lock()
        self._bar = None
        if progress:
            from tqdm.auto import tqdm  # lazy: importing tqdm is not free

            depth = len(self.chain) - 1
            self._bar = tqdm(total=total, desc=kind, leave=depth == 0, position=depth, disable=None)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
            due = self._log_interval is not None and _now() - self._last_log >= self._log_interval
            if due:
                self._last_log = _now()
        if due and self._relay is not None and self._relay.relay_logger.isEnabledFor(logging.INFO):
            self._relay.info("%s", str(self), stacklevel=2)  # a snapshot; the record points at update()'s caller

    def close(self) -> None:
        """Stop the clock and close the bar (``busy`` does this on exit)."""
        if self.finished is None:
            self.finished = _now()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def elapsed(self) -> float:
        """Seconds since start (until ``close``)."""
        return (self.finished if self.finished is not None else _now()) - self.started

    @property
    def rate(self) -> float:
        """Units per second so far (0.0 before any time has passed)."""
        t = self.elapsed
        return self.done / t if t > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        """``done / total``, or None when the total is unknown."""
        return None if not self.total else self.done / self.total

    @property
    def eta(self) -> float | None:
        """Estimated seconds left at the current rate, or None if unknown."""
        r = self.rate
        return None if self.total is None or r <= 0 else max(self.total - self.done, 0) / r

    @property
    def chain(self) -> list[Busy]:
        """This busy block and its parents, outermost first."""
        out, b = [], self
        while b is not None:
            out.append(b)
            b = b.parent
        return out[::-1]

    def status(self) -> str:
        """One-line progress of this kind: ``"layers: 3/30 (10%), 2.5/s"``."""
        done = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        pct = f" ({self.fraction:.0%})" if self.fraction is not None else ""
        return f"{self.kind}: {done}{pct}, {self.rate:.1f}/s"

    def __str__(self) -> str:
        ended = f" in {self.elapsed:.2f} s" if self.finished is not None else ""
        outer = "".join(b.kind + " > " for b in self.chain[:-1])
        return outer + self.status() + ended

    def __repr__(self) -> str:
        return f"<Busy {self}>"


class Relay(LogRelay):
    """A stand-alone relay for module-level code: ``log = get_relay("simplellama.model")``."""

    def __init__(self, name: str) -> None:
        self.__dict__["_log_relay"] = _State(name)

    @property
    def name(self) -> str:
        return _state(self).name

    def __repr__(self) -> str:
        return f"Relay({self.name!r})"

    def __reduce__(self) -> tuple:
        return get_relay, (self.name,)  # unpickles to the one relay of that name


def get_relay(name: str) -> Relay:
    """The relay for logger ``name`` (one per name, like :func:`logging.getLogger`)."""
    with _LOCK:
        relay = _RELAYS.get(name)
        if relay is None:
            relay = _RELAYS[name] = Relay(name)
        return relay


def _relay_class(base: type, name: str | None) -> type:
    """A subclass of ``base`` with the mixin and no new slots, so an instance's ``__class__`` can be swapped."""
    with _LOCK:
        cls = _CLASSES.get((base, name))
        if cls is None:
            ns = {"__slots__": (), "__module__": base.__module__, "__qualname__": base.__qualname__}
            ns["_log_relay_base"] = base
            if name is not None:
                ns["_log_relay_name"] = name
            cls = _CLASSES[(base, name)] = type(base)(base.__name__, (base, LogRelay), ns)
            copyreg.pickle(cls, _reduce_relay_object)
        return cls


def _reduce_relay_object(obj: Any) -> tuple:
    """Pickle as the original class (pickle cannot find ours by name); unpickling attaches the relay again."""
    fn, args, *rest = obj.__reduce_ex__(2)
    if args and args[0] is type(obj):
        args = (type(obj)._log_relay_base, *args[1:])
    return (_rebuild_relay_object, (fn, args, type(obj).__dict__.get("_log_relay_name")), *rest)


def _rebuild_relay_object(fn: Any, args: tuple, name: str | None) -> Any:
    return setup_log_relay(fn(*args), name=name)


def setup_log_relay(obj: Any, name: str | None = None, level: int | str | None = None) -> Any:
    """Give ``obj`` the LogRelay methods and return it (the same object).

    The object's class is swapped for a same-named subclass that adds the mixin; its behaviour is otherwise
    unchanged. Setting up twice is harmless (no second subclass, no second handler). While the application
    has configured no logging, the object's INFO messages show on stderr (see the module docstring).

    Args:
        obj: any instance of a Python class (with or without ``__slots__``); not a built-in such as ``list``.
        name: logger name (default: the class name).
        level: if given, set on the logger (shared by everything using that name, as in :mod:`logging`).

    Raises:
        LogRelayError: the object's class cannot be changed (built-in types, C extension objects).
    """
    cls = type(obj)
    base = cls.__dict__.get("_log_relay_base", cls)
    has_dict = isinstance(getattr(obj, "__dict__", None), dict)
    # objects without a __dict__ keep their relay state per class, so a custom name needs its own class
    if not isinstance(obj, LogRelay) or (name is not None and not has_dict and name != _state(obj).name):
        try:
            obj.__class__ = _relay_class(base, None if has_dict else name)
        except TypeError as err:
            raise LogRelayError(
                f"setup_log_relay: cannot attach LogRelay to a {cls.__name__!r} object ({err}); "
                f"use get_relay(name) for a stand-alone relay, or subclass {cls.__name__} with the LogRelay mixin"
            ) from None
    st = _state(obj)
    if name is not None and name != st.name:
        st.name, st.logger = name, None
    if level is not None:
        _logger(obj).setLevel(level)
    return obj


setupLogRelay = setup_log_relay  # noqa: N816 (name used by the project's original examples)


def log_to_console(
    name: str | None = None, level: int | str = logging.INFO, fmt: str = "%(levelname)s:%(name)s: %(message)s"
) -> logging.Handler:
    """Attach one stderr handler to logger ``name`` (root if None); calling again reuses it (no duplicates)."""
    logger = logging.getLogger(name)
    handler = next((h for h in logger.handlers if getattr(h, "_log_relay_console", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._log_relay_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(fmt))
    logger.setLevel(level)
    return handler
