"""Push/pop semantics of tinytorch.debug flags, one test per kind of flag."""

import logging

import pytest

from tinytorch.debug import DEBUG, DebugFlagError, DebugHelper, DebugPop, DebugPush


class Layer:
    def forward(self):
        return DEBUG.on(self, "forward")

    def backward(self):
        return DEBUG.on(self, "backward")


class SubLayer(Layer):
    pass


class Other:
    def forward(self):
        return DEBUG.on(self, "forward")


@pytest.fixture
def dbg():
    return DebugHelper("tinytorch.debug.test")


@pytest.fixture(autouse=True)
def clean_global():
    DEBUG.clear()
    yield
    DEBUG.clear()


def test_nothing_pushed_is_off(dbg):
    assert not dbg.on(Layer(), "forward")
    assert not dbg.on("attention")
    assert dbg.depth == 0


def test_class_flag_covers_instances_subclasses_and_methods(dbg):
    a, s, o = Layer(), SubLayer(), Other()
    dbg.push(Layer)
    assert dbg.on(a) and dbg.on(a, "forward") and dbg.on(s, "backward") and dbg.on(Layer)
    assert not dbg.on(o, "forward")
    dbg.pop()
    assert not dbg.on(a, "forward")


def test_class_method_string_flag(dbg):
    a, o = Layer(), Other()
    dbg.push("Layer.forward")
    assert dbg.on(a, "forward") and dbg.on(SubLayer(), "forward")
    assert not dbg.on(a, "backward") and not dbg.on(a) and not dbg.on(o, "forward")
    dbg.pop()
    assert not dbg.on(a, "forward")


def test_unbound_method_flag_is_class_method(dbg):
    a = Layer()
    dbg.push(Layer.backward)
    assert dbg.on(a, "backward") and not dbg.on(a, "forward")


def test_instance_flag(dbg):
    a, b = Layer(), Layer()
    dbg.push(a)
    assert dbg.on(a) and dbg.on(a, "forward") and dbg.on(a, "backward")
    assert not dbg.on(b, "forward")
    dbg.pop()
    assert not dbg.on(a, "forward")


def test_instance_method_flag_bound_and_tuple(dbg):
    a, b = Layer(), Layer()
    dbg.push(a.forward)
    assert dbg.on(a, "forward") and not dbg.on(a, "backward") and not dbg.on(b, "forward")
    dbg.push((b, "backward"))
    assert dbg.on(b, "backward") and not dbg.on(b, "forward")
    dbg.pop()
    assert not dbg.on(b, "backward") and dbg.on(a, "forward")
    dbg.pop()
    assert not dbg.on(a, "forward")


def test_custom_string_flag_and_class_name(dbg):
    dbg.push("attention")
    assert dbg.on("attention") and not dbg.on("mlp")
    dbg.pop()
    dbg.push("Other")  # a bare string also names a class
    assert dbg.on(Other(), "forward") and not dbg.on(Layer(), "forward")


def test_star_flag(dbg):
    dbg.push("*")
    assert dbg.on(Other()) and dbg.on("anything")


def test_nested_push_pop_restores_outer_sets(dbg):
    a = Layer()
    dbg.push("attention")
    dbg.push(Layer)
    assert dbg.on("attention") and dbg.on(a)
    assert dbg.pop() == (Layer,)
    assert dbg.on("attention") and not dbg.on(a)
    # the same flag in two sets stays on until both are popped
    dbg.push("attention")
    dbg.pop()
    assert dbg.on("attention")
    dbg.pop()
    assert not dbg.on("attention")


def test_context_manager_global_singleton():
    a = Layer()
    with DEBUG.flags(Layer.forward):
        assert a.forward() and not a.backward() and not Other().forward()
        with DEBUG.flags(Other):
            assert Other().forward()
        assert not Other().forward()
    assert not a.forward() and DEBUG.depth == 0


def test_context_manager_pops_on_exception(dbg):
    with pytest.raises(KeyError), dbg.flags("x"):
        raise KeyError("boom")
    assert dbg.depth == 0 and not dbg.on("x")


def test_debug_logs_through_relay(dbg, caplog):
    with caplog.at_level(logging.DEBUG, logger="tinytorch.debug.test"):
        dbg.debug(Layer(), "forward", "x=%d", 3)  # off: nothing logged
        with dbg.flags(Layer):
            dbg.debug(Layer(), "forward", "x=%d", 4)
    messages = [r.getMessage() for r in caplog.records if "x=" in r.getMessage()]
    assert messages == ["[Layer.forward] x=4"]


