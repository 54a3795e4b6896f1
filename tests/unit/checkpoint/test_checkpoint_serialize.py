import json
from datetime import datetime

import pytest
from pydantic import BaseModel

from plait.checkpoint import fingerprint_inputs
from plait.errors import CheckpointError, RateLimitError
from plait.serialize import (
    ErrorInfo,
    from_jsonable,
    jsonable_default,
    model_registry,
    to_jsonable,
)


class Verdict(BaseModel):
    label: str
    score: float
    reasons: list[str] = []


class Report(BaseModel):
    verdicts: list[Verdict]
    meta: dict[str, int]


MODELS = model_registry([Report])  # Report declares Verdict through its field


def roundtrip(value):
    # Through real JSON text, as the store does.
    return from_jsonable(json.loads(json.dumps(to_jsonable(value))), MODELS)


@pytest.mark.parametrize(
    "value",
    [
        "text",
        "",
        0,
        -7,
        2.5,
        True,
        None,
        [1, "a", None, [2.0]],
        {"a": {"b": [1, 2]}},
        (1, "a"),
        {"pair": (1, (2, 3)), "empty": ()},
        [(), ((),)],
        b"\x00\xffbytes",
        {1: "int key", 2.5: "float key", (1, 2): "tuple key"},
        {"__tuple__": "a user dict that looks like a tag"},
        {"__pydantic__": "x:Y", "data": 1},
    ],
)
def test_roundtrip_plain_values(value):
    result = roundtrip(value)
    assert result == value
    assert type(result) is type(value)


def test_roundtrip_pydantic_models_nested():
    report = Report(verdicts=[Verdict(label="ok", score=0.9, reasons=["r"])], meta={"n": 1})
    value = {"report": report, "many": [Verdict(label="x", score=1.0)], "t": (report,)}
    result = roundtrip(value)
    assert result == value
    assert isinstance(result["report"], Report)
    assert isinstance(result["report"].verdicts[0], Verdict)
    assert isinstance(result["t"], tuple)


def test_pydantic_tag_names_the_class():
    data = to_jsonable(Verdict(label="a", score=1.0))
    assert data["__pydantic__"] == f"{__name__}:Verdict"
    assert data["data"] == {"label": "a", "score": 1.0, "reasons": []}


def test_undeclared_model_raises_naming_it():
    data = {"__pydantic__": "no_such_module_xyz:Gone", "data": {}}
    with pytest.raises(CheckpointError, match=r"no_such_module_xyz:Gone.*does not declare"):
        from_jsonable(data, MODELS)
    with pytest.raises(CheckpointError, match="Missing"):
        from_jsonable({"__pydantic__": f"{__name__}:Missing", "data": {}}, MODELS)
    # Without a registry no model is rebuilt, even an importable one.
    with pytest.raises(CheckpointError, match=r"Verdict.*declared: none"):
        from_jsonable(to_jsonable(Verdict(label="a", score=1.0)))


def test_registry_walks_annotations_and_fields():
    assert set(model_registry([list[Report] | None, int, "text"])) == {
        f"{__name__}:Report", f"{__name__}:Verdict"}


def test_model_that_no_longer_validates_raises():
    with pytest.raises(CheckpointError, match="no longer validates"):
        from_jsonable({"__pydantic__": f"{__name__}:Verdict", "data": {"label": 1}}, MODELS)


def test_non_model_class_is_refused_on_load():
    with pytest.raises(CheckpointError, match="does not declare"):
        from_jsonable({"__pydantic__": "json:dumps", "data": {}}, MODELS)


@pytest.mark.parametrize("data", [
    {"__tuple__": 5},
    {"__bytes__": "not base64!"},
    {"__dict__": [[1]]},
    {"__error__": "x"},
    {"__pydantic__": ["list"], "data": {}},
])
def test_malformed_tags_raise_checkpoint_error(data):
    with pytest.raises(CheckpointError):
        from_jsonable(data, MODELS)


def test_model_defined_in_function_is_refused_on_save():
    class Local(BaseModel):
        x: int

    with pytest.raises(CheckpointError, match="inside a function"):
        to_jsonable({"v": Local(x=1)})


@pytest.mark.parametrize(
    ("value", "type_name", "where"),
    [
        ({1, 2}, "builtins.set", "value"),
        ({"a": [1, datetime(2020, 1, 1)]}, "datetime.datetime", "value['a'][1]"),
        ([object()], "builtins.object", "value[0]"),
    ],
)
def test_unsupported_types_are_refused_with_type_and_location(value, type_name, where):
    with pytest.raises(CheckpointError) as info:
        to_jsonable(value)
    message = str(info.value)
    assert type_name in message
    assert where in message
    assert "pickle" in message  # says we never pickle, and what to do instead


def test_errors_become_error_info():
    err = RateLimitError("slow down", status=429)
    assert roundtrip(err) == ErrorInfo("RateLimitError", "slow down", 429)
    assert roundtrip(ValueError("bad")) == ErrorInfo("ValueError", "bad", None)
    assert roundtrip(ErrorInfo("X", "m", 500)) == ErrorInfo("X", "m", 500)


def test_jsonable_default_for_json_dumps():
    text = json.dumps({"v": Verdict(label="a", score=1.0), "b": b"x"}, default=jsonable_default)
    assert json.loads(text)["v"]["data"]["label"] == "a"
    with pytest.raises(TypeError, match=r"builtins\.set"):
        json.dumps({"s": {1}}, default=jsonable_default)


def test_fingerprint_is_stable_and_sensitive():
    rows = [{"q": "a", "k": 1}, {"q": "b", "k": 2}]
    same = [{"k": 1, "q": "a"}, {"k": 2, "q": "b"}]  # key order does not matter
    assert fingerprint_inputs(rows) == fingerprint_inputs(iter(same))
    assert fingerprint_inputs(rows).startswith("sha256:")
    assert fingerprint_inputs(rows) != fingerprint_inputs(rows[::-1])
    assert fingerprint_inputs(rows) != fingerprint_inputs(rows[:1])
    assert fingerprint_inputs(["ab", "c"]) != fingerprint_inputs(["a", "bc"])
    assert fingerprint_inputs([(1, 2)]) != fingerprint_inputs([[1, 2]])
    assert fingerprint_inputs([]) == fingerprint_inputs(iter(()))
