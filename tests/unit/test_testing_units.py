"""plait.testing pieces without sockets: schema faker, token bucket, fault plan, CLI flags."""

from __future__ import annotations

import datetime
import uuid
from typing import Literal

import pydantic
import pytest

from plait.errors import ConfigError
from plait.testing import Fault, ServerConfig, fake_json
from plait.testing._faults import FaultPlan
from plait.testing._limits import Limits, TokenBucket
from plait.testing.server_cli import build_parser, config_from_args


class Tree(pydantic.BaseModel):
    label: str = pydantic.Field(pattern=None, min_length=1)
    children: list[Tree] = []
    parent: Tree | None = None


class Shapes(pydantic.BaseModel):
    when: datetime.datetime
    day: datetime.date
    ident: uuid.UUID
    email_like: str = pydantic.Field(max_length=5)
    ratio: float = pydantic.Field(ge=0.0, lt=0.25)
    step: int = pydantic.Field(gt=10, multiple_of=5)
    pair: tuple[int, str]
    mode: Literal["x"]
    tags: set[str] = pydantic.Field(min_length=2)
    extra: dict[str, list[int]]


@pytest.mark.parametrize("model", [Tree, Shapes])
def test_fake_json_validates(model: type[pydantic.BaseModel]) -> None:
    schema = model.model_json_schema()
    value = fake_json(schema, seed_text="the input")
    model.model_validate(value)
    assert fake_json(schema, seed_text="the input") == value


def test_fake_json_embeds_seed_text_in_strings() -> None:
    assert fake_json({"type": "string"}, seed_text="abc") == "value: abc"
    assert fake_json({"type": "object", "properties": {"a": {"type": "string"}}}) == {"a": "a"}


def test_token_bucket_refills_with_clock() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=4, clock=lambda: now[0])
    assert [bucket.try_take() for _ in range(4)] == [0.0] * 4  # a second's worth of burst
    assert bucket.try_take() == pytest.approx(0.25)
    now[0] += 0.5
    assert [bucket.try_take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.try_take() > 0


def test_limits_per_model_and_global_concurrency() -> None:
    limits = Limits({"a": 1}, None, {"a": 2, "*": 3}, clock=lambda: 0.0)
    assert limits.rate_wait("a") == 0.0 and limits.rate_wait("a") > 0
    assert limits.rate_wait("b") == 0.0
    assert limits.over_concurrency("a", 2, 2)
    assert not limits.over_concurrency("b", 2, 2)
    assert limits.over_concurrency("b", 0, 3)


def test_fault_plan_queue_filters_and_limits() -> None:
    plan = FaultPlan([Fault("500"), Fault("429", model="x", times=2), Fault("close", every=3)],
                     seed=0)
    picks = [plan.pick(m, "") for m in ["y", "x", "y", "x", "x", "y"]]
    kinds = [p.kind if p else None for p in picks]
    assert kinds == ["500", "429", "close", "429", None, "close"]
    assert [f.kind for f in plan.pending()] == ["close"]


def test_fault_validation_messages() -> None:
    with pytest.raises(ConfigError, match="Fault kind must be one of"):
        Fault("418")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Unknown fault key"):
        Fault.from_dict({"kind": "500", "evry": 2})
    with pytest.raises(ConfigError, match="Valid settings"):
        ServerConfig().updated({"latncy": 1})
    with pytest.raises(ConfigError, match="latency"):
        ServerConfig(latency=-1)


def test_cli_flags_build_config() -> None:
    args = build_parser().parse_args([
        "--port", "0", "--latency", "0.05", "--latency", "slow=0.5", "--rate-limit", "m=100",
        "--max-concurrency", "8", "--fault", "500:every=10,model=m",
        "--fault", "429:retry_after=2", "--seed", "3", "--config", '{"record_requests": 5}',
    ])
    cfg = config_from_args(args)
    assert cfg.latency == {"*": 0.05, "slow": 0.5}
    assert cfg.rate_limit == {"m": 100.0} and cfg.max_concurrency == 8
    assert cfg.faults == [Fault("500", every=10, model="m"), Fault("429", retry_after=2.0)]
    assert (cfg.seed, cfg.record_requests) == (3, 5)
