"""``LocalModelRunner``: one loaded model behind a micro-batcher, shared by every caller.

The same runner serves the in-process client (local executor) and each Ray replica actor,
so batching, token counting and error mapping are defined once. The model loads lazily, in
a worker thread, exactly once; generation runs in a worker thread too, so the event loop
keeps accepting (and batching) requests while a batch runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from plait.batching import AsyncBatcher, BatcherStats
from plait.clients.base import LLMRequest, LLMResponse, Usage
from plait.errors import ConfigError, PlaitError, ServerError
from plait.local_models.config import LocalModelConfig
from plait.local_models.generation import GenerationRequest, Generator, format_prompt

__all__ = ["LocalModelRunner"]


class LocalModelRunner:
    """Loads one model on first use and answers requests in micro-batches.

    Args:
        config: The endpoint's config (model, batching and sampling settings).
        alias: The endpoint alias, for error messages.

    Example:
        >>> runner = LocalModelRunner(TorchEndpointConfig(
        ...     model_factory="plait.local_models.tiny:tiny_char_lm"), "local")
        >>> response = await runner.generate(LLMRequest(prompt="hi", max_tokens=8))
        >>> await runner.aclose()
    """

    def __init__(self, config: LocalModelConfig, alias: str) -> None:
        self.config = config
        self.alias = alias
        self._generator: Generator | None = None
        self._load_lock = asyncio.Lock()
        self._batcher = AsyncBatcher[GenerationRequest, LLMResponse](
            max_batch=config.max_batch,
            max_wait_ms=config.max_wait_ms,
            executor=self._run_batch,
            # A model runs one batch at a time; requests arriving meanwhile form the next one.
            max_concurrent_batches=1,
        )

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._generator is not None

    async def load(self) -> None:
        """Load the model once, off the event loop; later calls return at once.

        Raises:
            ConfigError: The factory, path or device is wrong (not retried).
        """
        if self._generator is not None:
            return
        async with self._load_lock:
            if self._generator is None:
                self._generator = await asyncio.to_thread(self._load_generator)

    def _load_generator(self) -> Generator:
        try:
            return self.config.load_generator()
        except PlaitError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"Loading local model '{self.config.model_name}' (alias '{self.alias}') "
                f"failed: {type(exc).__name__}: {exc}. Check the model factory or path; the "
                "call is not retried."
            ) from exc

    async def generate(self, request: LLMRequest) -> LLMResponse:
        """Answer one request, batched with concurrent ones.

        Raises:
            ServerError: Generation failed (retryable: e.g. out of memory); the cause is
                chained.
        """
        await self.load()
        return await self._batcher.submit(self._resolve(request))

    def _resolve(self, request: LLMRequest) -> GenerationRequest:
        cfg = self.config
        temperature = cfg.temperature if cfg.temperature is not None else request.temperature
        max_new = request.max_tokens if request.max_tokens is not None else cfg.max_new_tokens
        return GenerationRequest(format_prompt(request), max(1, max_new), max(0.0, temperature))

    def _run_batch(self, batch: list[GenerationRequest]) -> Sequence[LLMResponse]:
        # Runs in a worker thread (AsyncBatcher's sync_in_thread); one batch at a time.
        generator = self._generator
        assert generator is not None  # generate() loads before submitting
        try:
            generations = generator.generate(batch)
        except PlaitError:
            raise
        except Exception as exc:
            raise ServerError(
                f"Local model '{self.config.model_name}' (alias '{self.alias}') failed on a "
                f"batch of {len(batch)}: {type(exc).__name__}: {exc}. Retried within "
                "max_retries; if it persists, lower max_batch or max_new_tokens (memory) or "
                "check the model factory.",
                alias=self.alias,
            ) from exc
        name = self.config.model_name
        return [
            LLMResponse(
                text=g.text,
                usage=Usage(input_tokens=g.input_tokens, output_tokens=g.output_tokens),
                model=name,
                finish_reason=g.finish_reason,
            )
            for g in generations
        ]

    def stats(self) -> BatcherStats:
        """The micro-batcher's counters (batches, items, average batch size)."""
        return self._batcher.stats()

    async def aclose(self) -> None:
        """Finish accepted requests, then free the model."""
        await self._batcher.close()
        generator, self._generator = self._generator, None
        if generator is not None:
            await asyncio.to_thread(generator.close)
