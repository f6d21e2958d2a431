"""A trained run, loaded for use after training: its spec, checkpoint and device, checked for its task.

    revrnn generate runs/quickstart --words 20
    revrnn translate runs/multi30k_revgru_small --input sentences.en

``generate`` and ``translate`` start the same way ``evaluate`` does (the merged spec saved in the
checkpoint, the device it names, deterministic kernels), but each serves one kind of run. The task
is checked before any data or weights are touched, so pointing a command at the wrong kind of run
costs one line and exit 2, not a corpus load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine import deterministic_settings
from ..errors import UserError
from ..runner import pick_device, resolve_checkpoint
from ..spec import ExperimentSpec, load_spec
from ..training.checkpoint import load_checkpoint

# what each command is for, and where to send a user who picked the wrong run
_SERVES = {"generate": ("lm", "a language-model run", "translate"),
           "translate": ("translation", "a translation run", "generate")}


@dataclass
class Restored:
    spec: ExperimentSpec
    checkpoint: Path
    payload: dict
    device: torch.device

    def load_weights(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` with the checkpoint's weights, in eval mode (no dropout: the evaluation forward)."""
        model.load_state_dict(self.payload["model"])
        return model.to(self.device).eval()


def restore(target: Path, command: str, *, data_dir: str | None = None, which: str = "best") -> Restored:
    """The run at ``target`` (a run directory: its ``best.pt``, else ``last.pt``; or a checkpoint file)
    for ``command``; a run of the other task is a :class:`UserError` (exit 2)."""
    ckpt = resolve_checkpoint(target, prefer=which)
    payload = load_checkpoint(ckpt)
    if not isinstance(payload.get("config"), dict) or "model" not in payload:
        raise UserError(f"{ckpt}: not a revrnn checkpoint (no config or model weights)")
    task = payload["config"].get("task", "lm")
    wanted, kind, other = _SERVES[command]
    if task != wanted:
        raise UserError(f"{command}: {target} is a {task} run, not {kind}; use revrnn {other}")
    overrides = [f"data.data_dir={data_dir}"] if data_dir else []
    spec, _ = load_spec(None, overrides, base=payload["config"])
    device = pick_device(spec.device)
    deterministic_settings()
    return Restored(spec, ckpt, payload, device)


__all__ = ["Restored", "restore"]
