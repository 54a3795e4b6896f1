"""Module, Parameter and containers: registration, traversal, state, modes (no sockets)."""

from __future__ import annotations

import pickle
from pathlib import Path

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
from plait.errors import ConfigError, ModuleDefinitionError


class Leafy(Module):
    def __init__(self) -> None:
        super().__init__()
        self.style = Parameter("Be brief.", description="style")
        self.llm = LLMInference(alias="fast", system_prompt=self.style)

    def forward(self, text: str) -> str:
        return self.llm(text)


class Tree(Module):
    def __init__(self) -> None:
        super().__init__()
        self.tone = Parameter("Neutral.", description="tone")
        self.left = Leafy()
        self.right = Leafy()
        self.judge = LLMInference(alias="smart", system_prompt="Judge.")

    def forward(self, text: str) -> str:
        return self.judge(f"{self.left(text)} {self.right(text)} {self.tone}")


def test_children_and_modules_are_registered_in_assignment_order() -> None:
    tree = Tree()
    assert [name for name, _ in tree.named_children()] == ["left", "right", "judge"]
    assert list(tree.children()) == [tree.left, tree.right, tree.judge]
    assert [name for name, _ in tree.named_modules()] == [
        "", "left", "left.llm", "right", "right.llm", "judge",
    ]
    assert next(iter(tree.modules())) is tree
    assert tree.get_submodule("left.llm") is tree.left.llm


def test_parameters_have_dotted_names_and_shared_ones_are_listed_once() -> None:
    tree = Tree()
    names = [name for name, _ in tree.named_parameters()]
    # Leafy's style Parameter is shared by Leafy and its LLMInference: listed once.
    assert names == ["tone", "left.style", "right.style", "judge.system_prompt"]
    assert len(list(tree.parameters())) == 4
    assert [n for n, _ in tree.named_parameters(recurse=False)] == ["tone"]
    assert tree.get_parameter("left.style").value == "Be brief."


def test_reassigning_or_deleting_an_attribute_updates_the_registries() -> None:
    tree = Tree()
    tree.left = LLMInference(alias="fast")  # a module replaced by another keeps its place
    assert isinstance(tree.left, LLMInference)
    assert [n for n, _ in tree.named_children()] == ["left", "right", "judge"]
    tree.tone = "plain string"  # a Parameter replaced by a plain value
    assert "tone" not in dict(tree.named_parameters())
    assert tree.tone == "plain string"
    del tree.right
    assert [n for n, _ in tree.named_children()] == ["left", "judge"]
    with pytest.raises(AttributeError, match="'Tree' object has no attribute 'right'"):
        _ = tree.right


def test_state_dict_round_trip_and_strict_loading_lists_every_bad_key() -> None:
    tree = Tree()
    state = tree.state_dict()
    # A Parameter shared by Leafy and its LLMInference appears once, under its first name.
    assert state["left.style"] == "Be brief." and "left.llm.system_prompt" not in state
    state["tone"] = "Warm."
    other = Tree()
    other.load_state_dict(state)
    assert other.tone.value == "Warm."
    with pytest.raises(ConfigError) as info:
        other.load_state_dict({"tone": "x", "bogus": "y"})
    msg = str(info.value)
    assert "missing keys ['judge.system_prompt'" in msg and "unknown keys ['bogus']" in msg
    assert "strict=False" in msg
    other.load_state_dict({"tone": "Cold.", "bogus": "ignored"}, strict=False)
    assert other.tone.value == "Cold."


def test_train_and_eval_set_the_mode_on_every_module() -> None:
    tree = Tree()
    assert not any(m.training for m in tree.modules())
    assert tree.train() is tree
    assert all(m.training for m in tree.modules())
    tree.eval()
    assert not any(m.training for m in tree.modules())


def test_module_pickles_without_bound_settings() -> None:
    tree = Tree().bind(max_inflight=3)
    copy = pickle.loads(pickle.dumps(tree))
    assert copy.state_dict() == tree.state_dict()
    assert copy.__dict__["_bound"] is None


def test_repr_shows_the_tree() -> None:
    text = repr(Tree())
    assert "(left): Leafy(" in text and "(judge): LLMInference(alias='smart'" in text


def test_forgot_super_init_is_named() -> None:
    class Bad(Module):
        def __init__(self) -> None:
            self.x = 1

    with pytest.raises(ModuleDefinitionError, match=r"Bad.__init__ assigned self.x before"):
        Bad()


def test_forward_must_be_defined() -> None:
    with pytest.raises(NotImplementedError, match="must define forward"):
        Module().forward("x")


# --- Parameter -------------------------------------------------------------------------------


def test_parameter_requires_a_description_when_learnable() -> None:
    with pytest.raises(ConfigError, match="has no description"):
        Parameter("x")
    frozen = Parameter("x", requires_grad=False)
    assert str(frozen) == "x" and repr(frozen) == "Parameter('x', requires_grad=False)"


