"""Per-sequence dropout masks (AWD-LSTM, as in the reference's language_modelling code).

Reversal recomputes every step, so every random choice must be drawn once per segment and reused
exactly: locked ("variational") dropout uses one [B, features] mask for all time steps, embedding
dropout one keep/drop decision per vocabulary row. Masks are pre-scaled by 1 / (1 - p).
"""

from __future__ import annotations

import torch


def locked_mask(batch: int, features: int, p: float, like: torch.Tensor, training: bool) -> torch.Tensor | None:
    """A [B, features] mask shared by every time step, or None when nothing is dropped."""
    if not training or p <= 0:
        return None
    keep = 1.0 - p
    return torch.empty(batch, features, dtype=like.dtype, device=like.device).bernoulli_(keep).div_(keep)


def embedding_row_mask(vocab: int, p: float, like: torch.Tensor, training: bool) -> torch.Tensor | None:
    """Word-level embedding dropout: drop whole rows of the embedding matrix, rescale the rest."""
    if not training or p <= 0:
        return None
    keep = 1.0 - p
    return torch.empty(vocab, 1, dtype=like.dtype, device=like.device).bernoulli_(keep).div_(keep)


def embed(tokens: torch.Tensor, weight: torch.Tensor, row_mask: torch.Tensor | None,
          in_mask: torch.Tensor | None) -> torch.Tensor:
    """Embed ``tokens`` [T, B] with both dropouts: (W * row_mask)[tokens] * in_mask.

    Gathering first and masking the gathered rows gives the same values as masking the whole
    V x E matrix (AWD-LSTM's ``embedded_dropout``) at O(T B E) instead of O(V E) cost.
    """
    x = torch.nn.functional.embedding(tokens, weight)
    if row_mask is not None:
        x = x * row_mask[tokens]
    if in_mask is not None:
        x = x * in_mask
    return x


def embed_grad(tokens: torch.Tensor, dX: torch.Tensor, row_mask: torch.Tensor | None,
               in_mask: torch.Tensor | None, out: torch.Tensor) -> None:
    """Accumulate into ``out`` (the embedding's gradient) the gradient of :func:`embed`'s output."""
    if in_mask is not None:
        dX = dX * in_mask
    if row_mask is not None:
        dX = dX * row_mask[tokens]
    out.index_add_(0, tokens.reshape(-1), dX.reshape(-1, dX.shape[-1]))
