"""Run by test_executor_names.py in its own process: a Ray with the dashboard (state API)."""

import asyncio
import json
import os
import sys

import ray
from ray.util.state import list_actors, list_tasks

from plait import LLMInference, Module
from plait.testing import LLMServer


class Fork(Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = LLMInference(alias="fast")
        self.right = LLMInference(alias="fast")

    def forward(self, text: str) -> str:
        return f"{self.left('L ' + text)} / {self.right('R ' + text)}"


async def main() -> dict[str, object]:
    async with LLMServer(latency=0.05) as server:
        res = server.resource_config({"fast": "m"})
        ray.init(address="local", num_cpus=2, include_dashboard=True,
                 runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(__file__)}})
        pipeline = Fork().bind(resources=res, executor="ray")
        single = await pipeline("x")
        batch = await pipeline(["a", "b", "c"])
        # This Ray's address: other Ray instances may run on the machine.
        address = ray.get_runtime_context().gcs_address
        actors = [a.name for a in list_actors(address=address,
                                              filters=[("state", "=", "ALIVE")])]
        tasks: list[tuple[str, str]] = []
        for _ in range(60):  # task events reach the state API asynchronously (bounded wait)
            tasks = [(t.name, t.worker_id) for t in list_tasks(address=address, limit=1000)
                     if t.name.startswith("plait:")]
            if {"plait:left", "plait:right"} <= {name for name, _ in tasks}:
                break
            await asyncio.sleep(0.5)
        return {"single": single, "batch": batch, "actors": actors, "tasks": tasks}


if __name__ == "__main__":
    result = asyncio.run(main())
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
