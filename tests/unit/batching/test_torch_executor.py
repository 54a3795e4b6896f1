"""TorchExecutor: single-item calls share one forward pass; outputs split back in order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from plait.batching import Batcher
from plait.batching.torch import TorchExecutor
from plait.errors import ConfigError

torch = pytest.importorskip("torch")


class CountingLinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)
        self.calls = 0
        self.sizes: list[int] = []

    def forward(self, x: Any) -> Any:
        self.calls += 1
        self.sizes.append(int(x.shape[0]))
        return self.linear(x)


def test_items_are_collated_into_one_forward_pass_and_split_in_order() -> None:
    model = CountingLinear()
    executor = TorchExecutor(model=model, device="cpu")
    items = [torch.full((4,), float(i)) for i in range(16)]
    batcher = Batcher[Any, Any](max_batch=8, max_wait_ms=50)
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            outputs = list(pool.map(lambda x: batcher.run(x, executor=executor), items))
    finally:
        batcher.close()
    with torch.inference_mode():
        expected = [model.linear(x) for x in items]
    for got, want in zip(outputs, expected, strict=True):
        assert torch.allclose(got, want)
    assert model.calls < 16 and max(model.sizes) > 1


def test_tuple_outputs_and_custom_collate_and_split() -> None:
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"x": torch.stack([i["x"] for i in items])}

    def model(batch: dict[str, Any]) -> Any:
        return batch["x"] * 2, batch["x"].sum(dim=1)

    executor = TorchExecutor(model=model, collate_fn=collate)
    out = executor([{"x": torch.ones(3)}, {"x": torch.zeros(3)}])
    assert torch.equal(out[0][0], torch.full((3,), 2.0)) and float(out[0][1]) == 3.0
    assert float(out[1][1]) == 0.0
    names = TorchExecutor(model=model, collate_fn=collate, split_fn=lambda o: ["a", "b"])
    assert names([{"x": torch.ones(3)}, {"x": torch.ones(3)}]) == ["a", "b"]


def test_outputs_that_cannot_be_split_say_what_to_do() -> None:
    executor = TorchExecutor(model=lambda batch: "not a tensor")
    with pytest.raises(ConfigError, match="split_fn"):
        executor([torch.ones(2)])
    with pytest.raises(ConfigError, match="callable model"):
        TorchExecutor(model=3)  # type: ignore[arg-type]
