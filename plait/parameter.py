"""Learnable values: prompts and instructions that backward passes improve."""

from __future__ import annotations

from typing import Any

from plait.errors import ConfigError
from plait.tracing.context import active_tracer

__all__ = ["Parameter"]


class Parameter:
    """A value (usually a prompt) that an optimizer may rewrite, like ``nn.Parameter``.

    Args:
        value: The current value.
        description: What the value is for. Required when ``requires_grad`` is True, because
            the optimizer's LLM rewrites the value from feedback and needs to know its role.
        requires_grad: Whether optimizers update this value.

    Example:
        >>> p = Parameter("Be concise.", description="Style of the summary.")
        >>> p.value
        'Be concise.'
    """

    def __init__(
        self, value: str, description: str | None = None, requires_grad: bool = True
    ) -> None:
        if not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(
                f"Parameter value must be a string, got {type(value).__name__}: {value!r}."
            )
        if requires_grad and not (description and description.strip()):
            raise ConfigError(
                f"Parameter({value[:40]!r}) is learnable (requires_grad=True) but has no "
                "description. Pass description='what this value controls' so the optimizer "
                "can rewrite it coherently, or requires_grad=False to freeze it."
            )
        self._value = value
        self.description = description
        self.requires_grad = requires_grad
        self._feedback: list[str] = []
        self._name: str | None = None

    @property
    def value(self) -> str:
        """The current value.

        Read inside a traced forward(), this is a placeholder for the value *when each row
        runs* (a ``param`` node), so ``self.template.value.format(input=x)`` and
        ``f"{self.template}"`` both see ``load_state_dict()`` and optimizer updates, however
        long the traced graph stays cached.
        """
        tracer = active_tracer()
        if tracer is not None:
            return tracer.param_text(self)
        return self._value

    @value.setter
    def value(self, new_value: str) -> None:
        self._value = new_value

    @property
    def feedback(self) -> list[str]:
        """Feedback accumulated by backward passes since the last step or zero_feedback()."""
        return list(self._feedback)

    def accumulate_feedback(self, feedback: str) -> None:
        """Collect one piece of feedback for the next optimizer step.

        Feedback on a frozen parameter (``requires_grad=False``) and empty text are ignored.

        Example:
            >>> p = Parameter("Be concise.", description="Style of the summary.")
            >>> p.accumulate_feedback("Mention the numbers.")
            >>> p.feedback
            ['Mention the numbers.']
        """
        if not isinstance(feedback, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(
                f"Feedback must be text, got {type(feedback).__name__}: {feedback!r:.80}."
            )
        if self.requires_grad and feedback:
            self._feedback.append(feedback)

    def zero_feedback(self) -> None:
        """Drop accumulated feedback (like ``zero_grad``)."""
        self._feedback.clear()

    def apply_update(self, new_value: str) -> None:
        """Set a new value (the optimizer's update) and clear the feedback.

        Example:
            >>> p.apply_update("Be concise; keep every number.")
            >>> p.value, p.feedback
            ('Be concise; keep every number.', [])
        """
        if not isinstance(new_value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(
                f"Parameter update must be a string, got {type(new_value).__name__}: "
                f"{new_value!r:.80}."
            )
        self.value = new_value
        self._feedback.clear()

    def __str__(self) -> str:
        tracer = active_tracer()
        if tracer is not None:
            # Inside forward(): a placeholder for the value at run time, so an f-string built
            # from a Parameter sees optimizer updates (graphs are cached across value changes).
            return tracer.param_text(self)
        return self._value

    def __format__(self, spec: str) -> str:
        tracer = active_tracer()
        if tracer is not None:
            return tracer.param_text(self, "", spec)
        return format(self._value, spec)

    def __repr__(self) -> str:
        grad = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter({self._value!r}{grad})"

    def __getstate__(self) -> dict[str, Any]:
        # Feedback is transient training state; workers get the value and description only.
        return {
            "value": self._value,
            "description": self.description,
            "requires_grad": self.requires_grad,
            "_name": self._name,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self._value = state.pop("value")
        self.__dict__.update(state)
        self._feedback = []
