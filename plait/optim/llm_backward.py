"""``LLMInference.backward``: output feedback -> feedback for its system prompt and its input.

Two modes, chosen by whoever calls ``loss.backward()``:

- Template (default, no LLM): the output's feedback is passed on, framed for each receiver,
  so the optimizer's LLM sees what the call produced and what was wrong with it. Free,
  deterministic, and enough when the optimizer's LLM does the reasoning.
- LLM (``loss.backward(alias="...")`` or a loss built with ``backward_alias=``): one call per
  LLM node asks the backward model to split the blame: what the system prompt should change,
  and what was wrong with the input this call received (for upstream steps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from plait.llm import LLMInference
    from plait.optim.backward import BackwardContext, InputFeedback

__all__ = ["BACKWARD_SYSTEM_PROMPT", "BackwardReply", "llm_backward"]

BACKWARD_SYSTEM_PROMPT = (
    "You assign blame in an LLM pipeline. One step received an input and a system prompt and "
    "produced an output; the output got feedback. Explain, concretely and briefly, (1) what "
    "the step's system prompt should change, and (2) what was wrong or missing in the input "
    "it received (empty if the input was fine). Reply with JSON only."
)
_EXCERPT = 1500  # characters of each value shown to the backward model or the optimizer


class BackwardReply(BaseModel):
    """What the backward model answers for one LLM step."""

    prompt_feedback: str = Field(description="What the system prompt should change.")
    input_feedback: str = Field(description="What was wrong with the input; empty if nothing.")


async def llm_backward(module: LLMInference, feedback: str, ctx: BackwardContext) -> InputFeedback:
    """Feedback for ``module``'s system prompt (if learnable) and for its prompt input."""
    prompt = str(ctx.args[0]) if ctx.args else ""
    output = str(ctx.output)
    learnable = module.system_prompt.requires_grad
    if not learnable and not ctx.inputs_learnable:
        return None  # nothing here or upstream can learn: skip the work (and the LLM call)
    if ctx.llm is None:
        if learnable:
            ctx.add_parameter_feedback(module.system_prompt, (
                f"Step '{ctx.module_path}' was given the input {_clip(prompt)!r} and produced "
                f"{_clip(output)!r}. Feedback on this output: {feedback}"
            ))
        return (f"This value was the input of step '{ctx.module_path}', whose output "
                f"{_clip(output)!r} got this feedback: {feedback}")
    reply = await ctx.llm.ask(BACKWARD_SYSTEM_PROMPT, (
        f"Step: {ctx.module_path}\nSystem prompt:\n{_clip(module.system_prompt.value)}\n\n"
        f"Input:\n{_clip(prompt)}\n\nOutput:\n{_clip(output)}\n\nFeedback on the output:\n"
        f"{feedback}"
    ), BackwardReply)
    if learnable:
        ctx.add_parameter_feedback(module.system_prompt, reply.prompt_feedback.strip())
    return reply.input_feedback.strip() or None


def _clip(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + " [...]"
