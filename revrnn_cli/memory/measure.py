"""Measuring memory as the machine sees it, not only as the paper counts it.

Two measurements, because each answers a different question:

* :func:`saved_bytes` — the bytes of tensors actually kept between forward and backward, seen
  through ``torch.autograd.graph.saved_tensors_hooks`` (parameters excluded, shared storages
  counted once). What a reverse-mode function keeps as ``ctx`` attributes (the information buffers,
  the final state, dropout masks) is invisible to those hooks, so the engine reports it itself as
  ``kept_bytes`` and it is added here. This is the number that shows how activation memory grows
  with the sequence length.
* :func:`peak_step_bytes` — the peak memory of one training step as the device allocator or the
  operating system sees it: on CUDA ``max_memory_allocated`` after a reset; on CPU the peak
  resident set of a *fresh subprocess* that builds the model and data and runs one step, minus that
  of one that only builds them (a process's peak RSS cannot be reset, and allocator caching makes
  in-process CPU numbers meaningless). Reading nvidia-smi or the current RSS instead is the usual
  reason users of memory-saving libraries report "it doesn't save memory".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable

import torch
from torch.autograd.graph import saved_tensors_hooks


def saved_bytes(run: Callable[[], object], exclude: list[torch.Tensor],
                also: Callable[[object], list[torch.Tensor]] | None = None) -> tuple[int, object]:
    """Run ``run()`` (a forward pass) and return the bytes autograd saved for backward, and its result.

    Storages of ``exclude`` (the parameters) are not counted: they exist whatever the mode.
    ``also(result)`` names tensors kept alive for backward outside the hooks' view (checkpoint
    inputs); they are counted too, each storage once.
    """
    skip = {p.untyped_storage().data_ptr() for p in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and ptr != 0:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        result = run()
    if also is not None:
        for t in also(result):
            pack(t)
    return sum(seen.values()), result


def peak_step_bytes(probe_args: dict, device: torch.device, timeout: float = 3600) -> dict:
    """Peak memory of one training step: CUDA allocator peak, or the CPU subprocess RSS difference."""
    if device.type == "cuda":
        return _run_probe({**probe_args, "device": str(device), "step": True}, timeout)
    with_step = _run_probe({**probe_args, "device": "cpu", "step": True}, timeout)
    build_only = _run_probe({**probe_args, "device": "cpu", "step": False}, timeout)
    if "error" in with_step or "error" in build_only:
        return {"error": with_step.get("error") or build_only.get("error")}
    return {"peak_step_bytes": max(0, with_step["peak_rss_bytes"] - build_only["peak_rss_bytes"]),
            "peak_rss_bytes": with_step["peak_rss_bytes"], "build_rss_bytes": build_only["peak_rss_bytes"]}


def _run_probe(args: dict, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "revrnn_cli.memory.probe", json.dumps(args)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"probe timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
        return {"error": f"probe exited {proc.returncode}: {last}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


__all__ = ["peak_step_bytes", "saved_bytes"]
