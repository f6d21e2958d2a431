"""Ordinary GRU/LSTM stacks, the baselines the reversible models are compared with (reference
`language_modelling/train.py`).

They wrap ``nn.GRU`` / ``nn.LSTM`` (one module per layer, as AWD-LSTM does, because the top layer's
width differs) and add the same regularisation as the reversible stacks: locked dropout between
layers and DropConnect on the hidden-to-hidden weights (applied through ``functional_call`` with a
masked copy of ``weight_hh``, so the module's own parameters are never modified).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from .dropout import locked_mask


class BaselineRNN(nn.Module):
    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 top_size: int | None = None, dropout: float = 0.0, weight_drop: float = 0.0):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be lstm or gru, got {cell!r}")
        self.cell = cell
        top = top_size or hidden_size
        sizes = [hidden_size] * (num_layers - 1) + [top]
        ins = [input_size] + sizes[:-1]
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.layers = nn.ModuleList(rnn(i, h) for i, h in zip(ins, sizes))
        self.dropout, self.weight_drop = dropout, weight_drop

    def initial_state(self, batch: int, device=None):
        def zeros(layer):
            return torch.zeros(1, batch, layer.hidden_size, device=device)
        return [(zeros(m), zeros(m)) if self.cell == "lstm" else zeros(m) for m in self.layers]

    def forward(self, x: torch.Tensor, state=None):
        if state is None:
            state = self.initial_state(x.shape[1], x.device)
        new_state = []
        for l, layer in enumerate(self.layers):
            if l > 0:
                m = locked_mask(x.shape[1], x.shape[2], self.dropout, x, self.training)
                if m is not None:
                    x = x * m
            if self.training and self.weight_drop > 0:
                w = layer.weight_hh_l0
                keep = 1.0 - self.weight_drop
                dropped = w * torch.empty_like(w).bernoulli_(keep).div_(keep)
                x, s = functional_call(layer, {"weight_hh_l0": dropped}, (x, state[l]))
            else:
                x, s = layer(x, state[l])
            new_state.append(s)
        return x, new_state

    @staticmethod
    def detach_state(state):
        return [tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach() for s in state]
