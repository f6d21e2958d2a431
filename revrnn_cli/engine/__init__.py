"""The reversible machinery, usable as a library without the CLI.

    from revrnn_cli.engine import RevGRU, RevLSTM, deterministic_settings

Layers (:mod:`.layers`) are built from cells (:mod:`.cells`), whose state updates use fixed-point
arithmetic (:mod:`.fixed_point`) and an information buffer (:mod:`.buffer`); :mod:`.reversible`
holds the step loops, :mod:`.segment` the one autograd primitive and the choice of backprop mode,
and :mod:`.native` the fused operators that run a chunk of steps in one call.
"""

from __future__ import annotations

import torch

from .buffer import InformationBuffer
from .cells import RevGRUCell, RevLSTMCell
from .fixed_point import (
    ALLOWED_FORGET_BITS,
    FixedPointError,
    NonFiniteError,
    ReversalError,
    StateOverflowError,
)
from .layers import RevGRU, RevLSTM, RevState, ReversibleRNN
from .segment import BACKPROP_MODES, DEFAULT_BACKPROP, Segment, SegmentOutput
from . import selfcheck  # noqa: F401  (registers the per-GPU check of the fused operators)


def deterministic_settings() -> None:
    """Settings under which recomputation is bit-identical to the forward pass on every device.

    TF32 would make a CUDA matmul round differently from run to run of the same shapes, and
    non-deterministic cuBLAS reductions likewise; one unit of difference in a gate corrupts every
    earlier state. CPU kernels are deterministic for fixed shapes and thread counts.

    Deterministic mode also fills every ``torch.empty`` with NaN by default, a guard against reading
    memory nobody wrote; it cost 4% of a reverse-mode training step (``make bench``: the operators
    allocate their outputs empty and write every element). Training and benchmarks turn it off; the
    test suite keeps it on (``REVRNN_FILL_UNINITIALIZED=1``), so a read of unwritten memory there
    still turns into NaN and fails an exactness test.
    """
    import os

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = os.environ.get("REVRNN_FILL_UNINITIALIZED") == "1"


__all__ = [
    "ALLOWED_FORGET_BITS",
    "BACKPROP_MODES",
    "DEFAULT_BACKPROP",
    "FixedPointError",
    "InformationBuffer",
    "NonFiniteError",
    "RevGRU",
    "RevGRUCell",
    "RevLSTM",
    "RevLSTMCell",
    "RevState",
    "ReversalError",
    "ReversibleRNN",
    "Segment",
    "SegmentOutput",
    "StateOverflowError",
    "deterministic_settings",
]
