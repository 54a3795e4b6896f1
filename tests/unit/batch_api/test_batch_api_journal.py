"""The batch-id journal and the batch policy: durable records, claims, validation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from plait.batch_api import PROVIDER_LIMITS, BatchPolicy, as_policy
from plait.batch_api._journal import BatchJournal, item_id, request_hash
from plait.batch_api._run import with_journal_dir
from plait.errors import ConfigError
from plait.resources.config import EndpointConfig, OpenAIEndpointConfig, ResourceConfig


def test_request_hash_is_stable_and_tells_bodies_apart() -> None:
    a = request_hash("openai", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    b = request_hash("openai", {"messages": [{"content": "x", "role": "user"}], "model": "m"})
    c = request_hash("anthropic", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert a == b != c
    assert len(a) == 32
    assert item_id(a, 3) == f"{a}-3"


def test_recorded_batches_are_claimed_by_a_new_journal_once(tmp_path: Path) -> None:
    digest = request_hash("openai", {"p": 1})
    first = BatchJournal(tmp_path, "openai")
    items = [first.new_item(digest), first.new_item(digest)]
    assert items == [f"{digest}-0", f"{digest}-1"]
    asyncio.run(first.record("batch_1", items))

    second = BatchJournal(tmp_path, "openai")  # a re-run: reads every journal file
    assert second.claim(digest) == (f"{digest}-0", "batch_1")
    assert second.claim(digest) == (f"{digest}-1", "batch_1")
    assert second.claim(digest) is None
    assert second.new_item(digest) == f"{digest}-2"  # never an id the journal holds
    assert second.batches["batch_1"].items == tuple(items)


def test_items_submitted_here_are_not_claimed_again(tmp_path: Path) -> None:
    journal = BatchJournal(tmp_path, "openai")
    digest = request_hash("openai", {"p": 2})
    item = journal.new_item(digest)
    asyncio.run(journal.record("batch_2", [item]))
    assert journal.claim(digest) is None


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    digest = request_hash("openai", {"p": 3})
    good = {"v": 1, "batch": "batch_ok", "at": 1.0, "items": [f"{digest}-0"]}
    (tmp_path / "journal-1-aa.jsonl").write_text(
        json.dumps(good) + "\n"
        + json.dumps({"batch": "../../etc", "at": 1.0, "items": [f"{digest}-1"]}) + "\n"
        + json.dumps({"batch": "b", "at": 1.0, "items": ["not-an-item", 7]}) + "\n"
        + '{"v": 1, "batch": "batch_cut", "at": 2.0, "items": ["')
    journal = BatchJournal(tmp_path, "openai")
    assert set(journal.batches) == {"batch_ok", "b"}
    assert journal.batches["b"].items == ()
    assert journal.claim(digest) == (f"{digest}-0", "batch_ok")
    assert journal.claim(digest) is None


def test_journal_lines_hold_ids_only(tmp_path: Path) -> None:
    journal = BatchJournal(tmp_path, "anthropic")
    asyncio.run(journal.record("msgbatch_1", [item_id("a" * 32, 0)]))
    (path,) = tmp_path.glob("journal-*.jsonl")
    record = json.loads(path.read_text())
    assert set(record) == {"v", "batch", "provider", "at", "items"}


def test_in_memory_journal_writes_nothing(tmp_path: Path) -> None:
    journal = BatchJournal(None, "openai")
    asyncio.run(journal.record("batch_3", [item_id("b" * 32, 0)]))
    assert "batch_3" in journal.batches
    assert list(tmp_path.iterdir()) == []


def test_policy_limits_never_exceed_the_provider() -> None:
    assert BatchPolicy().limits("openai") == PROVIDER_LIMITS["openai"]
    assert BatchPolicy().limits("anthropic") == (100_000, 256 * 2**20)
    assert BatchPolicy(max_requests=10**9, max_bytes=100).limits("openai") == (50_000, 100)


@pytest.mark.parametrize("bad", [{"linger": -1}, {"poll_interval": float("inf")},
                                 {"max_requests": 0}, {"rows_in_flight": True},
                                 {"max_wait": "1h"}])
def test_policy_refuses_bad_values_naming_them(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        BatchPolicy(**bad)  # type: ignore[arg-type]


def test_endpoint_batch_setting_accepts_true_policy_and_mapping() -> None:
    assert OpenAIEndpointConfig("m").batch is False
    assert as_policy(OpenAIEndpointConfig("m", batch=True).batch) == BatchPolicy()
    from_yaml = EndpointConfig.from_dict({"provider_api": "openai", "model": "m",
                                          "batch": {"poll_interval": 5}})
    assert from_yaml.batch == BatchPolicy(poll_interval=5)
    with pytest.raises(ConfigError, match="Unknown batch setting"):
        OpenAIEndpointConfig("m", batch={"poll": 5})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch must be"):
        OpenAIEndpointConfig("m", batch="yes")  # type: ignore[arg-type]


def test_run_journal_dir_comes_from_checkpoint_dir_and_keeps_the_key(tmp_path: Path) -> None:
    resources = ResourceConfig(endpoints={
        "bulk": OpenAIEndpointConfig("m", batch=True, api_key="sk-inline-key-123"),
        "sync": OpenAIEndpointConfig("m"),
        "mine": OpenAIEndpointConfig("m", batch=BatchPolicy(journal_dir="/elsewhere"))})
    assert with_journal_dir(resources, None) is resources
    moved = with_journal_dir(resources, tmp_path)
    bulk = moved["bulk"]
    assert as_policy(bulk.batch) == BatchPolicy(journal_dir=str(tmp_path / "batch_api"))
    assert bulk.resolve_api_key("bulk") == "sk-inline-key-123"
    assert moved["sync"] is resources["sync"]
    assert moved["mine"] is resources["mine"]


def test_endpoint_to_dict_keeps_the_policy_as_plain_data() -> None:
    config = OpenAIEndpointConfig("m", batch=BatchPolicy(linger=3.0))
    data = config.to_dict()
    assert data["batch"]["linger"] == 3.0
    assert EndpointConfig.from_dict(data) == config
    assert OpenAIEndpointConfig("m", batch=True).to_dict()["batch"] is True


def test_a_fresh_run_deletes_the_journal_it_would_claim_from(tmp_path: Path) -> None:
    resources = ResourceConfig(endpoints={"bulk": OpenAIEndpointConfig("m", batch=True)})
    journal = BatchJournal(tmp_path / "batch_api" / "bulk", "openai")
    asyncio.run(journal.record("batch_old", [item_id("c" * 32, 0)]))
    with_journal_dir(resources, tmp_path)  # resume="auto" keeps it
    assert BatchJournal(tmp_path / "batch_api" / "bulk", "openai").batches
    with_journal_dir(resources, tmp_path, fresh=True)
    assert not BatchJournal(tmp_path / "batch_api" / "bulk", "openai").batches
