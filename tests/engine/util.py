"""Helpers shared by the engine tests: building plans, recording and checking every state."""

from __future__ import annotations

import torch

from revrnn_cli.engine.fixed_point import STATE_DTYPE

from revrnn_cli.engine import native
from revrnn_cli.engine.reversible import Plan, effective_weights, forward_steps, make_buffers, reverse_steps


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / max(||b||, tiny) in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def scale_params(model, factor: float) -> None:
    """Multiply every parameter (saturates gates: pushes Z towards its extremes, 2^(10-k) and 1024)."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)


def build_plan(model, batch: int, masks=None, weight_masks=None, chunk: int | None = None) -> Plan:
    """A Plan for ``model``'s cells with the given (already sampled) masks; weights detached. It runs
    on the path the current setting selects (:func:`revrnn_cli.engine.native.kernels`)."""
    cells = list(model.cells)
    flat = [w.detach() for c in cells for w in c.weights()]
    return Plan(cells, effective_weights(cells, flat, weight_masks), masks or [None] * len(cells),
                make_buffers(cells, batch, "cpu"), chunk or model.chunk, native=native.enabled("cpu"))


def random_int_state(model, batch: int, gen: torch.Generator, scale: float = 0.5) -> list[list[torch.Tensor]]:
    """A random (nonzero) initial integer state per layer, values in about ±scale."""
    out = []
    for c in model.cells:
        lim = int(scale * (1 << 23))
        out.append([torch.randint(-lim, lim + 1, (batch, c.half), generator=gen, dtype=STATE_DTYPE)
                    for _ in range(c.n_blocks)])
    return out


@torch.no_grad()
def forward_record(plan: Plan, h0: list, steps: int, x: torch.Tensor):
    """Run forward from h0 (copied), recording every layer's state after every step and the top outputs.

    Returns (final state, history) with ``history[l][t]`` = layer l's state [B, blocks*H/2] after step t.
    """
    hist = [[None] * steps for _ in plan.cells]
    ys = []

    def on_state(l, t, blocks):
        hist[l][t] = torch.cat(blocks, 1).clone()

    state = [list(b) for b in h0]
    forward_steps(plan, state, steps, lambda a, b: x[a:b], on_output=lambda a, b, Y: ys.append(Y.clone()),
                  on_state=on_state)
    return state, hist, torch.cat(ys)


@torch.no_grad()
def reverse_check(plan: Plan, final: list, h0: list, hist: list, steps: int, x: torch.Tensor) -> dict:
    """Reverse from ``final`` and compare every recovered state bit-exactly with the recorded one.

    Returns counts: ``checked`` states, ``mismatched`` states (must be 0), and the recovered state.
    """
    init = [torch.cat(b, 1) for b in h0]
    counts = {"checked": 0, "mismatched": 0, "first_bad": None}

    def on_state(l, t, blocks):
        want = hist[l][t - 1] if t > 0 else init[l]
        counts["checked"] += 1
        if not torch.equal(torch.cat(blocks, 1), want):
            counts["mismatched"] += 1
            if counts["first_bad"] is None:
                counts["first_bad"] = (l, t)

    state = [list(b) for b in final]
    reverse_steps(plan, state, steps, lambda a, b: x[a:b], on_state=on_state)
    counts["recovered"] = state
    return counts