def test_parameter_feedback_accumulates_and_clears() -> None:
    p = Parameter("v", description="d")
    p.accumulate_feedback("shorter")
    p.accumulate_feedback("")
    assert p.feedback == ["shorter"]
    p.apply_update("w")
    assert p.value == "w" and p.feedback == []
    p.accumulate_feedback("again")
    clone = pickle.loads(pickle.dumps(p))
    assert clone.value == "w" and clone.feedback == []  # feedback is not shipped
    p.zero_feedback()
    assert p.feedback == []


# --- containers ------------------------------------------------------------------------------


def test_sequential_registers_in_order_and_indexes() -> None:
    a, b = LLMInference(alias="a"), LLMInference(alias="b")
    seq = Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and list(seq) == [a, b]
    assert [n for n, _ in seq.named_children()] == ["0", "1"]


def test_module_list_and_dict() -> None:
    mods = ModuleList([LLMInference(alias="a")])
    mods.append(LLMInference(alias="b"))
    mods.extend([LLMInference(alias="c")])
    assert len(mods) == 3 and [m.alias for m in mods] == ["a", "b", "c"]  # pyright: ignore
    assert [m.alias for m in mods[1:]] == ["b", "c"]  # pyright: ignore
    table = ModuleDict({"x": LLMInference(alias="a")})
    table["y"] = LLMInference(alias="b")
    assert list(table) == ["x", "y"] and "y" in table and len(table) == 2
    assert list(table.keys()) == ["x", "y"] and table["x"] is next(iter(table.values()))
    with pytest.raises(NotImplementedError, match="ModuleList has no forward"):
        mods.forward("x")
    holder = Module()
    holder.steps = mods
    assert [n for n, _ in holder.named_modules()][:2] == ["", "steps"]


def test_parameter_list_and_dict_feed_state_dict() -> None:
    plist = ParameterList([Parameter("a", description="d")])
    plist.append(Parameter("b", description="d"))
    pdict = ParameterDict({"k": Parameter("c", description="d")})
    holder = Module()
    holder.plist = plist
    holder.pdict = pdict
    assert holder.state_dict() == {"plist.0": "a", "plist.1": "b", "pdict.k": "c"}
    assert [p.value for p in plist] == ["a", "b"] and plist[1].value == "b"
    assert list(pdict) == ["k"] and "k" in pdict and dict(pdict.items())["k"].value == "c"


def test_a_rejected_assignment_leaves_the_old_child_in_place() -> None:
    class NoInit(Module):
        def __init__(self) -> None:
            pass

    tree = Tree()
    old = tree.left
    with pytest.raises(ModuleDefinitionError, match=r"NoInit.__init__ did not call super"):
        tree.left = NoInit()
    assert tree.left is old
    assert [n for n, _ in tree.named_children()] == ["left", "right", "judge"]


def test_bind_checks_values_at_once_and_keeps_them_normalized(tmp_path: Path) -> None:
    module = Tree().bind(checkpoint_dir=str(tmp_path), max_inflight=2)
    bound = module.__dict__["_bound"]
    assert bound["checkpoint_dir"] == tmp_path and bound["max_inflight"] == 2
    with pytest.raises(ConfigError, match="resources must be a ResourceConfig"):
        Tree().bind(resources=3)


# --- which forward() inputs take a list as one value (the batch rule) ------------------------


def test_list_annotations_read_types_and_unresolvable_text() -> None:
    from collections.abc import Sequence
    from typing import Any

    from plait.execution.annotations import list_annotations

    class Local:  # not resolvable from the module's globals: the annotation text is parsed
        pass

    class Takes(Module):
        def forward(self, a: list[str], b: list[list[int]] | None, c: str, d: Sequence[Any],
                    e: list[Local], f: Local | list[list[Local]], g) -> str:
            return c

    found = {i: (a.name, a.element_is_list) for i, a in list_annotations(Takes()).items()}
    assert found == {0: ("a", False), 1: ("b", True), 3: ("d", None), 4: ("e", False),
                     5: ("f", True)}


def test_split_inputs_one_list_is_one_row_only_for_a_list_input() -> None:
    from plait import Batch
    from plait.errors import InputError
    from plait.execution.inputs import split_inputs

    class Docs(Module):
        def forward(self, docs: list[str], k: int = 2) -> list[str]:
            return docs

    class Text(Module):
        def forward(self, text: str) -> str:
            return text

    one = split_inputs(Docs(), (["a", "b"],), {})
    assert not one.is_batch and list(one.rows) == [(0, (["a", "b"],), {})]
    many = split_inputs(Docs(), (Batch([["a"], ["b"]]),), {})
    assert many.is_batch and [r[1] for r in many.rows] == [(["a"],), (["b"],)]
    assert split_inputs(Text(), (["a", "b"],), {}).is_batch
    with pytest.raises(InputError, match=r"Batch\(rows\)"):
        split_inputs(Docs(), ([["a"], ["b"]],), {})
    with pytest.raises(InputError, match="Batch\\(\\) takes a list"):
        Batch("abc")
