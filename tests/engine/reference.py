"""A float64 reference of the reversible GRU / LSTM equations, *without* any quantisation.

Written from the paper's equations and the reference's `revgru.py` / `revlstm.py`, not from the engine: it only
reads the cells'
parameters in their documented layout and never calls engine code. Everything is differentiable,
so ``torch.autograd`` gives the exact gradient of the real-valued recurrence.

Layout (cells' docstrings):

* RevGRU: ``wx`` [in, 3H], ``bx`` [3H]; half j uses columns [(j-1)*3H/2, j*3H/2) ordered
  [z_j (H/2) | r_j (H/2) | g_j (H/2)]; ``wh_j`` [H/2, H] maps the other half to [z_j | r_j];
  ``vh_j`` [H/2, H/2] maps r_j * h_other to g_j.
* RevLSTM: ``wx`` [in, 2*G*H/2] with G = 5 ([f, p, i, o, g]) or G = 3 for the no-forgetting cell
  ([i, o, g]); half j uses the column block [(j-1)*G*H/2, j*G*H/2); ``wh_j`` [H/2, G*H/2].
* Forget gates (GRU z, LSTM f and p) are squashed: z = m*sigmoid(a) + 1 - m, m = 1 - 2^-k
  (m = 1 without a limit). No-forgetting cells use a multiplier of exactly 1.
* h1 is updated from the *old* h2, then h2 from the *new* h1; the LSTM's h uses tanh of the *new* c.
* RevLSTM update rule (``cell_update``): ``paper`` c = f c + i g, h = p h + o tanh(c); ``bounded``
  c = f c + (1 - f) i g, h = p h + (1 - p) o tanh(c).
* State layout per layer: [h1, h2] (GRU) or [h1, h2, c1, c2] (LSTM), each block H/2 wide.
"""

from __future__ import annotations

import torch


def squash_m(max_forget_bits) -> float:
    """m = 1 - 2^-k (the reference's `--max_forget`); 1 for "no limit"."""
    return 1.0 if max_forget_bits is None else 1.0 - 2.0 ** (-max_forget_bits)


