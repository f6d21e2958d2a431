"""The reversal check behind ``revrnn verify-reversal``.

    revrnn verify-reversal                                   # default small RevGRU and RevLSTM
    revrnn verify-reversal --cell revlstm --steps 10000 --json
    revrnn verify-reversal experiments/verify_long.yaml

For one configuration it runs T steps forward (training mode, so dropout and DropConnect masks are
in play) recording every intermediate integer state, reverses back to the start, and reports
whether every state was recovered bit-for-bit and every buffer emptied, the largest state error,
the paper's memory accounting (normal / used / optimal bits, reference `language_modelling/train.py`), and how far
the gradients
of ``reverse`` mode are from those of ``store`` mode on the same model and data.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .engine import RevGRU, RevLSTM, deterministic_settings, native
from .engine.fixed_point import HIDDEN_UNIT, STATE_DTYPE, FixedPointError, parse_forget_bits
from .engine.reversible import Plan, bit_stats, effective_weights, forward_steps, make_buffers, reverse_steps

GRAD_RTOL = 1e-4
"""Largest relative gradient difference (per parameter tensor, in norm) accepted between modes.

Both modes compute the same real-valued gradient at the same quantised activations; they differ
only in the order of float32 additions, which leaves differences near 1e-7 per step."""

MAX_RECORD_BYTES = 1 << 30
STATE_BYTES = torch.empty(0, dtype=STATE_DTYPE).element_size()


class VerifyConfig(BaseModel):
    """One configuration to check (also the schema of a verify spec file)."""

    model_config = ConfigDict(extra="forbid")

    cell: Literal["revgru", "revlstm"] = "revlstm"
    layers: int = Field(2, ge=1, le=8)
    hidden: int = Field(32, ge=2)
    top_size: int | None = Field(None, ge=2)
    input_size: int = Field(16, ge=1)
    batch: int = Field(4, ge=1)
    steps: int = Field(1000, ge=1)
    max_forget_bits: int | None = 3
    forget: bool = True
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    weight_drop: float = Field(0.2, ge=0.0, lt=1.0)
    chunk: int = Field(16, ge=1)
    seed: int = 0
    device: str = "cpu"  # cpu or cuda[:N]
    check_gradients: bool = True
    gate_bias: float = 0.0  # added to every gate's bias: 20 saturates them (forget gates at exactly 1)

    @field_validator("hidden", "top_size")
    @classmethod
    def _even(cls, v):
        if v is not None and v % 2:
            raise ValueError(f"must be even (the state is split into two halves), got {v}")
        return v

    @field_validator("max_forget_bits", mode="before")
    @classmethod
    def _bits(cls, v):
        return parse_forget_bits(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if v != "cpu" and not v.startswith("cuda"):
            raise ValueError(f"must be cpu or cuda[:N], got {v!r}")
        return v

    def describe(self) -> str:
        bits = "none" if self.max_forget_bits is None else self.max_forget_bits
        kind = self.cell if self.forget else f"nf-{self.cell}"
        sat = f" gate_bias={self.gate_bias:g}" if self.gate_bias else ""
        return f"{kind} {self.layers}x{self.hidden} in={self.input_size} B={self.batch} T={self.steps} bits={bits}{sat}"


def build_model(cfg: VerifyConfig):
    """The stack to check. ``gate_bias`` shifts every gate's bias: a large value saturates the gates,
    so the forget gates quantise to exactly 1 and (RevLSTM) c and h grow by about 1 per step, the
    worst case for the fixed-point range."""
    cls = RevGRU if cfg.cell == "revgru" else RevLSTM
    model = cls(cfg.input_size, cfg.hidden, cfg.layers, top_size=cfg.top_size, max_forget_bits=cfg.max_forget_bits,
                forget=cfg.forget, dropout=cfg.dropout, weight_drop=cfg.weight_drop, chunk=cfg.chunk)
    if cfg.gate_bias:
        with torch.no_grad():
            for cell in model.cells:
                cell.bx.add_(cfg.gate_bias)
    return model


def verify(cfg: VerifyConfig) -> dict:
    """Run the check for one configuration; returns a JSON-serialisable report."""
    deterministic_settings()
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).train().to(device)
    x = torch.randn(cfg.steps, cfg.batch, cfg.input_size).to(device)
    blocks = 4 if cfg.cell == "revlstm" else 2
    record_bytes = cfg.steps * cfg.batch * sum(c.hidden_size for c in model.cells) * blocks // 2 * STATE_BYTES
    if record_bytes > MAX_RECORD_BYTES:
        raise ValueError(f"recording every state would take {record_bytes / 2**30:.1f} GiB; "
                         "reduce --steps, --batch or --hidden")
    report = {"config": cfg.model_dump(), "description": cfg.describe(), "kernels": native.describe(device)}
    try:
        report.update(_check_exactness(model, x))
        if cfg.check_gradients:
            report.update(_check_gradients(model, x))
    except FixedPointError as e:
        report.update(exact=False, error=str(e))
    report["ok"] = bool(report.get("exact")) and (not cfg.check_gradients or bool(report.get("gradients_agree")))
    return report


def _check_exactness(model, x) -> dict:
    T, B = x.shape[0], x.shape[1]
    torch.manual_seed(1)
    masks, wmasks = model.sample_masks(B, x.device)
    with torch.no_grad():
        flat = [w.detach() for c in model.cells for w in c.weights()]
        plan = Plan(list(model.cells), effective_weights(model.cells, flat, wmasks), masks,
                    make_buffers(model.cells, B, x.device), model.chunk, "verify-reversal",
                    native=native.enabled(x.device))
        h0 = [c.init_state(B, x.device) for c in model.cells]
        recorded = [[None] * T for _ in model.cells]

        def record(l, t, blocks):
            recorded[l][t] = torch.cat(blocks, 1)

        state = [list(b) for b in h0]
        t0 = time.perf_counter()
        forward_steps(plan, state, T, lambda a, b: x[a:b], on_state=record)
        t_fwd = time.perf_counter() - t0
        max_state = plan.check_range()
        stats = bit_stats(plan, T, B)
        plan.seal()

        worst = {"max_error": 0, "mismatched_states": 0, "first_mismatch": None}

        def compare(l, t, blocks):
            # before step t the state is the one recorded after step t-1 (or h0)
            want = torch.cat(h0[l], 1) if t == 0 else recorded[l][t - 1]
            got = torch.cat(blocks, 1)
            if not torch.equal(got, want):
                err = int((got.to(torch.int64) - want.to(torch.int64)).abs().max())
                worst["max_error"] = max(worst["max_error"], err)
                worst["mismatched_states"] += 1
                if worst["first_mismatch"] is None:
                    worst["first_mismatch"] = {"layer": l, "step": t}

        t0 = time.perf_counter()
        plan.unseal()
        reverse_steps(plan, state, T, lambda a, b: x[a:b], on_state=compare)
        t_rev = time.perf_counter() - t0
        empty = all(b.is_empty() for b in plan.buffers if b is not None)
    normal, used, optimal = stats["normal_bits"], stats["used_bits"], stats["optimal_bits"]
    checked = T * len(model.cells)
    return {
        "exact": worst["mismatched_states"] == 0 and empty,
        "states_checked": checked,
        "states_mismatched": worst["mismatched_states"],
        "first_mismatch": worst["first_mismatch"],
        "max_state_error": worst["max_error"] * HIDDEN_UNIT,
        "max_state": max_state,
        "saturated_gates": stats["saturated_gates"] / stats["gates"] if stats["gates"] else None,
        "buffers_empty": empty,
        "normal_bits": normal,
        "used_bits": used,
        "optimal_bits": optimal,
        "ratio_used": normal / used if used else None,
        "ratio_optimal": normal / optimal if optimal else None,
        "used_over_optimal": used / optimal if optimal else None,
        "forward_seconds": t_fwd,
        "reverse_seconds": t_rev,
    }


def _check_gradients(model, x) -> dict:
    """Same model, data and dropout masks in both modes; loss on every output and the final state."""
    gen = torch.Generator().manual_seed(2)
    proj = torch.randn(model.top_size, generator=gen).to(x.device)
    grads, losses, seconds = {}, {}, {}
    for mode in ("reverse", "store"):
        model.backprop = mode
        model.zero_grad(set_to_none=True)
        xr = x.clone().requires_grad_(True)
        torch.manual_seed(1)
        t0 = time.perf_counter()
        # store mode through the eager cells' autograd: an independent derivation of the gradients
        # (the fused store mode shares reversal's local backward, so it would only compare it with itself)
        with native.kernels("reference") if mode == "store" else contextlib.nullcontext():
            y, state = model(xr)
            loss = (y @ proj).sum() / x.shape[0] + sum(f.square().mean() for f in state.floats)
            loss.backward()
        loss = loss.detach()
        seconds[mode] = time.perf_counter() - t0
        losses[mode] = float(loss)
        grads[mode] = [p.grad.clone() for p in model.parameters()] + [xr.grad.clone()]
    model.backprop = "reverse"
    worst = 0.0
    for gr, gs in zip(grads["reverse"], grads["store"]):
        denom = float(gs.norm())
        if denom > 0:
            worst = max(worst, float((gr - gs).norm()) / denom)
    # the reference's approximate recomputation is off by up to 0.1 degree here (reference
    # `language_modelling/rev_training/model.py`)
    vr = torch.cat([g.reshape(-1).double() for g in grads["reverse"]])
    vs = torch.cat([g.reshape(-1).double() for g in grads["store"]])
    cos = float(torch.dot(vr, vs) / (vr.norm() * vs.norm()))
    angle = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    return {
        "loss_reverse": losses["reverse"],
        "loss_store": losses["store"],
        "losses_equal": losses["reverse"] == losses["store"],
        "max_relative_grad_diff": worst,
        "grad_angle_degrees": angle,
        "gradients_agree": worst <= GRAD_RTOL and losses["reverse"] == losses["store"],
        "train_seconds_reverse": seconds["reverse"],
        "train_seconds_store": seconds["store"],
    }


DEFAULT_CHECKS = [VerifyConfig(cell="revgru"), VerifyConfig(cell="revlstm")]

__all__ = ["DEFAULT_CHECKS", "GRAD_RTOL", "VerifyConfig", "build_model", "verify"]
