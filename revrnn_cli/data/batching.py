"""Truncated-BPTT batching for language models, as in pytorch/examples and AWD-LSTM.

The token stream is cut into ``batch_size`` contiguous columns. Column ``j``
holds the ``j``-th consecutive chunk of the corpus, so the hidden state
carried from one window to the next continues the same text. Windows are
taken along the time axis. With randomised BPTT (AWD-LSTM, reference `language_modelling/train.py`) the
window length varies, so that epochs do not always cut the text at the same
places.
"""

from __future__ import annotations

import random

import torch

__all__ = ["batchify", "get_batch", "sample_bptt_length"]


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Arrange a 1-D token stream as a ``[n_steps, batch_size]`` tensor (column-major).

    The remainder (``len(data) % batch_size`` tokens) is dropped from the end.
    ``out[:, j]`` equals ``data[j*n_steps:(j+1)*n_steps]``. The result is
    contiguous and on ``data``'s device. Moving it to another device is the
    caller's job.
    """
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        raise ValueError(f"batchify expects a 1-D tensor, got {getattr(data, 'shape', type(data))}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n_steps = data.numel() // batch_size
    if n_steps == 0:
        raise ValueError(f"cannot batchify {data.numel()} tokens into batch_size={batch_size} columns")
    return data.narrow(0, 0, n_steps * batch_size).view(batch_size, n_steps).t().contiguous()


def get_batch(source: torch.Tensor, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window starting at row ``i``: ``(input [T, B], target [T, B])`` with the target shifted by one step.

    ``T = min(seq_len, len(source) - 1 - i)``. The last window is shorter
    instead of reading past the end. Both tensors are views of ``source`` (no
    copy). The target is returned as ``[T, B]``, not flattened. Call
    ``.reshape(-1)`` for a token-level loss.
    """
    if source.dim() < 1:
        raise ValueError("source must have a time dimension")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if not 0 <= i < source.size(0) - 1:
        raise IndexError(f"batch start {i} out of range for a source of {source.size(0)} steps")
    length = min(seq_len, source.size(0) - 1 - i)
    return source[i : i + length], source[i + 1 : i + 1 + length]


def sample_bptt_length(
    rng: random.Random | torch.Generator,
    bptt: int,
    p_full: float = 0.95,
    std: float = 5.0,
    min_len: int = 5,
) -> int:
    """AWD-LSTM's random BPTT length: ``max(min_len, int(N(base, std)))``, where ``base = bptt`` with probability ``p_full``, else ``bptt / 2``.

    This matches ``language_modelling/train.py`` (``bptt / 2.`` is a float
    division, and ``int`` truncates towards zero). The result is
    deterministic given the state of ``rng``. A ``random.Random`` or a CPU
    ``torch.Generator`` is required, and the global RNGs are never used, so
    sampling a length does not shift any other random stream.
    """
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1, got {bptt}")
    if not 0.0 <= p_full <= 1.0:
        raise ValueError(f"p_full must be in [0, 1], got {p_full}")
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    if min_len < 1:
        raise ValueError(f"min_len must be >= 1, got {min_len}")
    if isinstance(rng, random.Random):
        u = rng.random()
        z = rng.gauss(0.0, 1.0)
    elif isinstance(rng, torch.Generator):
        draws = torch.empty(2, dtype=torch.float64)
        u = float(draws[:1].uniform_(0.0, 1.0, generator=rng))
        z = float(draws[1:].normal_(0.0, 1.0, generator=rng))
    else:
        raise TypeError(f"rng must be random.Random or torch.Generator, got {type(rng).__name__}")
    base = bptt if u < p_full else bptt / 2.0
    return max(min_len, int(base + std * z))
