"""Tests for subroutines.py: dataclass <-> command line, nested fields, config files, tensor printing."""

from __future__ import annotations

import argparse
import enum
import json
import logging
import re
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import subroutines as sr
from LogRelay import setup_log_relay
from subroutines import (
    ArgumentParser,
    ConfigError,
    ConfigValueError,
    DCField,
    add_dataclass_arguments,
    buildCmdLineParserFrom,
    config_from_dict,
    config_from_json,
    config_to_dict,
    config_to_json,
    diff_configs,
    format_tensors,
    get_field,
    load_config,
    override_config,
    overrideConfig,
    parse_config,
    save_config,
    set_field,
    splitByWhiteSpace,
)

REPO = Path(__file__).resolve().parents[1]


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


@dataclass
class Inner:
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    flag: bool = False


@dataclass
class Cfg:
    n: int = 3
    name: str = "x"
    path: Path = Path("/tmp/a")
    mode: Literal["train", "eval"] = "train"
    color: Color = Color.RED
    ids: list[int] = field(default_factory=lambda: [1, 2])
    maybe: Optional[int] = None  # noqa: UP045 (the typing spelling is part of what is tested)
    opt_s: str | None = "s"
    inner: Inner = DCField(Inner)


def parse(argv: list[str], cls: type = Cfg):
    parser = ArgumentParser(prog="prog")
    triples = add_dataclass_arguments(parser, cls)
    return override_config(cls(), parser.parse_args(argv), triples, printer=lambda msg: None)


# ---------------------------------------------------------------- switch types


@pytest.mark.parametrize(
    "argv, path, expected",
    [
        (["--n=9"], "n", 9),
        (["--n", "-4"], "n", -4),
        (["--inner.lr=2.5e-4"], "inner.lr", 2.5e-4),
        (["--inner.lr=7"], "inner.lr", 7.0),
        (["--name=hello world"], "name", "hello world"),
        (["--path=/x/y"], "path", Path("/x/y")),
        (["--mode=eval"], "mode", "eval"),
        (["--color=GREEN"], "color", Color.GREEN),
        (["--color=green"], "color", Color.GREEN),
        (["--color=g"], "color", Color.GREEN),  # by value
        (["--ids=4,5, 6"], "ids", [4, 5, 6]),
        (["--ids="], "ids", []),
        (["--maybe=5"], "maybe", 5),
        (["--maybe=none"], "maybe", None),
        (["--opt_s=null"], "opt_s", None),
        (["--opt_s=abc"], "opt_s", "abc"),
        (["--inner.flag"], "inner.flag", True),
        (["--inner.flag", "--n=1"], "inner.flag", True),
        *[(["--inner.flag=" + v], "inner.flag", True) for v in ("true", "yes", "1", "True", "YES")],
        *[(["--inner.flag=" + v], "inner.flag", False) for v in ("false", "no", "0", "False")],
    ],
)
def test_switch_types(argv, path, expected):
    cfg = parse(argv)
    assert get_field(cfg, path) == expected
    assert type(get_field(cfg, path)) is type(expected)


def test_no_flag_switch():
    @dataclass
    class F:
        flag: bool = True

    assert parse(["--no-flag"], F).flag is False
    assert parse([], F).flag is True


def test_only_given_switches_are_applied():
    cfg = parse(["--n=5"])
    assert diff_configs(Cfg(), cfg) == ["n"]


def test_help_text_from_metadata_and_defaults(capsys):
    parser = ArgumentParser(prog="prog")
    add_dataclass_arguments(parser, Cfg)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--inner.lr FLOAT learning rate (default: 0.001)" in out
    assert "--mode {train,eval}" in out
    assert "--color {RED,GREEN}" in out
    assert "--no-inner.flag" in out


def test_prefix_puts_switches_under_a_name():
    parser = ArgumentParser()
    triples = add_dataclass_arguments(parser, Inner, prefix="opt")
    assert [(p, s) for p, s, _ in triples] == [("lr", "--opt.lr"), ("flag", "--opt.flag")]
    cfg = override_config(Inner(), parser.parse_args(["--opt.lr=0.5"]), triples, printer=lambda m: None)
    assert cfg.lr == 0.5


