"""Tests for LogRelay.py: lazy logging on any object, and busy-state tracking."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import pickle
import re
import subprocess
import sys
import threading

import pytest
import tqdm.auto

from LogRelay import Busy, LogRelay, LogRelayError, get_relay, log_to_console, setup_log_relay


class CountingArg:
    """An argument that counts how often logging formats it."""

    def __init__(self) -> None:
        self.calls = 0

    def __str__(self) -> str:
        self.calls += 1
        return "counted"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        self.calls += 1
        return "counted"


def here() -> int:
    """Line number of the caller's next line."""
    return inspect.currentframe().f_back.f_lineno + 1


# ---------------------------------------------------------------- attaching a relay


class Plain:
    def __init__(self) -> None:
        self.x = 1


class NoSuper(LogRelay):
    def __init__(self) -> None:  # never calls super().__init__
        self.y = 2


class Base:
    def __init__(self, a: int) -> None:
        self.a = a


class Cooperative(Base, LogRelay):
    def __init__(self) -> None:
        super().__init__(a=3)


class Slotted:
    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v = 5


class SlottedMixin(LogRelay):
    __slots__ = ("v",)


@dataclasses.dataclass
class Conf:
    foo: int = 0


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: setup_log_relay(Plain()), "Plain"),
        (lambda: NoSuper(), "NoSuper"),
        (lambda: Cooperative(), "Cooperative"),
        (lambda: setup_log_relay(Slotted(), name="slotted.obj"), "slotted.obj"),
        (lambda: SlottedMixin(), "SlottedMixin"),
        (lambda: setup_log_relay(Conf()), "Conf"),
        (lambda: get_relay("my.module"), "my.module"),
    ],
)
def test_any_object_logs_with_caller_info(make, name, caplog):
    obj = make()
    caplog.set_level(logging.DEBUG, logger=name)
    for method in ("debug", "info", "warning", "error"):
        line = here()
        getattr(obj, method)("loaded %s in %.1f s", "model", 1.25)
        rec = caplog.records[-1]
        assert (rec.name, rec.levelname, rec.getMessage()) == (name, method.upper(), "loaded model in 1.2 s")
        assert (rec.pathname, rec.lineno, rec.funcName) == (__file__, line, "test_any_object_logs_with_caller_info")
    assert obj.relay_logger is logging.getLogger(name)


def test_attached_object_keeps_its_behaviour():
    obj = setup_log_relay(Plain())
    assert isinstance(obj, Plain) and type(obj).__name__ == "Plain" and obj.x == 1
    conf = setup_log_relay(Conf(foo=4))
    assert dataclasses.asdict(conf) == {"foo": 4} and repr(conf) == "Conf(foo=4)"
    dup = copy.deepcopy(conf)
    assert dup.foo == 4 and dup is not conf
    assert dataclasses.replace(conf, foo=5).foo == 5
    slotted = setup_log_relay(Slotted())
    assert slotted.v == 5


def test_setup_twice_no_new_class_no_handlers():
    logger = logging.getLogger("Plain")
    before = list(logger.handlers)
    obj = setup_log_relay(Plain())
    cls = type(obj)
    assert setup_log_relay(obj) is obj and type(obj) is cls
    assert type(setup_log_relay(Plain())) is cls  # one relay class per original class
    assert logger.handlers == before


def test_setup_name_and_level(caplog):
    obj = setup_log_relay(Plain(), name="relay.custom", level=logging.DEBUG)
    assert logging.getLogger("relay.custom").level == logging.DEBUG
    with caplog.at_level(logging.DEBUG, logger="relay.custom"):
        obj.debug("dbg")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("relay.custom", "dbg")]
    setup_log_relay(obj, name="relay.other")
    assert obj.relay_logger.name == "relay.other"


def test_builtin_objects_give_a_clear_error():
    with pytest.raises(LogRelayError, match=r"cannot attach LogRelay to a 'list' object .*use get_relay\(name\)"):
        setup_log_relay([1, 2])
    assert isinstance(LogRelayError("x"), ValueError)


def test_exception_logs_traceback(caplog):
    obj = NoSuper()
    with caplog.at_level(logging.ERROR, logger="NoSuper"):
        try:
            raise KeyError("boom")
        except KeyError:
            obj.exception("failed on %d", 7)
    rec = caplog.records[-1]
    assert rec.getMessage() == "failed on 7" and rec.exc_info[0] is KeyError


def test_get_relay_is_one_per_name():
    assert get_relay("x.y") is get_relay("x.y") and get_relay("x.y") is not get_relay("x.z")


