"""Building blocks of the training loop shared by the language-model and translation runners.

Each module solves one problem of long runs that get interrupted:

* :mod:`.checkpoint` - atomic, safely-loaded checkpoints; refusing to resume with another spec;
  saving and restoring every RNG so a resumed run continues the same random sequence.
* :mod:`.signals` - Ctrl-C / SIGTERM finish the current step and save instead of losing work.
* :mod:`.metrics` - crash-proof JSON-lines metrics, optionally mirrored to stdout for ``--json``.
* :mod:`.rundir` - a fresh directory per run with the config and environment that produced it;
  never overwritten unless asked, and removed again when a run fails before its first step.
* :mod:`.lock` - one training process per run directory, a lock that dies with its process.
* :mod:`.progress` - a cheap progress bar shown only on terminals.
* :mod:`.distributed` - multi-process training (DistributedDataParallel) under torchrun; the
  contract a task follows to take part in it.
"""

from __future__ import annotations

from .checkpoint import (atomic_write, check_compatible, config_hash, load_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .metrics import MetricsLogger, read_metrics
from .progress import Progress, format_fields
from .rundir import environment_record, make_run_dir, write_config, write_environment
from .signals import GracefulStop

__all__ = [
    "atomic_write", "save_checkpoint", "load_checkpoint", "config_hash", "check_compatible",
    "rng_state", "set_rng_state",
    "GracefulStop",
    "MetricsLogger", "read_metrics",
    "make_run_dir", "write_config", "environment_record", "write_environment",
    "Progress", "format_fields",
]