def test_string_annotations_resolve():
    # this module uses `from __future__ import annotations`, so every field type above is a string
    assert isinstance(Cfg.__dataclass_fields__["n"].type, str)
    assert parse(["--n=2"]).n == 2


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n=x"], "argument --n: invalid value 'x' for n: expected int"),
        (["--n=1.5"], "invalid value '1.5' for n: expected int"),
        (["--inner.lr=fast"], "invalid value 'fast' for inner.lr: expected float"),
        (["--mode=test"], "invalid value 'test' for mode: expected one of 'train', 'eval'"),
        (["--color=blue"], "invalid value 'blue' for color: expected one of RED, GREEN"),
        (["--ids=1,a"], "invalid value 'a' for ids[1]: expected int"),
        (["--maybe=many"], "invalid value 'many' for maybe: expected int | None"),
        (["--inner.flag=maybe"], "invalid value 'maybe' for inner.flag: expected bool (true/false/yes/no/1/0)"),
        (["--inne.lr=3"], "unrecognized arguments: --inne.lr=3; --inne.lr: did you mean --inner.lr?"),
        (["--colour", "RED"], "--colour: did you mean --color?"),
        (["--n=1", "--zzzzzz=2"], "unrecognized arguments: --zzzzzz=2"),
        (["--inner.flag", "--no-inner.flag"], "argument --no-inner.flag: not allowed with argument --inner.flag"),
        (["--inner.l=3"], "did you mean --inner.lr?"),  # abbreviations are not accepted silently
    ],
)
def test_bad_switches_exit_2_with_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_plain_argparse_reports_field_and_type(capsys):
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    for _, switch, conv in buildCmdLineParserFrom(Cfg):
        parser.add_argument(switch, type=conv)
    with pytest.raises(SystemExit):
        parser.parse_args(["--inner.lr=abc"])
    assert "argument --inner.lr: invalid value 'abc' for inner.lr: expected float" in capsys.readouterr().err


def test_override_converts_strings_and_rejects_bad_values():
    triples = buildCmdLineParserFrom(Cfg)
    cfg = overrideConfig(Cfg(), {"n": "12", "inner.lr": "0.25"}, triples, printer=lambda m: None)
    assert (cfg.n, cfg.inner.lr) == (12, 0.25)
    with pytest.raises(ConfigValueError, match=r"invalid value 'x' for inner.lr: expected float"):
        overrideConfig(Cfg(), {"inner.lr": "x"}, triples, printer=lambda m: None)


def test_bad_printer():
    with pytest.raises(ConfigError, match="printer must be a callable or a logger, found int"):
        override_config(Cfg(), {"n": 1}, buildCmdLineParserFrom(Cfg), printer=3)


def test_get_set_field_errors():
    cfg = Cfg()
    with pytest.raises(ConfigError, match=r"no field 'inner.lrr' in Cfg \(did you mean 'inner.lr'\?\)"):
        get_field(cfg, "inner.lrr")
    with pytest.raises(ConfigError, match=r"no field 'nn' in Cfg \(did you mean 'n'\?\)"):
        set_field(cfg, "nn", 1)


def test_config_from_dict_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown field 'inner.lrate' for Inner \(did you mean 'inner.lr'\?\)"):
        config_from_dict(Cfg, {"inner": {"lrate": 1.0}})
    with pytest.raises(ConfigError, match=r"invalid value 'a' for n: expected int"):
        config_from_dict(Cfg, {"n": "a"})
    with pytest.raises(ConfigError, match=r"invalid value True for n: expected int"):
        config_from_dict(Cfg, {"n": True})
    with pytest.raises(ConfigError, match=r"invalid value 3 for name: expected str"):
        config_from_dict(Cfg, {"name": 3})
    with pytest.raises(ConfigError, match=r"invalid value 5 for inner: expected Inner"):
        config_from_dict(Cfg, {"inner": 5})
    with pytest.raises(ConfigError, match=r"config for Cfg is not valid JSON"):
        config_from_json(Cfg, "{n: 1}")
    bad = tmp_path / "bad.json"
    bad.write_text('{"n": "many"}')
    with pytest.raises(ConfigError, match=r"bad.json: invalid value 'many' for n: expected int"):
        load_config(Cfg, bad)
    with pytest.raises(ConfigError, match=r"missing.json: .*No such file"):
        load_config(Cfg, tmp_path / "missing.json")


# ---------------------------------------------------------------- round trips


def to_argv(cfg) -> list[str]:
    """Switches that reproduce ``cfg``, written from its JSON form (not from our parser)."""
    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            walk(v, f"{prefix}{k}.") if isinstance(v, dict) else flat.__setitem__(prefix + k, v)

    walk(json.loads(config_to_json(cfg)))
    text = {bool: lambda v: str(v).lower(), list: lambda v: ",".join(map(str, v)), type(None): lambda v: "none"}
    return [f"--{k}={text.get(type(v), str)(v)}" for k, v in flat.items()]