def test_pop_empty_stack_error(dbg):
    with pytest.raises(DebugFlagError, match="pop: expected a pushed flag set, found only the base set"):
        dbg.pop()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("", "expected a non-empty string"),
        (".forward", "expected 'Class.method'"),
        ((1, 2), r"expected \(instance, 'method'\)"),
        (3, "expected a class, string, object or bound method"),
        (None, "expected a class, string, object or bound method"),
    ],
)
def test_bad_flags(dbg, flag, message):
    with pytest.raises(DebugFlagError, match=message):
        dbg.push(flag)
    assert dbg.depth == 0


def test_plain_function_flag_error(dbg):
    def helper():
        pass

    for fn in (helper, len):
        with pytest.raises(DebugFlagError, match="expected a method, found a plain function"):
            dbg.push(fn)


# --- DebugPush / DebugPop: the project's original module-level names over DEBUG ---------------------------------


def test_debug_push_pop_are_exported_and_drive_the_global_helper():
    import tinytorch
    import tinytorch.debug

    assert (tinytorch.DebugPush, tinytorch.DebugPop) == (tinytorch.debug.DebugPush, tinytorch.debug.DebugPop)
    a, b = Layer(), Layer()
    assert DebugPush(a) == 1 and DEBUG.depth == 1  # the new depth, as DEBUG.push returns
    assert DEBUG.on(a, "forward") and a.forward() and not b.forward()
    assert DebugPop() == (a,) and DEBUG.depth == 0 and not a.forward()


@pytest.mark.parametrize(
    "make_flag, on, off",
    [
        (lambda a, s: Layer, lambda a, s: [(a, "forward"), (s, "backward")], lambda a, s: [(Other(), "forward")]),
        (lambda a, s: "Layer.backward", lambda a, s: [(a, "backward"), (s, "backward")], lambda a, s: [(a, "forward")]),
        (lambda a, s: a, lambda a, s: [(a, "forward"), (a, "backward")], lambda a, s: [(s, "forward")]),
        (lambda a, s: a.forward, lambda a, s: [(a, "forward")], lambda a, s: [(a, "backward"), (s, "forward")]),
        (lambda a, s: "attention", lambda a, s: [("attention", None)], lambda a, s: [(a, "forward"), ("mlp", None)]),
    ],
    ids=["class", "Class.method", "instance", "instance method", "custom flag"],
)
def test_debug_push_takes_every_documented_kind_of_flag(make_flag, on, off):
    a, s = Layer(), SubLayer()
    DebugPush(make_flag(a, s))
    assert all(DEBUG.on(obj, m) for obj, m in on(a, s))
    assert not any(DEBUG.on(obj, m) for obj, m in off(a, s))
    DebugPop()
    assert not any(DEBUG.on(obj, m) for obj, m in on(a, s))


def test_debug_pop_removes_only_the_topmost_set_and_never_the_base():
    a, b = Layer(), Layer()
    DebugPush(a)
    DebugPush(b, "attention")
    assert DebugPop() == (b, "attention")  # the topmost set only
    assert DEBUG.depth == 1 and a.forward() and not b.forward() and not DEBUG.on("attention")
    assert DebugPop() == (a,)
    with pytest.raises(DebugFlagError, match=r"pop: expected a pushed flag set, found only the base set"):
        DebugPop()  # the base set stays: refused, stack unchanged and still usable
    assert DEBUG.depth == 0 and not a.forward()
    DebugPush(a)
    assert a.forward()


def test_debug_push_switches_on_tinytorch_layer_logging(caplog):
    import tinytorch as tt

    layer, other = tt.nn.Linear(3, 2), tt.nn.Linear(2, 1)
    x = tt.ones(4, 3)
    with caplog.at_level(logging.DEBUG, logger="tinytorch.debug"):
        other(layer(x))  # nothing pushed: nothing logged
        DebugPush(layer.forward)
        other(layer(x))
        DebugPop()
        other(layer(x))
    messages = [r.getMessage() for r in caplog.records if r.name == "tinytorch.debug" and "->" in r.getMessage()]
    assert messages == ["[Linear.forward] [(4, 3)] -> (4, 2)"]
