"""Containers like torch.nn: named Sequential, type checks, the list and dict mutation API.

Modules here make no LLM call, so calling one from this synchronous test runs it at once
(no sockets).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

from plait import (
    LLMInference,
    Module,
    ModuleDict,
    ModuleList,
    Parameter,
    ParameterDict,
    ParameterList,
    Sequential,
)
from plait.errors import ModuleDefinitionError


class Suffix(Module):
    """A plain-Python step (a leaf) with a learnable Parameter, so it shows in state_dict."""

    leaf = True

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.note = Parameter(f"note {tag}", description="a note")

    def forward(self, text: str) -> str:
        return f"{text}+{self.tag}"


def tags(container: Any) -> list[str]:
    return [m.tag for m in container]


# --- Sequential(OrderedDict) ----------------------------------------------------------------


def test_sequential_from_an_ordered_dict_holds_runs_and_names_its_modules() -> None:
    seq = Sequential(OrderedDict([("first", Suffix("a")), ("second", Suffix("b"))]))
    assert len(seq) == 2
    assert [name for name, _ in seq.named_children()] == ["first", "second"]
    assert seq.state_dict() == {"first.note": "note a", "second.note": "note b"}
    assert seq.first is seq[0]  # pyright: ignore[reportAttributeAccessIssue]
    assert seq("x") == "x+a+b"


def test_sequential_from_a_plain_dict_and_positional_modules() -> None:
    assert Sequential({"only": Suffix("a")})("x") == "x+a"
    seq = Sequential(Suffix("a"), Suffix("b"))
    assert [n for n, _ in seq.named_children()] == ["0", "1"] and seq("x") == "x+a+b"
    assert Sequential()("x") == "x"  # an empty Sequential passes its input through


# --- non-Module / non-Parameter items raise TypeError -----------------------------------------


@pytest.mark.parametrize("build", [
    lambda: Sequential(Suffix("a"), "not a module"),  # pyright: ignore[reportArgumentType]
    lambda: Sequential(OrderedDict([("a", Suffix("a")), ("b", len)])),  # pyright: ignore[reportArgumentType]
    lambda: ModuleList([Suffix("a"), 3]),  # pyright: ignore[reportArgumentType]
    lambda: ModuleList().append("x"),  # pyright: ignore[reportArgumentType]
    lambda: ModuleDict({"a": "not a module"}),  # pyright: ignore[reportArgumentType]
    lambda: ParameterList([Parameter("p", requires_grad=False), "text"]),  # pyright: ignore[reportArgumentType]
    lambda: ParameterDict({"k": "text"}),  # pyright: ignore[reportArgumentType]
    lambda: ParameterList([Suffix("a")]),  # pyright: ignore[reportArgumentType]
])
def test_an_item_of_the_wrong_type_is_a_type_error_not_dropped(build: Any) -> None:
    with pytest.raises(TypeError) as info:
        build()
    assert isinstance(info.value, ModuleDefinitionError)
    assert " not a Module" in str(info.value) or " not a Parameter" in str(info.value)


def test_the_type_error_names_the_item() -> None:
    with pytest.raises(ModuleDefinitionError,
                       match=r"ModuleList item 1 is a int \(3\), not a Module"):
        ModuleList([Suffix("a"), 3])  # pyright: ignore[reportArgumentType]
    with pytest.raises(ModuleDefinitionError, match=r"ModuleDict entry 'b' is a str"):
        ModuleDict([("a", Suffix("a")), ("b", "oops")])  # pyright: ignore[reportArgumentType]


def test_a_bad_dict_key_is_rejected() -> None:
    with pytest.raises(ModuleDefinitionError, match=r"key 'a.b' is not usable"):
        ModuleDict({"a.b": Suffix("a")})
    with pytest.raises(ModuleDefinitionError, match=r"key 'keys' is not usable"):
        ModuleDict({"keys": Suffix("a")})
    with pytest.raises(ModuleDefinitionError, match=r"not a \(key, value\) pair"):
        ModuleDict([("a", Suffix("a"), "extra")])  # pyright: ignore[reportArgumentType]


# --- list mutation API ------------------------------------------------------------------------


def test_module_list_mutation_api() -> None:
    mods = ModuleList([Suffix("a"), Suffix("b")])
    mods.append(Suffix("c"))
    mods.extend([Suffix("d")])
    mods.insert(1, Suffix("x"))
    assert tags(mods) == ["a", "x", "b", "c", "d"]
    popped = mods.pop(1)
    assert popped.tag == "x" and tags(mods) == ["a", "b", "c", "d"]  # pyright: ignore
    assert mods.pop().tag == "d"  # pyright: ignore
    mods[0] = Suffix("z")
    del mods[1]
    assert tags(mods) == ["z", "c"]
    mods += [Suffix("e")]
    assert tags(mods) == ["z", "c", "e"]
    # Names stay 0..n-1 after every change, so state_dict keys follow positions.
    assert [n for n, _ in mods.named_children()] == ["0", "1", "2"]
    assert list(mods.state_dict()) == ["0.note", "1.note", "2.note"]
    del mods[0:2]
    assert tags(mods) == ["e"] and mods[-1].tag == "e"  # pyright: ignore
    with pytest.raises(IndexError, match="index 5 is out of range for ModuleList of length 1"):
        mods[5]
    with pytest.raises(ModuleDefinitionError):
        mods[0] = "x"  # pyright: ignore[reportArgumentType]


def test_sequential_mutation_keeps_names_and_reruns() -> None:
    seq = Sequential(OrderedDict([("first", Suffix("a")), ("second", Suffix("b"))]))
    assert seq("x") == "x+a+b"
    seq.append(Suffix("c"))
    assert seq("x") == "x+a+b+c"  # the graph is re-traced after a change
    seq.insert(0, Suffix("z"))
    assert seq("x") == "x+z+a+b+c"
    assert [n for n, _ in seq.named_children()][1:3] == ["first", "second"]
    del seq[1]
    assert "first" not in dict(seq.named_children()) and seq("x") == "x+z+b+c"
    seq[0] = Suffix("y")
    assert seq.pop().tag == "c" and seq("x") == "x+y+b"  # pyright: ignore


def test_numbered_sequential_is_renumbered_after_delete() -> None:
    seq = Sequential(Suffix("a"), Suffix("b"), Suffix("c"))
    del seq[0]
    assert [n for n, _ in seq.named_children()] == ["0", "1"] and seq("x") == "x+b+c"


def test_parameter_list_mutation_api_feeds_state_dict() -> None:
    plist = ParameterList([Parameter("a", requires_grad=False)])
    plist.append(Parameter("b", requires_grad=False))
    plist.insert(0, Parameter("z", requires_grad=False))
    plist[1] = Parameter("A", requires_grad=False)
    assert [p.value for p in plist] == ["z", "A", "b"]
    assert plist.pop(0).value == "z"
    del plist[0]
    plist.extend([Parameter("c", requires_grad=False)])
    assert plist.state_dict() == {"0": "b", "1": "c"}


# --- slicing returns the same container type ------------------------------------------------


def test_slicing_returns_the_same_container_type() -> None:
    mods = ModuleList([Suffix("a"), Suffix("b"), Suffix("c")])
    part = mods[1:]
    assert isinstance(part, ModuleList) and tags(part) == ["b", "c"]
    assert [n for n, _ in part.named_children()] == ["0", "1"]
    assert tags(mods) == ["a", "b", "c"]  # the original is unchanged
    seq = Sequential(OrderedDict([("p", Suffix("a")), ("q", Suffix("b")), ("r", Suffix("c"))]))
    head = seq[:2]
    assert isinstance(head, Sequential) and head("x") == "x+a+b"
    assert [n for n, _ in head.named_children()] == ["p", "q"]  # names kept, as in torch
    plist = ParameterList([Parameter(v, requires_grad=False) for v in "abc"])
    tail = plist[::2]
    assert isinstance(tail, ParameterList) and [p.value for p in tail] == ["a", "c"]


# --- dict mutation API ------------------------------------------------------------------------


def test_module_dict_mutation_api_and_pairs() -> None:
    table = ModuleDict([("a", Suffix("a")), ("b", Suffix("b"))])  # (key, value) pairs
    assert list(table) == ["a", "b"]
    table.update({"c": Suffix("c")})
    table.update([("d", Suffix("d"))])
    assert list(table.keys()) == ["a", "b", "c", "d"]
    assert [k for k, _ in table.items()] == ["a", "b", "c", "d"]
    assert tags(table.values()) == ["a", "b", "c", "d"]
    assert table.pop("b").tag == "b"  # pyright: ignore
    del table["c"]
    assert list(table) == ["a", "d"] and "c" not in table
    assert table.state_dict() == {"a.note": "note a", "d.note": "note d"}
    table.clear()
    assert len(table) == 0 and table.state_dict() == {}


def test_parameter_dict_mutation_api_and_pairs() -> None:
    pdict = ParameterDict([("a", Parameter("1", requires_grad=False))])
    pdict.update({"b": Parameter("2", requires_grad=False)})
    assert [p.value for p in pdict.values()] == ["1", "2"] and list(pdict.keys()) == ["a", "b"]
    assert pdict.pop("a").value == "1"
    pdict["c"] = Parameter("3", requires_grad=False)
    del pdict["b"]
    assert pdict.state_dict() == {"c": "3"}
    pdict.clear()
    assert len(pdict) == 0


# --- __dir__ ----------------------------------------------------------------------------------


def test_dir_shows_children_and_parameters() -> None:
    table = ModuleDict({"summarize": LLMInference(alias="fast")})
    assert "summarize" in dir(table) and "update" in dir(table)
    seq = Sequential(OrderedDict([("first", Suffix("a"))]))
    assert "first" in dir(seq)
    assert "note" in dir(Suffix("a"))  # any module: its Parameters too
    assert "0" not in dir(ModuleList([Suffix("a")]))  # not an identifier, as in torch