configs = st.builds(
    Cfg,
    n=st.integers(-(10**12), 10**12),
    name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
    path=st.sampled_from([Path("/a/b"), Path("rel/c.json")]),
    mode=st.sampled_from(["train", "eval"]),
    color=st.sampled_from(list(Color)),
    ids=st.lists(st.integers(-1000, 1000), max_size=4),
    maybe=st.none() | st.integers(0, 9),
    opt_s=st.none() | st.sampled_from(["a", "b c"]),
    inner=st.builds(Inner, lr=st.floats(allow_nan=False), flag=st.booleans()),
)


@settings(max_examples=60, deadline=None)
@given(configs)
def test_round_trip_dataclass_argv_dataclass(cfg):
    parsed = parse(to_argv(cfg))
    assert parsed == cfg
    assert diff_configs(cfg, parsed) == []


@settings(max_examples=60, deadline=None)
@given(configs)
def test_round_trip_dataclass_json_dataclass(cfg):
    assert config_from_json(Cfg, config_to_json(cfg)) == cfg
    assert config_from_dict(Cfg, json.loads(json.dumps(config_to_dict(cfg)))) == cfg


def test_save_load_then_override_from_command_line(tmp_path, caplog):
    save_config(Cfg(n=7, inner=Inner(lr=0.5)), tmp_path / "c.json")
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temp file left behind
    with caplog.at_level(logging.INFO, logger="subroutines"):
        cfg = parse_config(Cfg, ["--config", str(tmp_path / "c.json"), "--inner.lr=0.25"])
    assert cfg == Cfg(n=7, inner=Inner(lr=0.25))
    assert [r.getMessage() for r in caplog.records] == ["overriding inner.lr=0.25 (was 0.5)"]


def test_diff_get_set():
    a, b = Cfg(), Cfg()
    set_field(b, "inner.lr", 0.5)
    set_field(b, "name", "y")
    assert get_field(b, "inner.lr") == b.inner.lr == 0.5
    assert diff_configs(a, b) == ["name", "inner.lr"]


# ---------------------------------------------------------------- the documented example

EXAMPLE = textwrap.dedent(re.search(r"::\n\n(.*?)\n\nIt prints", sr.__doc__, re.S).group(1))


