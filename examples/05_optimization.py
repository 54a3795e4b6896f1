"""Learning a prompt from feedback: train(), loss, backward(), optimizer.step().

A toy task, offline: answer "What is the capital of X?" with only the city name, in
UPPERCASE (the grader wants both). The built-in server plays two models:

- the task model answers with a full sentence, unless its system prompt asks for only the
  city name; and writes in UPPERCASE only when the prompt says so;
- the optimizer model reads the feedback it is sent and adds the instruction it asks for.

A programmatic verifier reports the first problem it finds, so the score climbs step by step.
Run it: ``python examples/05_optimization.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

from plait import LLMInference, Module, Parameter
from plait.optim import Optimizer, VerifierLoss
from plait.testing import ChatRequest, LLMServer

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima"}


class CapitalQA(Module):
    """One LLM call whose system prompt is learned."""

    def __init__(self) -> None:
        super().__init__()
        self.instructions = Parameter(
            "Answer the geography question.",
            description="System prompt of a geography QA step; its replies are graded "
                        "automatically, so it must state the exact answer format.",
        )
        self.answer = LLMInference(alias="fast", system_prompt=self.instructions)

    def forward(self, question: str) -> str:
        return self.answer(question)


def grade(output: str, city: str) -> tuple[float, str]:
    """Half a point for the bare city name, half for UPPERCASE; feedback on the first miss."""
    only_city = output.strip().lower() == city.lower()
    upper = output == output.upper()
    if not only_city:
        return 0.5 * upper, (f"Reply with only the city name, no sentence: expected "
                             f"{city!r} alone, got {output!r}.")
    if not upper:
        return 0.5, f"The answer must be written in UPPERCASE letters, got {output!r}."
    return 1.0, ""


def scripted_models(req: ChatRequest) -> str:
    """The server's replies: the task model and the optimizer model."""
    if req.model == "model-o":
        return _optimizer_reply(req.user_text)
    country = next((c for c in CAPITALS if c in req.user_text), "France")
    city = CAPITALS[country]
    system = req.system.lower()
    reply = city if "only the city" in system else f"The capital of {country} is {city}."
    return reply.upper() if "uppercase" in system else reply


def _optimizer_reply(prompt: str) -> str:
    match = re.search(r"<<<\n(.*?)\n>>>", prompt, re.S)
    value = match.group(1) if match else ""
    feedback = prompt.partition("Feedback (")[2]
    fixes = []
    if "only the city name" in feedback and "only the city" not in value:
        fixes.append("Reply with only the city name.")
    if "UPPERCASE" in feedback and "UPPERCASE" not in value:
        fixes.append("Write the answer in UPPERCASE.")
    new = " ".join([value, *fixes])
    return json.dumps({"summary": "; ".join(fixes) or "nothing to fix", "new_value": new})


@dataclass
class OptimizationRun:
    """What main() measured."""

    scores: list[float]  # score of each training step's outputs, before its update
    final_score: float  # eval-mode score after the last step
    llm_calls: int  # requests the server received (task + optimizer)
    final_prompt: str


async def main(steps: int = 3, verbose: bool = True) -> OptimizationRun:
    """Train the prompt for ``steps`` steps on four questions; report the scores."""
    questions = [f"What is the capital of {c}?" for c in CAPITALS]
    answers = list(CAPITALS.values())
    async with LLMServer(latency=0.0, responder=scripted_models) as server:
        resources = server.resource_config({"fast": "model-a", "optimizer": "model-o"})
        pipeline = CapitalQA().bind(resources=resources)
        optimizer = Optimizer(pipeline.parameters()).bind(resources)
        loss_fn = VerifierLoss(grade)
        scores: list[float] = []
        for step in range(steps):
            pipeline.train()
            optimizer.zero_feedback()
            outs = await pipeline(questions)
            loss = await loss_fn(outs, target=answers)
            await loss.backward()
            summary = await optimizer.step()
            scores.append(loss.score)
            if verbose:
                print(f"step {step}: score {loss.score:.2f}  changed {summary.changed}  "
                      f"prompt -> {pipeline.instructions.value!r}")
        pipeline.eval()
        final = await loss_fn(await pipeline(questions), target=answers)
        calls = server.stats().total_requests
    if verbose:
        print(f"final (eval): score {final.score:.2f}; {calls} LLM calls in total")
    return OptimizationRun(scores, final.score, calls, pipeline.instructions.value)


if __name__ == "__main__":
    asyncio.run(main())
