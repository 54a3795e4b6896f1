"""The cache key and the on-disk store: no sockets, no Ray."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from plait.cache import CachedReply, CorruptEntry, ResponseCache, cache_key, key_material
from plait.clients.base import LLMRequest
from plait.resources import EndpointConfig, OpenAIEndpointConfig


def config(model: str = "gpt-4o-mini", **kw: object) -> EndpointConfig:
    return OpenAIEndpointConfig(model, **kw)  # type: ignore[arg-type]


def key(request: LLMRequest, cfg: EndpointConfig | None = None, node: str = "n",
        row: int | None = 0) -> str:
    return cache_key(cfg or config(), request, node_id=node, row=row)


def test_key_covers_everything_that_determines_the_reply() -> None:
    base = LLMRequest("p", "s", temperature=0.0, max_tokens=10)
    variants = [
        LLMRequest("p2", "s", temperature=0.0, max_tokens=10),
        LLMRequest("p", "s2", temperature=0.0, max_tokens=10),
        LLMRequest("p", "s", temperature=0.5, max_tokens=10),
        LLMRequest("p", "s", temperature=0.0, max_tokens=11),
        LLMRequest("p", "s", temperature=0.0, max_tokens=10, json_schema={"type": "object"}),
        LLMRequest("p", "s", temperature=0.0, max_tokens=10, schema_name="other"),
    ]
    keys = {key(base)} | {key(v) for v in variants}
    keys.add(key(base, config("gpt-4o")))
    keys.add(key(base, EndpointConfig("anthropic", "gpt-4o-mini")))
    assert len(keys) == len(variants) + 3


def test_key_ignores_what_does_not_change_the_reply() -> None:
    request = LLMRequest("p", temperature=0.0)
    a = key(request, config(api_key="sk-one", max_concurrent=3, timeout=5))
    b = key(request, config(api_key="sk-two", max_concurrent=99), node="other", row=7)
    assert a == b  # greedy: shared across keys, limits, nodes and rows
    material = json.dumps(key_material(config(api_key="sk-secret-123"), request,
                                       node_id="n", row=0))
    assert "sk-secret-123" not in material


def test_sampled_requests_are_keyed_per_row_and_node() -> None:
    request = LLMRequest("p", temperature=0.7)
    assert key(request, node="x", row=0) == key(request, node="x", row=0)
    assert len({key(request, node="x", row=0), key(request, node="y", row=0),
                key(request, node="x", row=1)}) == 3


def test_self_hosted_models_key_on_their_server() -> None:
    request = LLMRequest("p", temperature=0.0)
    a = EndpointConfig("vllm", "mistral", base_url="http://a:8000/v1")
    b = EndpointConfig("vllm", "mistral", base_url="http://b:8000/v1")
    assert key(request, a) != key(request, b)


def test_put_get_round_trip_and_layout(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    k = "ab" + "0" * 62
    assert cache.get(k) is None
    cache.put(k, CachedReply("héllo ✓", 12, 3, "gpt-4o-mini", 1.0))
    assert cache.get(k) == CachedReply("héllo ✓", 12, 3, "gpt-4o-mini", 1.0)
    assert cache.entry_path(k) == tmp_path / "v1" / "ab" / ("0" * 62 + ".json")
    assert [p.name for p in cache.entry_path(k).parent.iterdir()] == ["0" * 62 + ".json"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "other_key", "not_json"])
def test_damaged_entries_raise_corrupt(tmp_path: Path, damage: str) -> None:
    cache = ResponseCache(tmp_path)
    k = "cd" + "1" * 62
    cache.put(k, CachedReply("reply text", 1, 1, "m", 1.0))
    path = cache.entry_path(k)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-3])
    elif damage == "flip":
        path.write_bytes(data.replace(b"reply", b"rEply"))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other_key":
        other = "ef" + "2" * 62
        cache.put(other, CachedReply("x", 0, 0, "m", 1.0))
        os.replace(cache.entry_path(other), path)
    else:
        import hashlib

        payload = b"{not json"
        path.write_bytes(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    with pytest.raises(CorruptEntry):
        cache.get(k)
    cache.put(k, CachedReply("fresh", 1, 1, "m", 2.0))  # a rewrite repairs it
    assert cache.get(k) is not None


def _writer(path: str, k: str, n: int) -> None:
    cache = ResponseCache(path)
    for i in range(n):
        cache.put(k, CachedReply(f"reply {os.getpid()} {i} " + "x" * 5000, i, i, "m"))


def test_concurrent_processes_never_tear_an_entry(tmp_path: Path) -> None:
    """Writers in several processes rewrite one key while this one reads it."""
    k = "aa" + "3" * 62
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k, 200)) for _ in range(2)]
    for p in procs:
        p.start()
    cache = ResponseCache(tmp_path)
    reads = 0
    try:
        while any(p.is_alive() for p in procs):
            reply = cache.get(k)  # CorruptEntry here would be a torn entry
            reads += reply is not None
    finally:
        for p in procs:
            p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    assert cache.get(k) is not None
    assert not list(tmp_path.rglob("*.tmp"))


def test_stats_and_prune(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c")
    assert cache.stats().entries == 0
    keys = [f"{i:02x}" + "4" * 62 for i in range(5)]
    for k in keys:
        cache.put(k, CachedReply("r", 1, 1, "m"))
    old = time.time() - 10 * 86400
    for k in keys[:2]:
        os.utime(cache.entry_path(k), (old, old))
    stray = cache.entry_path(keys[4]).with_name("leftover.json.123.abcd.tmp")
    stray.write_bytes(b"half")
    os.utime(stray, (old, old))
    stats = cache.stats()
    assert (stats.entries, stats.temp_files) == (5, 1) and stats.bytes > 0
    assert "5 entries" in stats.format()
    removed, freed = cache.prune(7 * 86400)
    assert removed == 3 and freed > 0
    assert [cache.get(k) is None for k in keys] == [True, True, False, False, False]
    assert cache.prune(7 * 86400) == (0, 0)


def test_cache_pickles_as_its_path(tmp_path: Path) -> None:
    import pickle

    cache = ResponseCache(tmp_path)
    cache.put("bb" + "5" * 62, CachedReply("r"))
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.path == cache.path and clone.get("bb" + "5" * 62) is not None