def run_script(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def check_example_output(proc: subprocess.CompletedProcess, last: str) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "{'foo': 9, 'somefoo': {'val': 7.0}}\n"
    lines = proc.stderr.splitlines()
    assert len(lines) == 3, proc.stderr
    assert lines[0].endswith("INFO:MyConfigUser: overriding foo=9 (was 0)")
    assert lines[1].endswith("INFO:MyConfigUser: overriding somefoo.val=7.0 (was 8.0)")
    assert lines[2].endswith(f"INFO:MyConfigUser: {last}")


def test_docstring_example_runs_unchanged():
    check_example_output(run_script(EXAMPLE), "reconfigured")


def test_example_with_only_star_imports():
    # The project's original usage took argparse, dataclass and asdict from ``from subroutines import *``.
    star_only = EXAMPLE.replace("import argparse\nfrom dataclasses import asdict, dataclass\n", "")
    assert star_only != EXAMPLE
    check_example_output(run_script(star_only), "reconfigured")


def test_example_in_process(caplog, capsys):
    example: dict = {"__name__": "example"}
    classes = EXAMPLE[: EXAMPLE.index("\ncc = setupLogRelay")]  # the example's imports and classes
    exec(compile(classes, "<example>", "exec", dont_inherit=True), example)  # without this file's __future__
    MyConfig, MyConfigUser = example["MyConfig"], example["MyConfigUser"]

    with caplog.at_level(logging.INFO, logger="MyConfigUser"):
        cc = setup_log_relay(MyConfigUser())
        assert cc.reconfigure(splitByWhiteSpace(" --somefoo.val=7\t--foo=9 ")) is cc
        print(asdict(cc))
        cc.info("done %s", 1)
    assert capsys.readouterr().out == "{'foo': 9, 'somefoo': {'val': 7.0}}\n"
    got = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert got == [
        ("MyConfigUser", "INFO", "overriding foo=9 (was 0)"),
        ("MyConfigUser", "INFO", "overriding somefoo.val=7.0 (was 8.0)"),
        ("MyConfigUser", "INFO", "done 1"),
    ]
    # a logger works as printer too
    messages = []
    logger = logging.getLogger("test.printer")
    logger.addHandler(h := logging.Handler())
    h.emit = lambda record: messages.append(record.getMessage())
    logger.setLevel(logging.INFO)
    overrideConfig(MyConfig(), {"foo": 4}, buildCmdLineParserFrom(MyConfig), printer=logger)
    logger.removeHandler(h)
    assert messages == ["overriding foo=4 (was 0)"]


def test_import_is_silent_and_lazy():
    proc = run_script("import sys, subroutines, LogRelay; print(sorted({'torch', 'numpy'} & set(sys.modules)))")
    assert (proc.stdout, proc.stderr) == ("[]\n", "")


# ---------------------------------------------------------------- tensor printing


class DuckTensor:
    """What format_tensors needs from a tinytorch Tensor: .shape and .tolist()."""

    def __init__(self, rows):
        self.rows, self.shape = rows, (len(rows), len(rows[0]))

    def tolist(self):
        return [list(r) for r in self.rows]


def test_format_tensors_horizontal_values_from_torch():
    q = torch.randn(2, 3, requires_grad=True)
    k = np.arange(6, dtype=np.int64).reshape(3, 2)
    out = format_tensors(q=q, k=k, gap=3).splitlines()
    assert re.match(r"q \(2, 3\) float32\s+k \(3, 2\) int64$", out[0])
    assert len(out) == 1 + 3  # header + the taller block's rows
    for i in range(2):  # the left block's rows hold torch's values at 4 decimals
        assert out[1 + i].split()[:3] == [f"{x:.4f}" for x in q[i].tolist()]
    assert out[3].split() == ["4", "5"]  # q has no third row: only k's


def test_format_tensors_vertical_nd_truncation_and_duck_typing():
    x = torch.arange(2 * 3 * 20).reshape(2, 3, 20)
    out = format_tensors(("x", x), DuckTensor([[0.5, 1.0]]), [1, 2], layout="vertical", max_items=6)
    blocks = out.split("\n\n")
    assert blocks[0].splitlines()[0] == "x (2, 3, 20) int64"
    assert blocks[0].splitlines()[1] == "[0, :, :]"
    assert blocks[0].splitlines()[2].split() == ["0", "1", "2", "...", "17", "18", "19"]
    assert "[1, :, :]" in blocks[0]
    assert blocks[1].splitlines() == ["t1 (1, 2) float", "0.5000 1.0000"]
    assert blocks[2].splitlines() == ["t2 (2,) int", "1 2"]
    assert format_tensors(s=torch.tensor(2.5, dtype=torch.float64)) == "s () float64\n2.5000"


def test_format_tensors_bad_layout():
    with pytest.raises(ValueError, match="layout must be 'horizontal' or 'vertical', found 'diagonal'"):
        format_tensors(torch.zeros(1), layout="diagonal")


@dataclass
class Run:
    max_seq_len: int = field(default=64, metadata={"help": "context, 100% of it"})
    use_cache: bool = True


def test_dashed_aliases_and_percent_in_help(capsys):
    parser = ArgumentParser(prog="prog")
    triples = add_dataclass_arguments(parser, Run, dashes=True)
    for argv in (["--max-seq-len=8", "--no-use-cache"], ["--max_seq_len=8", "--no-use_cache"]):
        cfg = override_config(Run(), parser.parse_args(argv), triples, printer=lambda m: None)
        assert cfg == Run(max_seq_len=8, use_cache=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "context, 100% of it (default: 64)" in " ".join(capsys.readouterr().out.split())


def test_did_you_mean_reaches_subcommand_switches(capsys):
    parser = ArgumentParser(prog="prog")
    sub = parser.add_subparsers(dest="command", required=True)
    add_dataclass_arguments(sub.add_parser("run"), Run)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["run", "--max_seqlen=3"])
    assert exc.value.code == 2
    assert (
        "unrecognized arguments: --max_seqlen=3; --max_seqlen: did you mean --max_seq_len?" in capsys.readouterr().err
    )


def test_format_tensors_tinytorch_matches_torch():
    tinytorch = pytest.importorskip("tinytorch")
    rows = [[1.0, -2.5, 3.25], [0.125, 5.0, -6.0]]
    assert format_tensors(x=tinytorch.tensor(rows), y=tinytorch.tensor([1, 2])) == format_tensors(
        x=torch.tensor(rows, dtype=torch.float64), y=torch.tensor([1, 2])
    )