def test_log_to_console_adds_one_handler():
    logger = logging.getLogger("relay.console")
    h1 = log_to_console("relay.console", level=logging.DEBUG)
    h2 = log_to_console("relay.console", level=logging.INFO)
    try:
        assert h1 is h2 and logger.handlers.count(h1) == 1 and logger.level == logging.INFO
    finally:
        logger.removeHandler(h1)


def test_standard_propagation_and_levels(caplog):
    obj = get_relay("relay.parent.child")
    logging.getLogger("relay.parent").setLevel(logging.ERROR)
    try:
        with caplog.at_level(logging.DEBUG):  # root handler; the parent's level governs the child
            obj.warning("hidden")
            obj.error("shown")
    finally:
        logging.getLogger("relay.parent").setLevel(logging.NOTSET)
    assert [r.getMessage() for r in caplog.records if r.name == "relay.parent.child"] == ["shown"]


# ---------------------------------------------------------------- deferred formatting


def test_disabled_level_never_formats(caplog):
    obj = get_relay("relay.lazy")
    arg = CountingArg()
    with caplog.at_level(logging.WARNING, logger="relay.lazy"):
        obj.debug("value %s", arg)
        obj.info("value %s %r", arg, arg)
        obj.info("value %(a)s", {"a": arg})
    assert arg.calls == 0 and caplog.records == []
    with caplog.at_level(logging.INFO, logger="relay.lazy"):
        obj.info("value %s", arg)
    assert caplog.records[-1].getMessage() == "value counted" and arg.calls >= 1


def test_enabled_level_without_emitting_handler_does_not_format():
    logger = logging.getLogger("relay.lazy.nohandler")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.Handler(level=logging.ERROR)  # the record is created, but no handler emits it
    handler.emit = lambda record: None
    logger.addHandler(handler)
    try:
        arg = CountingArg()
        get_relay("relay.lazy.nohandler").info("value %s", arg)
        assert arg.calls == 0
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


# ---------------------------------------------------------------- busy state


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr("LogRelay._now", c)
    return c


def test_busy_arithmetic(clock):
    obj = NoSuper()
    assert obj.busy_status() == "idle"
    with obj.busy("model", total=2, progress=False, log_interval=None) as outer:
        with obj.busy("layers", total=10, progress=False, log_interval=None) as b:
            clock.t += 2.0
            b.update(3)
            assert (b.done, b.total, b.elapsed, b.rate, b.fraction) == (3, 10, 2.0, 1.5, 0.3)
            assert b.eta == pytest.approx(7 / 1.5)
            assert [x.kind for x in b.chain] == ["model", "layers"] and b.parent is outer
            assert obj.busy_status() == "model: 0/2 (0%), 0.0/s > layers: 3/10 (30%), 1.5/s"
            assert str(b) == "model > layers: 3/10 (30%), 1.5/s"
            clock.t += 1.0
            b.update()
        outer.update()
        with obj.busy("layers", progress=False, log_interval=None) as b2:  # unknown total
            clock.t += 4.0
            b2.update(2)
            assert (b2.fraction, b2.eta, b2.rate) == (None, None, 0.5)
            assert b2.status() == "layers: 2, 0.5/s"
    assert b.elapsed == 3.0  # frozen on exit
    assert obj.busy_status() == "idle"
    assert obj.busy_totals() == {
        "layers": {"runs": 2, "done": 6, "seconds": 7.0, "rate": 6 / 7.0},
        "model": {"runs": 1, "done": 1, "seconds": 7.0, "rate": 1 / 7.0},
    }


def test_busy_rejects_negative_total():
    with pytest.raises(ValueError, match=r"busy\('x'\): total must be >= 0, found -1"):
        Busy("x", -1)


def test_busy_progress_lines_are_throttled(clock, caplog):
    relay = get_relay("relay.busy.lines")
    with caplog.at_level(logging.INFO, logger="relay.busy.lines"):
        with relay.busy("load", total=100, progress=False, log_interval=5.0) as b:
            lines = []
            for dt in (1.0, 5.0, 1.0, 5.0, 0.5):  # at t = +1, +6, +7, +12, +12.5: lines at +6 and +12
                clock.t += dt
                lines.append(here())
                b.update(10)
    recs = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage() for r in recs] == ["load: 20/100 (20%), 3.3/s", "load: 40/100 (40%), 3.3/s"]
    assert all(r.pathname == __file__ and r.lineno == lines[0] for r in recs)


def test_busy_disabled_lines_never_format(clock, caplog):
    relay = get_relay("relay.busy.quiet")
    with caplog.at_level(logging.WARNING, logger="relay.busy.quiet"):
        with relay.busy("load", total=4, progress=False, log_interval=0.0) as b:
            b.update(1)
            b.update(1)
    assert caplog.records == []


