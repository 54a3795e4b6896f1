"""Learning prompts through feedback: losses, ``backward()`` and LLM optimizers.

The loop, as in PyTorch:

    pipeline.train(); optimizer.zero_feedback()
    out = await pipeline(x)                 # training mode: out carries its forward record
    loss = await loss_fn(out, target=y)     # a score in [0, 1] and feedback text
    await loss.backward()                   # feedback flows back to the Parameters
    await optimizer.step()                  # an LLM rewrites each learnable Parameter

Example:
    >>> optimizer = Optimizer(pipeline.parameters()).bind(resources)
    >>> loss_fn = VerifierLoss(lambda out, y: (out == y, f"Expected {y!r}."))
"""

from plait.optim._errors import BackwardError, JudgeReplyError, OptimizationError
from plait.optim.backward import BackwardContext, BackwardLLM, InputFeedback, combine_feedback
from plait.optim.composite import CompositeLoss
from plait.optim.judges import LLMJudge, LLMLossFn, LLMRubricLoss
from plait.optim.loss import BackwardReport, Loss, LossFn, LossItem
from plait.optim.optimizer import Optimizer, ParamUpdate, StepSummary
from plait.optim.preference import PairwisePreferenceLoss, RankingLoss
from plait.optim.record import ForwardRecord, attach_record, record_of
from plait.optim.state import load_state, save_state
from plait.optim.verifier import VerifierLoss

__all__ = [
    "BackwardContext",
    "BackwardError",
    "BackwardLLM",
    "BackwardReport",
    "CompositeLoss",
    "ForwardRecord",
    "InputFeedback",
    "JudgeReplyError",
    "LLMJudge",
    "LLMLossFn",
    "LLMRubricLoss",
    "Loss",
    "LossFn",
    "LossItem",
    "OptimizationError",
    "Optimizer",
    "PairwisePreferenceLoss",
    "ParamUpdate",
    "RankingLoss",
    "StepSummary",
    "VerifierLoss",
    "attach_record",
    "combine_feedback",
    "load_state",
    "record_of",
    "save_state",
]