class RefLayer:
    """Float64 parameters of one cell, with the settings needed to run its equations."""

    def __init__(self, kind: str, params: dict, hidden: int, m: float, forget: bool):
        self.kind, self.p, self.hidden, self.half = kind, params, hidden, hidden // 2
        self.m, self.forget = m, forget
        self.n_blocks = 2 if kind == "gru" else 4
        self.bounded = False

    @classmethod
    def from_cell(cls, cell, weight_masks: dict | None = None, requires_grad: bool = False) -> "RefLayer":
        """Copy a RevGRUCell / RevLSTMCell's parameters to float64 leaves (optionally DropConnect-masked
        copies: ``weight_masks`` maps a parameter name to its mask)."""
        kind = "gru" if hasattr(cell, "vh1") else "lstm"
        params = {}
        for name, p in cell.named_parameters(recurse=False):
            params[name] = p.detach().to(torch.float64).clone().requires_grad_(requires_grad)
        ref = cls(kind, params, cell.hidden_size, squash_m(cell.max_forget_bits) if cell.forget else 0.0,
                  cell.forget)
        ref.weight_masks = {k: v.to(torch.float64) for k, v in (weight_masks or {}).items()}
        ref.bounded = getattr(cell, "cell_update", "paper") == "bounded"
        return ref

    def w(self, name: str) -> torch.Tensor:
        """Effective weight (after DropConnect, if a mask was given)."""
        p = self.p[name]
        m = getattr(self, "weight_masks", {}).get(name)
        return p if m is None else p * m

    def leaves(self) -> list[torch.Tensor]:
        return list(self.p.values())

    # ---- one half-update ------------------------------------------------------------------------
    def _squash(self, a):
        s = torch.sigmoid(a)
        return self.m * s + (1.0 - self.m)

    def gru_half(self, j: int, x, h_other, h_a):
        H2 = self.half
        off = (j - 1) * 3 * H2
        wx, bx = self.w("wx")[:, off : off + 3 * H2], self.w("bx")[off : off + 3 * H2]
        zr = torch.sigmoid(x @ wx[:, : 2 * H2] + bx[: 2 * H2] + h_other @ self.w(f"wh{j}"))
        r = zr[:, H2:]
        g = torch.tanh(x @ wx[:, 2 * H2 :] + bx[2 * H2 :] + (r * h_other) @ self.w(f"vh{j}"))
        if self.forget:
            z = self.m * zr[:, :H2] + (1.0 - self.m)
            return z * h_a + (1.0 - z) * g
        z = zr[:, :H2]
        return h_a + (1.0 - z) * g

    def lstm_half(self, j: int, x, h_other, h_a, c_a):
        H2 = self.half
        G = 5 if self.forget else 3
        off = (j - 1) * G * H2
        a = x @ self.w("wx")[:, off : off + G * H2] + self.w("bx")[off : off + G * H2] + h_other @ self.w(f"wh{j}")
        blk = [a[:, k * H2 : (k + 1) * H2] for k in range(G)]
        if self.forget:
            f, p = self._squash(blk[0]), self._squash(blk[1])
            i, o, g = torch.sigmoid(blk[2]), torch.sigmoid(blk[3]), torch.tanh(blk[4])
            c_new = f * c_a + ((1.0 - f) * i * g if self.bounded else i * g)
            b = o * torch.tanh(c_new)
            h_new = p * h_a + ((1.0 - p) * b if self.bounded else b)
        else:
            i, o, g = torch.sigmoid(blk[0]), torch.sigmoid(blk[1]), torch.tanh(blk[2])
            c_new = c_a + i * g
            h_new = h_a + o * torch.tanh(c_new)
        return h_new, c_new

    # ---- one full step ----------------------------------------------------------------------------
    def step(self, x, state):
        """state: [B, blocks*H/2] float64 -> new state (h1 from old h2, then h2 from new h1)."""
        H2 = self.half
        blocks = [state[:, k * H2 : (k + 1) * H2] for k in range(self.n_blocks)]
        if self.kind == "gru":
            h1, h2 = blocks
            h1 = self.gru_half(1, x, h2, h1)
            h2 = self.gru_half(2, x, h1, h2)
            return torch.cat((h1, h2), 1)
        h1, h2, c1, c2 = blocks
        h1, c1 = self.lstm_half(1, x, h2, h1, c1)
        h2, c2 = self.lstm_half(2, x, h1, h2, c2)
        return torch.cat((h1, h2, c1, c2), 1)


def ref_stack(layers: list[RefLayer], x, h0: list, masks: list | None = None):
    """Run a stack over x [T, B, in]; returns (y [T, B, H_top], final states, all states).

    ``masks[l]`` (l >= 1) is the locked-dropout mask on layer l's input; ``all_states[l][t]`` is
    layer l's state after step t.
    """
    masks = masks or [None] * len(layers)
    state = list(h0)
    ys, hist = [], [[] for _ in layers]
    for t in range(x.shape[0]):
        inp = x[t]
        for l, layer in enumerate(layers):
            if l > 0 and masks[l] is not None:
                inp = inp * masks[l].to(inp.dtype)
            state[l] = layer.step(inp, state[l])
            hist[l].append(state[l])
            inp = state[l][:, : layer.hidden]
        ys.append(inp)
    return torch.stack(ys), state, hist


def layers_from_model(model, weight_masks=None, requires_grad: bool = False) -> list[RefLayer]:
    """RefLayers for a ReversibleRNN; ``weight_masks`` is the flat list from ``sample_masks``."""
    out, i = [], 0
    for cell in model.cells:
        names = [n for n, _ in cell.named_parameters(recurse=False)]
        wm = {}
        if weight_masks:
            for n in names:
                if weight_masks[i] is not None:
                    wm[n] = weight_masks[i]
                i += 1
        out.append(RefLayer.from_cell(cell, wm, requires_grad))
    return out