def test_busy_counters_from_two_threads():
    obj = get_relay("relay.busy.threads")
    with obj.busy("count", total=40_000, progress=False, log_interval=None) as b:
        barrier = threading.Barrier(2)

        def work() -> None:
            barrier.wait()
            for _ in range(20_000):
                b.update()

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert b.done == 40_000 and obj.busy_totals()["count"]["done"] >= 40_000


def test_busy_drives_a_tqdm_bar(monkeypatch):
    made = []

    class FakeBar:
        def __init__(self, **kw) -> None:
            self.kw, self.n, self.closed = kw, 0, False
            made.append(self)

        def update(self, n: int = 1) -> None:
            self.n += n

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    with get_relay("relay.bar").busy("download", total=7) as b:
        b.update(3)
        b.update(4)
    (bar,) = made
    assert (bar.kw["total"], bar.kw["desc"], bar.n, bar.closed) == (7, "download", 7, True)


def test_pickle_keeps_the_relay(caplog):
    conf = setup_log_relay(Conf(foo=3), name="relay.pickled")
    slotted = setup_log_relay(Slotted(), name="relay.pickled.slots")
    conf2, slotted2, relay2 = pickle.loads(pickle.dumps((conf, slotted, get_relay("relay.p"))))
    assert conf2 == conf and type(conf2) is type(conf) and slotted2.v == 5 and relay2 is get_relay("relay.p")
    with caplog.at_level(logging.INFO):
        conf2.info("a")
        slotted2.info("b")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("relay.pickled", "a"), ("relay.pickled.slots", "b")]


# ---------------------------------------------------------------- what shows when the application configured nothing

# The project's documented example, verbatim (its indentation included).
DOCUMENTED_EXAMPLE = """\
import dataclasses
import argparse

from subroutines import *
import dataclasses as DC
import argparse
from subroutines import *
from LogRelay import *

@dataclass
class SomeFoo:
  val:float = 8.0

@dataclass
class SomeDataClass:
   foo:int = 0
   somefoo:SomeFoo = DCField(SomeFoo) # dataclasses.field(default_factory=SomeFoo)

class MyConfigUser(SomeDataClass):
  def reconfigure(self, *argv):
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS, allow_abbrev=True)
    prompts = buildCmdLineParserFrom(SomeDataClass)
    for (theField, theArg, theConverter) in prompts:
      parser.add_argument(theArg, type=theConverter)
    KK = parser.parse_args(*argv)
    self.prompts, self.KK = prompts, KK
    self = overrideConfig(self, KK, prompts, printer=self.info)
    return self

cc = MyConfigUser()
setupLogRelay(cc)
cc.reconfigure(splitByWhiteSpace('''--somefoo.val=7
  --foo=9
   '''))
print(DC.asdict(cc))
cc.info('Now I am enabled for logging! w00T!')
"""
FORMAT = "%(asctime)s:%(levelname)s:%(name)s: %(message)s"
BASIC_CONFIG = f"import logging\nlogging.basicConfig(level=logging.INFO, format={FORMAT!r})\n"
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}:", re.M)  # logging's default asctime, then ":"


