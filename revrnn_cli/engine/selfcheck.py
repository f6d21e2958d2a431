"""Does the fused path follow the reference path bit for bit on a device? (run once per GPU)

    python -c "from revrnn_cli.engine.selfcheck import check_device; print(check_device('cuda'))"

The fused operators call the same matmul and activation kernels as the eager cells and do the
integer arithmetic identically, so on one device both paths must produce the same losses, states,
buffer contents and gradients, bit for bit. The CPU operators are tested in the suite; the CUDA
ones can only be tested where a GPU is, so :mod:`.native` runs this check the first time a GPU is
used and keeps that GPU on the reference path if anything differs. It is small (a 2-layer RevLSTM
and RevGRU, 37 steps, locked dropout and DropConnect, both backprop modes): well under a second.
"""

from __future__ import annotations

import torch

from . import native
from .layers import RevGRU, RevLSTM, ReversibleRNN


def _run(model: ReversibleRNN, x: torch.Tensor, path: str, mode: str) -> tuple:
    with native.kernels(path):
        model.backprop = mode
        model.zero_grad(set_to_none=True)
        xr = x.detach().clone().requires_grad_()
        torch.manual_seed(1)  # the same dropout masks in both runs
        y, state = model(xr)
        loss = y.pow(2).sum() + sum(f.pow(2).sum() for f in state.floats)
        loss.backward()
    grads = [p.grad for p in model.parameters()] + [xr.grad]
    return loss.detach(), y.detach(), state.ints, grads


def check_device(device) -> tuple[bool, str]:
    """(True, "") when both paths agree bit for bit on ``device``, else (False, what differed)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for cls in (RevLSTM, RevGRU):
            torch.manual_seed(0)
            model = cls(6, 12, 2, dropout=0.2, weight_drop=0.2, max_forget_bits=3).to(device)
            x = torch.randn(37, 3, 6, device=device)
            ref = _run(model, x, "reference", "reverse")
            for mode in ("reverse", "store"):  # the fused store mode uses the same local backward
                try:
                    got = _run(model, x, "native", mode)
                except Exception as e:  # a kernel that fails to launch or reverse is a failed check
                    return False, f"{cls.__name__} {mode}: {type(e).__name__}: {e}"
                for name, a, b in zip(("loss", "outputs", "states", "gradients"), ref, got):
                    pairs = zip(a, b) if isinstance(a, list) else [(a, b)]
                    if not all(u is None and v is None or torch.equal(u, v) for u, v in pairs):
                        return False, f"{cls.__name__} {mode}: the {name} differ"
    return True, ""


native.set_device_check(check_device)

__all__ = ["check_device"]
