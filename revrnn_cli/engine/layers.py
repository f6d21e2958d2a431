"""Drop-in `nn.Module` layers: stacked RevGRU / RevLSTM (and their no-forgetting variants).

    from revrnn_cli.engine import RevLSTM
    rnn = RevLSTM(input_size=128, hidden_size=256, num_layers=2, max_forget_bits=3)
    y, state = rnn(x)              # x: [T, B, 128] float -> y: [T, B, 256]
    y.pow(2).mean().backward()     # reverse mode: hidden states recomputed exactly, not stored
    rnn.last_stats                 # {'normal_bits', 'used_bits', 'optimal_bits', 'steps'}

``backprop="reverse"`` (default) trains without storing hidden states; ``"store"`` runs ordinary
autograd through the same fixed-point cells (same loss, same gradients up to float rounding).
Without autograd (``torch.no_grad()`` or eval) both run the same exact forward.

What the reverse mode keeps for backward: the final int32 state, the sealed information buffers,
the per-sequence dropout masks, and a reference to the input ``x`` (recomputation needs it; a model
that can rebuild its inputs, such as a language model from token ids, can drive
:mod:`~revrnn_cli.engine.reversible` directly and keep nothing per step at all). The output ``y`` is
returned to the caller and is not kept by the layer.

On CUDA, recomputation must be bit-identical to the forward pass: call
:func:`revrnn_cli.engine.deterministic_settings` once (TF32 off, deterministic cuBLAS), and do not
run the layer under autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .cells import CELLS, parse_cell_update
from .segment import DEFAULT_BACKPROP, Segment, SegmentOutput, choose_mode, resolve_backprop, run_segment


@dataclass
class RevState:
    """The exact recurrent state of a stack: per layer an int32 tensor [B, blocks * hidden/2].

    ``floats`` are float views of the same values that carry gradients between calls (for example
    from an encoder's final state into a decoder); None when no gradient is needed.
    """

    ints: list[torch.Tensor]
    floats: list[torch.Tensor] | None = None

    def detach(self) -> "RevState":
        """Cut the gradient history (truncated BPTT), keeping the exact values."""
        return RevState([h.detach() for h in self.ints], None)


class ReversibleRNN(nn.Module):
    """A stack of reversible recurrent layers.

    Args:
        cell: ``"revgru"`` or ``"revlstm"``.
        input_size, hidden_size, num_layers: as in ``nn.LSTM``.
        top_size: width of the last layer if different from ``hidden_size`` (AWD-LSTM style).
        max_forget_bits: 1, 2, 3, 5 or None (no limit): at most this many bits forgotten per unit
            per step (the reference's `--max_forget`).
        forget: False builds the no-forgetting variant (NF-RevGRU / NF-RevLSTM), which needs no buffer.
        dropout: locked (variational) dropout on the input of every layer but the first.
        weight_drop: DropConnect on the recurrent rows of every weight matrix.
        cell_update: the RevLSTM's update rule, ``"paper"`` (h <- p h + o tanh(c), c <- f c + i g)
            or ``"bounded"`` (convex: h <- p h + (1 - p) o tanh(c), c <- f c + (1 - f) i g, states
            bounded by about 1); see :class:`~revrnn_cli.engine.cells.RevLSTMCell`. The RevGRU's
            update is convex already and has only ``"paper"``.
        backprop: ``"reverse"`` or ``"store"``.
        chunk: steps whose input projections (and weight gradients) are batched into one matmul;
            the reverse pass holds one chunk of activations at a time. Longer chunks stream the
            weights through the cache fewer times: 32 trains a 2-layer, 650-unit stack about 2%
            faster than 16 (``make bench``) but raises the step's peak by 54 MiB at T = 70, a
            constant of chunk, batch and width (docs/results.md, section 3); 16 keeps the memory.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 top_size: int | None = None, max_forget_bits: int | None = 3, forget: bool = True,
                 dropout: float = 0.0, weight_drop: float = 0.0, backprop: str | None = DEFAULT_BACKPROP,
                 chunk: int = 16, cell_update: str = "paper"):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
        for name, p in (("dropout", dropout), ("weight_drop", weight_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.cell_type, self.input_size, self.hidden_size = cell, input_size, hidden_size
        self.num_layers, self.max_forget_bits, self.forget = num_layers, max_forget_bits, forget
        self.top_size = top_size or hidden_size
        self.dropout, self.weight_drop, self.chunk = dropout, weight_drop, chunk
        self.backprop = backprop
        sizes = [hidden_size] * (num_layers - 1) + [self.top_size]
        ins = [input_size] + sizes[:-1]
        parse_cell_update(cell_update, cell, forget)
        extra = {"cell_update": cell_update} if cell == "revlstm" else {}
        self.cells = nn.ModuleList(CELLS[cell](i, h, max_forget_bits, forget, **extra) for i, h in zip(ins, sizes))
        self.cell_update = cell_update
        self.max_forget_bits = self.cells[0].max_forget_bits if forget else max_forget_bits  # as validated
        self.last_stats: dict = {}

    @property
    def backprop(self) -> str:
        return self._backprop

    @backprop.setter
    def backprop(self, mode: str | None) -> None:
        self._backprop = resolve_backprop(mode)

    def extra_repr(self) -> str:
        bits = self.max_forget_bits if self.forget else "no forgetting"
        upd = f", cell_update={self.cell_update}" if self.cell_update != "paper" else ""
        return f"{self.cell_type}, layers={self.num_layers}, max_forget_bits={bits}{upd}, backprop={self.backprop}"

    # ---- state ----------------------------------------------------------------------------------
    def initial_state(self, batch: int, device=None) -> RevState:
        return RevState([torch.cat(c.init_state(batch, device), 1) for c in self.cells])

    def _blocks(self, state: RevState) -> list[list[torch.Tensor]]:
        return [list(h.split(c.half, 1)) for h, c in zip(state.ints, self.cells)]

    def weights(self) -> list[torch.Tensor]:
        """Every layer's weights, flat, in the order the engine takes them."""
        return [w for c in self.cells for w in c.weights()]

    # ---- per-sequence randomness, drawn once so that every pass sees the same values ----
    def sample_masks(self, batch: int, device, dtype=torch.float32) -> tuple[list, list | None]:
        masks = [None] * len(self.cells)
        if self.training and self.dropout > 0:
            keep = 1.0 - self.dropout
            for l in range(1, len(self.cells)):
                n = self.cells[l].input_size
                masks[l] = torch.empty(batch, n, device=device, dtype=dtype).bernoulli_(keep).div_(keep)
        wmasks = None
        if self.training and self.weight_drop > 0:
            keep = 1.0 - self.weight_drop
            wmasks = []
            for cell in self.cells:  # [wx, bx, *recurrent]: only the recurrent matrices are dropped
                for i, w in enumerate(cell.weights()):
                    wmasks.append(torch.empty_like(w).bernoulli_(keep).div_(keep) if i >= 2 else None)
        return masks, wmasks

    # ---- one pass -------------------------------------------------------------------------------
    def run(self, segment: Segment, steps: int, batch: int, state: RevState | None = None, device=None,
            masks: tuple[list, list | None] | None = None, active: torch.Tensor | None = None) -> SegmentOutput:
        """One pass of ``segment`` over ``steps`` steps from ``state`` (zeros if None), trained the way
        :attr:`backprop` says when a gradient can flow. ``masks`` are (locked, DropConnect) masks
        drawn by the caller, or drawn here; ``active`` [T, B] marks the real steps of padded batches."""
        if state is None:
            state = self.initial_state(batch, device)
        if masks is None:
            masks = self.sample_masks(batch, state.ints[0].device)
        flat = self.weights()
        mode = choose_mode(self.backprop, [*flat, *segment.tensors(), *(state.floats or [])])
        out = run_segment(segment, self.cells, self._blocks(state), state.floats, flat, masks=masks[0],
                          weight_masks=masks[1], chunk=self.chunk, steps=steps, batch=batch, mode=mode,
                          active=active)
        self.last_stats = dict(out.stats)
        return out

    def forward(self, x: torch.Tensor, state: RevState | None = None) -> tuple[torch.Tensor, RevState]:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"expected input [T, B, {self.input_size}], got {list(x.shape)}")
        out = self.run(_Sequence(x, self._name()), x.shape[0], x.shape[1], state, x.device)
        return out.out, RevState([torch.cat(b, 1) for b in out.hT], out.hT_floats)

    def _name(self) -> str:
        return f"{self.cell_type} stack"


class _Sequence(Segment):
    """The layer API's segment: inputs from a tensor ``x``, the top outputs returned as ``y``.
    Reverse mode keeps ``x`` (autograd saves it) to rebuild the inputs."""

    output = "sequence"

    def __init__(self, x: torch.Tensor, name: str):
        self.x, self.name = x, name

    def tensors(self) -> list[torch.Tensor]:
        return [self.x]

    def inputs(self, a, b, t):
        return t[0][a:b]

    def input_grad(self, a, b, dX, t, grads):
        if grads[0] is None:
            grads[0] = torch.zeros_like(t[0])
        grads[0][a:b] = dX


class RevGRU(ReversibleRNN):
    """Stacked reversible GRU (reference `revgru.py`). ``RevGRU(..., forget=False)`` is the NF-RevGRU."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kw):
        super().__init__("revgru", input_size, hidden_size, num_layers, **kw)


class RevLSTM(ReversibleRNN):
    """Stacked reversible LSTM (reference `revlstm.py`). ``RevLSTM(..., forget=False)`` is the NF-RevLSTM."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kw):
        super().__init__("revlstm", input_size, hidden_size, num_layers, **kw)


__all__ = ["RevGRU", "RevLSTM", "RevState", "ReversibleRNN"]