def run_fresh(tmp_path, code: str, *, merged: bool = True) -> subprocess.CompletedProcess:
    """``code`` as a script in a new interpreter (unbuffered, so stdout and stderr keep their order when merged)."""
    script = tmp_path / "script.py"
    script.write_text(code)
    err = subprocess.STDOUT if merged else subprocess.PIPE
    proc = subprocess.run(
        [sys.executable, "-u", str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + (proc.stderr or "")
    return proc


def test_documented_example_prints_the_documented_four_lines(tmp_path):
    out = run_fresh(tmp_path, DOCUMENTED_EXAMPLE).stdout
    assert STAMP.sub("<time>:", out).splitlines() == [
        "<time>:INFO:MyConfigUser: overriding foo=9 (was 0)",
        "<time>:INFO:MyConfigUser: overriding somefoo.val=7.0 (was 8.0)",
        "{'foo': 9, 'somefoo': {'val': 7.0}}",
        "<time>:INFO:MyConfigUser: Now I am enabled for logging! w00T!",
    ]
    # the same as the logging module prints after an explicit basicConfig with that format (the reference)
    reference = run_fresh(tmp_path, BASIC_CONFIG + DOCUMENTED_EXAMPLE).stdout
    assert STAMP.sub("<time>:", out) == STAMP.sub("<time>:", reference)
    separate = run_fresh(tmp_path, DOCUMENTED_EXAMPLE, merged=False)  # log lines on stderr, the dict on stdout
    assert separate.stdout == "{'foo': 9, 'somefoo': {'val': 7.0}}\n" and len(separate.stderr.splitlines()) == 3


@pytest.mark.parametrize(
    "before, after",
    [
        ('import logging\nlogging.basicConfig(level=logging.INFO, format="APP %(name)s %(message)s")\n', ""),
        ("", 'import logging\nlogging.basicConfig(level=logging.INFO, format="APP %(name)s %(message)s")\n'),
        ("import logging, sys\nh = logging.StreamHandler(sys.stderr)\nh.setFormatter(logging.Formatter("
         '"APP %(name)s %(message)s"))\nlogging.getLogger().addHandler(h)\nlogging.getLogger().setLevel("INFO")\n', ""),
    ],
    ids=["basicConfig before", "basicConfig after setupLogRelay", "root handler"],
)  # fmt: skip
def test_no_duplicates_when_the_application_configures_logging(tmp_path, before, after):
    code = DOCUMENTED_EXAMPLE.replace("cc = MyConfigUser()\nsetupLogRelay(cc)\n", f"{before}cc = MyConfigUser()\n"
                                      f"setupLogRelay(cc)\n{after}")  # fmt: skip
    assert code != DOCUMENTED_EXAMPLE
    assert run_fresh(tmp_path, code).stdout.splitlines() == [
        "APP MyConfigUser overriding foo=9 (was 0)",
        "APP MyConfigUser overriding somefoo.val=7.0 (was 8.0)",
        "{'foo': 9, 'somefoo': {'val': 7.0}}",
        "APP MyConfigUser Now I am enabled for logging! w00T!",
    ]


def test_an_application_that_keeps_warning_level_sees_no_info(tmp_path):
    code = "import logging\nlogging.basicConfig()\n" + DOCUMENTED_EXAMPLE  # root at WARNING: the app's choice
    assert run_fresh(tmp_path, code).stdout == "{'foo': 9, 'somefoo': {'val': 7.0}}\n"


def test_mixin_objects_show_info_too(tmp_path):
    code = (
        "from LogRelay import LogRelay\nclass Loader(LogRelay):\n    pass\n"
        "Loader().info('loading %s', 'x')\nLoader().debug('hidden')\n"
    )
    assert STAMP.sub("", run_fresh(tmp_path, code).stdout) == "INFO:Loader: loading x\n"


def test_imports_and_library_relays_stay_silent(tmp_path):
    code = (
        "import logging\nimport LogRelay, subroutines, tinytorch, simplellama.generation\n"
        "ours = ('simplellama', 'tinytorch', 'subroutines', 'LogRelay', 'tinytorch.debug')\n"
        "configured = [n for n, l in logging.root.manager.loggerDict.items()\n"
        "              if n.split('.')[0] in ours and getattr(l, 'handlers', None)]\n"
        "assert not logging.root.handlers and not configured, configured\n"
        "LogRelay.get_relay('simplellama.generation').info('library info')\n"
        "simplellama.generation.log.info('library info')\n"
        "subroutines.override_config(subroutines.SimpleNamespace(a=1), {'a': 2}, [('a', '--a', int)])\n"
        "tinytorch.DEBUG.push('x'); tinytorch.DEBUG.pop()\n"
        "assert not logging.root.handlers\nprint('ok')\n"
    ).replace("subroutines.SimpleNamespace", "__import__('types').SimpleNamespace")
    assert run_fresh(tmp_path, code).stdout == "ok\n"


@pytest.fixture
def fallback_loggers():
    """Loggers a test gives a fallback handler; reset afterwards."""
    made: list[logging.Logger] = []
    yield made
    for logger in made:
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)


def test_one_line_per_message_with_relays_up_and_down_a_logger_chain(fallback_loggers, capsys, monkeypatch):
    monkeypatch.setattr(logging.root, "handlers", [])  # as if unconfigured (pytest puts handlers on the root logger)
    parent = setup_log_relay(Plain(), name="relay.fallback")
    child = setup_log_relay(Conf(), name="relay.fallback.child")
    parent.info("from parent")
    child.info("from child")
    child.debug("below INFO")
    fallback_loggers += [parent.relay_logger, child.relay_logger]
    assert setup_log_relay(parent) is parent and len(parent.relay_logger.handlers) == 1  # set up twice: one handler
    lines = STAMP.sub("", capsys.readouterr().err).splitlines()
    assert lines == ["INFO:relay.fallback: from parent", "INFO:relay.fallback.child: from child"]
    logging.root.handlers.append(h := logging.StreamHandler(sys.stdout))  # the application configures logging now
    h.setFormatter(logging.Formatter("APP %(message)s"))
    child.info("once")
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("APP once\n", "")
