"""The paper's toy sequence tasks (paper §4), generated from a seed with no files.

They show why a perfectly reversible RNN cannot forget. ``repeat`` needs no
memory for an ordinary RNN. Run backwards, however, an exactly reversible
model must rebuild every input from its final state. ``remember`` makes an
ordinary model store the whole sequence explicitly.

Token layout (shared by both tasks)
-----------------------------------
* Data symbols are ids ``0 .. vocab_size-1``, drawn uniformly and i.i.d.
* ``BLANK = vocab_size`` is an input-only marker, so the model's input
  vocabulary is ``vocab_size + 1`` (see :func:`num_input_tokens`). It never
  appears as a target.
* Steps with nothing to predict have target ``IGNORE_INDEX = -100``. That is
  the default ``ignore_index`` of ``torch.nn.CrossEntropyLoss``, so loss and
  accuracy count only the steps that carry information. The model needs no
  "blank" output class.

Formats (``K = seq_len``, the number of random symbols in a sequence)
---------------------------------------------------------------------
* ``repeat`` (length ``K``): ``inputs = x_1 … x_K``.
  ``targets = IGNORE, x_1 … x_{K-1}``. The target at step ``t`` is the input
  at step ``t-1``.
* ``remember`` (length ``2K``): ``inputs = x_1 … x_K, BLANK × K``.
  ``targets = IGNORE × K, x_1 … x_K``. The model reads the ``K`` symbols.
  Then, on each blank step, it outputs them again in order:
  ``targets[:, K:] == inputs[:, :K]``.

Determinism: every draw uses a local ``torch.Generator`` seeded from
``seed``, never the global RNG, so the same arguments give the same tensors
in any process. :func:`make_synthetic_splits` gives train/valid/test their
own sub-seeds, derived from ``seed`` by a stable hash (not Python's salted
``hash``). The splits are therefore independent draws. They are not made
disjoint: with ``vocab_size ** seq_len`` possible sequences, overlap is
negligible except for tiny settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .errors import DataError

__all__ = [
    "SYNTHETIC_TASKS",
    "IGNORE_INDEX",
    "blank_id",
    "num_input_tokens",
    "sequence_length",
    "split_seed",
    "make_synthetic",
    "SyntheticSplits",
    "make_synthetic_splits",
]

SYNTHETIC_TASKS: tuple[str, ...] = ("repeat", "remember")

#: Target value for steps that carry nothing to predict (``CrossEntropyLoss``'s default ``ignore_index``).
IGNORE_INDEX = -100


def blank_id(vocab_size: int) -> int:
    """Id of the input-only BLANK marker: one past the data symbols."""
    return vocab_size


def num_input_tokens(vocab_size: int) -> int:
    """Size of the input embedding the model needs: the data symbols plus BLANK."""
    return vocab_size + 1


def sequence_length(task: str, seq_len: int) -> int:
    """Total number of time steps for ``task`` with ``seq_len`` random symbols: ``K`` (repeat) or ``2K`` (remember)."""
    return seq_len * 2 if _check_task(task) == "remember" else seq_len


def split_seed(seed: int, split: str) -> int:
    """A stable 63-bit sub-seed for ``split``, derived from ``seed`` (the same on every platform and Python)."""
    digest = hashlib.blake2b(f"revrnn.synthetic/{split}/{int(seed)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def _check_task(task: str) -> str:
    if task not in SYNTHETIC_TASKS:
        raise DataError(f"unknown synthetic task {task!r}: choose one of {', '.join(SYNTHETIC_TASKS)}")
    return task


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def make_synthetic(
    task: str, vocab_size: int, seq_len: int, n_sequences: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n_sequences`` examples of ``task``. Returns ``(inputs, targets)``, both ``[n, T]`` ``torch.long``.

    ``seq_len`` is the number of random symbols ``K``. ``T`` is ``K`` for
    ``repeat`` and ``2K`` for ``remember`` (see the module docstring for the
    exact formats).
    """
    _check_task(task)
    _check_int("vocab_size", vocab_size, 1)
    _check_int("seq_len", seq_len, 1)
    _check_int("n_sequences", n_sequences, 0)
    _check_int("seed", seed, 0)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    symbols = torch.randint(0, vocab_size, (n_sequences, seq_len), generator=gen, dtype=torch.long)
    if task == "repeat":
        targets = torch.empty_like(symbols)
        targets[:, 0] = IGNORE_INDEX
        targets[:, 1:] = symbols[:, :-1]
        return symbols, targets
    blanks = torch.full_like(symbols, blank_id(vocab_size))
    ignored = torch.full_like(symbols, IGNORE_INDEX)
    return torch.cat([symbols, blanks], dim=1), torch.cat([ignored, symbols], dim=1)


@dataclass(frozen=True, eq=False)
class SyntheticSplits:
    """Train/valid/test ``(inputs, targets)`` pairs plus the token layout a model needs."""

    task: str
    vocab_size: int
    seq_len: int
    seed: int
    train: tuple[torch.Tensor, torch.Tensor]
    valid: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]

    @property
    def n_input_tokens(self) -> int:
        return num_input_tokens(self.vocab_size)

    @property
    def n_classes(self) -> int:
        """Number of output classes (targets are in ``0 .. vocab_size-1`` or ``IGNORE_INDEX``)."""
        return self.vocab_size

    @property
    def blank_id(self) -> int:
        return blank_id(self.vocab_size)

    @property
    def ignore_index(self) -> int:
        return IGNORE_INDEX


def make_synthetic_splits(
    task: str,
    vocab_size: int,
    seq_len: int,
    n_train: int,
    n_valid: int,
    n_test: int,
    seed: int,
) -> SyntheticSplits:
    """Three independent splits from one ``seed`` (each split uses :func:`split_seed`)."""
    _check_int("seed", seed, 0)
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    data = {
        split: make_synthetic(task, vocab_size, seq_len, n, split_seed(seed, split)) for split, n in sizes.items()
    }
    return SyntheticSplits(task=task, vocab_size=vocab_size, seq_len=seq_len, seed=seed, **data)
