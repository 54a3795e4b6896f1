"""Child process of the checkpoint kill test: run a 2-call batch with a checkpoint directory.

Usage: ``python _kill_child.py BASE_URL CHECKPOINT_DIR ROWS MAX_INFLIGHT OUT_JSON``

The parent SIGKILLs the first run mid-batch and runs this script again to finish. When the
batch completes, the outputs and ``last_run`` counters are written to ``OUT_JSON``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from plait import LLMInference, Module
from plait.resources import ResourceConfig
from plait.testing._resources import resource_config_for


class TwoCalls(Module):
    """Draft on ``fast``, then judge the draft on ``smart``: two dependent calls per row."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = LLMInference(alias="fast")
        self.judge = LLMInference(alias="smart")

    def forward(self, text: str) -> str:
        return self.judge(f"Judge: {self.draft(text)}")


def rows(count: int) -> list[str]:
    """The batch both runs use (the parent derives the expected outputs from it)."""
    return [f"row-{i}" for i in range(count)]


def resources(base_url: str, max_concurrent: int) -> ResourceConfig:
    """Both aliases on the spawned loopback server."""
    return resource_config_for(base_url, {"fast": "m-a", "smart": "m-b"}, "openai", None,
                               "PLAIT_TESTING_API_KEY", {"max_concurrent": max_concurrent})


async def main(base_url: str, checkpoint_dir: str, count: int, inflight: int,
               out: str) -> None:
    pipeline = TwoCalls().bind(resources=resources(base_url, inflight),
                               checkpoint_dir=checkpoint_dir, max_inflight=inflight,
                               progress=False)
    outputs = await pipeline(rows(count))
    report = pipeline.last_run
    Path(out).write_text(json.dumps({"outputs": outputs, "resumed": report.resumed,
                                     "rows": report.rows}))


if __name__ == "__main__":
    url, directory, n, window, out_path = sys.argv[1:6]
    asyncio.run(main(url, directory, int(n), int(window), out_path))
