"""Debug flags you can switch on for one class, one method, one object or one topic.

Library code asks ``DEBUG.on(self, "forward")`` before doing expensive debug work (logging shapes,
checking for NaNs). The answer is ``False`` at the cost of one attribute read while nothing is pushed,
so the calls can stay in hot paths. Users switch flags on in a ``with`` block::

    with DEBUG.flags(Linear, "Tensor.backward", my_layer, my_block.forward, "attention"):
        model(x)

A flag is one of:

* a class                ``Linear``            -> every instance of it (or of a subclass), every method
* ``"Class.method"``     ``"Tensor.backward"`` -> that method on every instance of that class (or subclass)
* an instance            ``my_layer``          -> every method of that one object
* a bound method         ``my_layer.forward``  -> that method of that one object (or ``(my_layer, "forward")``)
* any other string       ``"attention"``       -> a custom topic; also matches a class of that name
* ``"*"``                                      -> everything

Flag sets form a stack: ``push`` adds a set, ``pop`` removes the most recent one, and a flag is on
while any pushed set holds it. Below the pushed sets lies the base set (no flags), which is never
popped. The project's original names are module-level functions over ``DEBUG``::

    DebugPush(Linear, "attention")   # push one set of flags
    model(x)
    DebugPop()                       # pop the topmost set only; popping the base set is an error

Messages go through LogRelay (logger ``tinytorch.debug``).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from LogRelay import get_relay

__all__ = ["DebugFlagError", "DebugHelper", "DEBUG", "DebugPush", "DebugPop"]

log = get_relay("tinytorch.debug")


class DebugFlagError(ValueError):
    """A debug flag is malformed, or ``pop`` was called with nothing pushed."""


class _FlagSet:
    """One pushed set of flags, normalised into keys that ``DebugHelper.on`` can look up directly."""

    def __init__(self, flags: tuple[Any, ...]) -> None:
        self.flags = flags  # keeps instances alive, so their id() cannot be reused while pushed
        self.keys: set[tuple] = set()
        for flag in flags:
            self.keys.add(_flag_key(flag))


def _flag_key(flag: Any) -> tuple:
    """Turn one user-facing flag into a hashable lookup key."""
    if isinstance(flag, str):
        if not flag:
            raise DebugFlagError("tinytorch/debug.py: flag: expected a non-empty string, found ''")
        if flag == "*":
            return ("all",)
        if "." in flag:
            cls_name, _, method = flag.rpartition(".")
            if not cls_name or not method:
                raise DebugFlagError(f"tinytorch/debug.py: flag {flag!r}: expected 'Class.method'")
            return ("class_method", cls_name, method)
        return ("name", flag)
    if isinstance(flag, tuple):
        if len(flag) != 2 or not isinstance(flag[1], str):
            raise DebugFlagError(f"tinytorch/debug.py: flag {flag!r}: expected (instance, 'method')")
        return ("instance_method", id(flag[0]), flag[1])
    if inspect.isclass(flag):
        return ("class", flag)
    if inspect.ismethod(flag) and not inspect.isclass(flag.__self__):
        return ("instance_method", id(flag.__self__), flag.__name__)
    if inspect.isfunction(flag) or inspect.ismethod(flag) or inspect.isbuiltin(flag):
        # A plain function such as ``Linear.forward``: treat as "Class.method" via its qualified name.
        cls_name, _, method = flag.__qualname__.rpartition(".")
        cls_name = cls_name.rpartition(".")[2]
        if not cls_name or cls_name == "<locals>":
            raise DebugFlagError(
                f"tinytorch/debug.py: flag {flag.__qualname__!r}: expected a method, found a plain function"
            )
        return ("class_method", cls_name, method)
    if flag is None or isinstance(flag, int | float | bool):
        raise DebugFlagError(f"tinytorch/debug.py: flag {flag!r}: expected a class, string, object or bound method")
    return ("instance", id(flag))


class DebugHelper:
    """A stack of debug flag sets; see the module docstring for the kinds of flags."""

    def __init__(self, name: str = "tinytorch.debug") -> None:
        self._stack: list[_FlagSet] = []
        self._keys: set[tuple] = set()  # union of the pushed sets; empty -> ``on`` returns at once
        self.log = get_relay(name)

    # -- stack -----------------------------------------------------------------------------------
    def push(self, *flags: Any) -> int:
        """Switch ``flags`` on until the matching ``pop``; returns the new stack depth."""
        self._stack.append(_FlagSet(flags))
        self._rebuild()
        self.log.debug("push %s (depth %d)", flags, len(self._stack))
        return len(self._stack)

    def pop(self) -> tuple[Any, ...]:
        """Remove the most recently pushed flag set and return its flags (the base set is never popped)."""
        if not self._stack:
            raise DebugFlagError(
                "tinytorch/debug.py: pop: expected a pushed flag set, found only the base set "
                "(it is never popped: every pop needs an earlier push)"
            )
        popped = self._stack.pop()
        self._rebuild()
        self.log.debug("pop %s (depth %d)", popped.flags, len(self._stack))
        return popped.flags

    def clear(self) -> None:
        """Pop every flag set."""
        self._stack.clear()
        self._keys = set()

    @property
    def depth(self) -> int:
        """Number of pushed flag sets."""
        return len(self._stack)

    @contextlib.contextmanager
    def flags(self, *flags: Any) -> Iterator[DebugHelper]:
        """``with DEBUG.flags(Linear, "attention"): ...`` pushes on entry and pops on exit."""
        depth = self.push(*flags)
        try:
            yield self
        finally:
            # Pop back to our depth even if the body left extra sets pushed.
            while len(self._stack) >= depth:
                self.pop()

    def _rebuild(self) -> None:
        keys: set[tuple] = set()
        for flag_set in self._stack:
            keys |= flag_set.keys
        self._keys = keys

    # -- queries ---------------------------------------------------------------------------------
    def on(self, obj: Any, method_name: str | None = None) -> bool:
        """True if debugging is on for ``obj`` (an instance, a class or a topic string) [in ``method_name``]."""
        keys = self._keys
        if not keys:
            return False
        if ("all",) in keys:
            return True
        if isinstance(obj, str):
            return ("name", obj) in keys or (method_name is not None and ("class_method", obj, method_name) in keys)
        if ("instance", id(obj)) in keys:
            return True
        if method_name is not None and ("instance_method", id(obj), method_name) in keys:
            return True
        mro = obj.__mro__ if inspect.isclass(obj) else type(obj).__mro__
        for cls in mro:
            if ("class", cls) in keys or ("name", cls.__name__) in keys:
                return True
            if method_name is not None and ("class_method", cls.__name__, method_name) in keys:
                return True
        return False

    def __call__(self, obj: Any, method_name: str | None = None) -> bool:
        return self.on(obj, method_name)

    def debug(self, obj: Any, method_name: str | None, msg: str, *args: Any) -> None:
        """Log ``msg % args`` at debug level if ``on(obj, method_name)``; formatting is lazy."""
        if self.on(obj, method_name):
            where = obj if isinstance(obj, str) else type(obj).__name__
            self.log.debug("[%s%s] " + msg, where, f".{method_name}" if method_name else "", *args)

    def __repr__(self) -> str:
        return f"DebugHelper(depth={len(self._stack)}, flags={[s.flags for s in self._stack]})"


DEBUG = DebugHelper()


def DebugPush(*flags: Any) -> int:  # noqa: N802 (the project's original name)
    """Push one set of debug flags on ``DEBUG`` (see the module docstring); returns the new depth."""
    return DEBUG.push(*flags)


def DebugPop() -> tuple[Any, ...]:  # noqa: N802
    """Pop the topmost flag set of ``DEBUG`` and return its flags; the base set stays (popping it raises).

    Raises:
        DebugFlagError: nothing was pushed (only the base set is left).
    """
    return DEBUG.pop()
