"""The ordinary GRU/LSTM baselines: exactly nn.GRU / nn.LSTM without regularisation, DropConnect
that never touches the stored weights, deterministic evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revrnn_cli.models.baseline import BaselineRNN

T, B, IN, H = 7, 3, 5, 6


def pair(cell, **kw):
    torch.manual_seed(0)
    ours = BaselineRNN(cell, IN, H, 1, **kw)
    ref = (nn.LSTM if cell == "lstm" else nn.GRU)(IN, H)
    with torch.no_grad():  # different values from ours' own init, copied over
        for p in ref.parameters():
            p.uniform_(-0.5, 0.5)
    ours.layers[0].load_state_dict(ref.state_dict())
    return ours, ref


def flat_state(state):
    out = []
    for s in state:
        out.extend(s if isinstance(s, tuple) else (s,))
    return out


def ref_state(cell, ref_s):
    return list(ref_s) if cell == "lstm" else [ref_s]


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, IN, generator=g)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("training", [False, True])
def test_unregularised_baseline_is_exactly_torch(cell, training):
    ours, ref = pair(cell, dropout=0.0, weight_drop=0.0)
    ours.train(training)
    ref.train(training)
    x = inputs()
    y, s = ours(x)
    y_ref, s_ref = ref(x)
    assert torch.equal(y, y_ref)
    assert len(s) == 1
    for a, b in zip(flat_state(s), ref_state(cell, s_ref)):
        assert torch.equal(a, b)
    # carrying a state in: same as passing it to torch
    y2, s2 = ours(x, s)
    y2_ref, _ = ref(x, s_ref)
    assert torch.equal(y2, y2_ref)
    assert not torch.equal(y2, y)  # the state mattered


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_drop_leaves_stored_weight_untouched(cell):
    ours, ref = pair(cell, dropout=0.0, weight_drop=0.5)
    ours.train()
    w = ours.layers[0].weight_hh_l0
    before = w.detach().clone()
    x = inputs()
    torch.manual_seed(3)
    y, s = ours(x)
    assert torch.equal(w.detach(), before)
    assert ours.layers[0].weight_hh_l0 is w  # still the registered parameter
    assert "weight_hh_l0" in dict(ours.layers[0].named_parameters())
    # DropConnect was applied: the output differs from the undropped layer's
    y_ref, _ = ref(x)
    assert not torch.equal(y, y_ref)
    # and the gradient reaches the stored weight (through the mask)
    y.square().sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert torch.equal(w.detach(), before)
    # dropped entries get no gradient from the recurrent product: some rows/cols are exactly zero
    assert (w.grad == 0).any()
    # a second forward, after the first, still sees the original weights
    torch.manual_seed(3)
    y_again, _ = ours(x)
    assert torch.equal(y_again, y)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_eval_mode_is_deterministic_and_unregularised(cell):
    torch.manual_seed(0)
    ours = BaselineRNN(cell, IN, H, 2, top_size=4, dropout=0.5, weight_drop=0.5)
    ours.eval()
    x = inputs()
    torch.manual_seed(1)
    y1, s1 = ours(x)
    torch.manual_seed(2)
    y2, s2 = ours(x)
    assert y1.shape == (T, B, 4)
    assert torch.equal(y1, y2)
    for a, b in zip(flat_state(s1), flat_state(s2)):
        assert torch.equal(a, b)
    # eval is the plain stack of torch modules
    h = x
    for layer in ours.layers:
        h, _ = layer(h)
    assert torch.equal(y1, h)
    # training mode with the same regularisation is random
    ours.train()
    torch.manual_seed(1)
    ya, _ = ours(x)
    torch.manual_seed(2)
    yb, _ = ours(x)
    assert not torch.equal(ya, yb)


def test_locked_dropout_between_layers_is_shared_over_time():
    torch.manual_seed(0)
    ours = BaselineRNN("gru", IN, H, 2, dropout=0.5, weight_drop=0.0).train()
    captured = {}
    handle = ours.layers[1].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    torch.manual_seed(4)
    ours(inputs())
    handle.remove()
    x1 = captured["x"]
    h0, _ = ours.layers[0](inputs())
    dropped = (x1 == 0) & (h0 != 0)
    assert dropped.any()
    # one mask per (batch, unit) for every time step
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))


def test_detach_state_cuts_history():
    torch.manual_seed(0)
    for cell in ("lstm", "gru"):
        ours = BaselineRNN(cell, IN, H, 2)
        _, s = ours(inputs())
        d = BaselineRNN.detach_state(s)
        assert all(not t.requires_grad for t in flat_state(d))
        assert all(torch.equal(a, b) for a, b in zip(flat_state(d), flat_state(s)))


def test_rejects_unknown_cell():
    with pytest.raises(ValueError):
        BaselineRNN("rnn", IN, H)
