"""Tiny models built in code, for tests, examples and benchmarks (never downloaded).

``tiny_char_lm`` is a character-level causal LM (embedding, a causal mean over the prefix,
an MLP head) with random weights fixed by a seed: real torch compute, nonsense text. ``trivial_lm``
does almost no compute, to measure plait's own overhead per request. Both return
``(model, tokenizer)`` and are meant as ``TorchEndpointConfig.model_factory`` import paths:
``"plait.local_models.tiny:tiny_char_lm"``.
"""

from __future__ import annotations

import string
from typing import Any

from plait.local_models.torch_adapter import import_torch

__all__ = ["CharTokenizer", "tiny_char_lm", "trivial_lm"]


class CharTokenizer:
    """One token per character of a fixed alphabet, plus pad, eos and unknown.

    Args:
        alphabet: The known characters (printable ASCII by default).
    """

    def __init__(self, alphabet: str = string.printable) -> None:
        self.alphabet = alphabet
        self._ids = {ch: i + 3 for i, ch in enumerate(alphabet)}
        self.pad_id = 0
        self.eos_id: int | None = 1
        self.unk_id = 2

    @property
    def vocab_size(self) -> int:
        """Number of ids, special ones included."""
        return len(self.alphabet) + 3

    def encode(self, text: str) -> list[int]:
        """One id per character; characters outside the alphabet become ``unk_id``."""
        return [self._ids.get(ch, self.unk_id) for ch in text]

    def decode(self, ids: list[int]) -> str:
        """The characters of ``ids``; special ids are dropped."""
        return "".join(self.alphabet[i - 3] for i in ids if 3 <= i < self.vocab_size)


def tiny_char_lm(seed: int = 0, hidden: int = 64) -> tuple[Any, CharTokenizer]:
    """A random-weight char-level causal LM and its tokenizer.

    Each position sees its own token and the mean of the tokens so far, through an MLP.
    Pad tokens are masked out of the mean and the last position is always a real token,
    so a prompt's output does not depend on how much left padding its batch needed
    (batched and single-item generation agree). Special tokens are never generated, so replies
    run to ``max_new_tokens`` printable characters: token counts are predictable in tests.
    """
    torch = import_torch()
    nn = torch.nn
    tokenizer = CharTokenizer()

    class TinyCharLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()  # pyright: ignore[reportUnknownMemberType]
            self.embed = nn.Embedding(tokenizer.vocab_size, hidden)
            self.mix = nn.Linear(2 * hidden, hidden)
            self.head = nn.Linear(hidden, tokenizer.vocab_size)

        def forward(self, input_ids: Any) -> Any:
            real = (input_ids != tokenizer.pad_id).unsqueeze(-1).float()
            tokens = self.embed(input_ids) * real
            seen = real.cumsum(dim=1).clamp(min=1.0)
            context = tokens.cumsum(dim=1) / seen
            logits = self.head(torch.tanh(self.mix(torch.cat([tokens, context], dim=-1))))
            # Never pad, eos or unknown: one printable character per generated token.
            logits[..., :3] = -1e9
            return logits

    torch.manual_seed(seed)
    return TinyCharLM(), tokenizer


def trivial_lm() -> tuple[Any, CharTokenizer]:
    """A model that costs almost nothing: constant logits that always pick 'a'."""
    torch = import_torch()
    tokenizer = CharTokenizer()
    target = tokenizer.encode("a")[0]

    class TrivialLM(torch.nn.Module):
        def forward(self, input_ids: Any) -> Any:
            logits = torch.zeros(*input_ids.shape, tokenizer.vocab_size)
            logits[..., target] = 1.0
            return logits

    return TrivialLM(), tokenizer
