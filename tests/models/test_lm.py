"""The language model: ``reverse`` and ``store`` backprop agree exactly on the loss and the carried
integer state (and on gradients to float rounding) with every dropout active; evaluation is
deterministic; the loss is the tied-softmax cross-entropy; ignored targets are not counted."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from revrnn_cli.engine.fixed_point import STATE_DTYPE
from revrnn_cli.engine.layers import RevState
from revrnn_cli.models.lm import IGNORE_INDEX, LMConfig, RNNLanguageModel, chunk_loss

V = 23
DROPS = dict(dropout=0.3, dropouth=0.25, dropouti=0.2, dropoute=0.15, wdrop=0.4)


def segments(lengths, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, V, (T, batch), generator=g), torch.randint(0, V, (T, batch), generator=g))
            for T in lengths]


def run_segments(model, segs, mode, seed=123, defer=False):
    """Train-mode loss, final state and gradients of each segment, carrying the (detached) state."""
    model.rnn.backprop = mode
    model.train()
    torch.manual_seed(seed)  # the same dropout masks in both modes
    state, out = None, []
    for tok, tgt in segs:
        model.zero_grad(set_to_none=True)
        res = model.segment(tok, tgt, state, defer_loss=defer)
        assert res.loss_sum.requires_grad
        assert res.deferred == (defer and mode == "reverse")
        if res.deferred:  # no value before the backward pass
            assert math.isnan(res.loss_sum.item())
        res.loss_sum.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        out.append((res.loss_sum.detach().clone(), [h.clone() for h in res.state.ints], grads, int(res.correct),
                    res.tokens, dict(res.bits)))
        state = model.detach_state(res.state)
        assert isinstance(state, RevState)
    return out


@pytest.mark.parametrize("cell, layers, update", [("revgru", 2, "paper"), ("revlstm", 2, "paper"), ("revlstm", 1, "paper"),
                                                  ("revlstm", 2, "bounded")])
def test_reverse_and_store_agree_over_carried_segments(cell, layers, update):
    cfg = LMConfig(cell=cell, emb_size=8, hidden_size=12, layers=layers, chunk=8, max_forget_bits=3, cell_update=update,
                   **DROPS)
    torch.manual_seed(0)
    model = RNNLanguageModel(cfg, V, "reverse")
    segs = segments([21, 16, 5, 9])  # partial chunks, an exact chunk, a segment shorter than a chunk
    rev = run_segments(model, segs, "reverse")
    sto = run_segments(model, segs, "store")
    for i, (r, s) in enumerate(zip(rev, sto)):
        assert r[0].item() == s[0].item(), f"segment {i}: losses differ"
        assert math.isfinite(r[0].item())
        assert len(r[1]) == layers
        for a, b in zip(r[1], s[1]):
            assert a.dtype == STATE_DTYPE
            assert torch.equal(a, b), f"segment {i}: final states differ"
        for name in r[2]:
            gr, gs = r[2][name], s[2][name]
            assert gs.norm() > 0, name
            rel = float((gr - gs).norm() / gs.norm())
            assert rel < 1e-5, f"segment {i}: {name} gradient differs by {rel:.2e}"
        assert r[3] == s[3] and r[4] == s[4]
        for k in ("normal_bits", "used_bits", "optimal_bits", "steps"):  # the paper's accounting
            assert r[5][k] == s[5][k], k
    # the state really is carried: restarting segment 2 from zero gives another loss
    model.rnn.backprop = "store"
    fresh = run_segments(model, segs[1:2], "store")
    assert fresh[0][0].item() != sto[1][0].item()


@pytest.mark.parametrize("cell, block_steps", [("revgru", None), ("revlstm", None), ("revlstm", 3)])
def test_deferred_loss_is_the_eager_loss_bit_for_bit(cell, block_steps, monkeypatch):
    """Reverse mode with defer_loss computes the softmax once, in the backward pass: the loss, the
    correct count and every gradient equal those of the eager reverse pass exactly, also when a
    chunk's softmax runs in several blocks of steps (summed per chunk, then over chunks)."""
    import revrnn_cli.engine.segment as segment

    if block_steps:
        monkeypatch.setattr(segment, "BLOCK_LOGITS", block_steps * 3 * V)  # batch 3: 3 steps per block
        assert segment.step_blocks(8, 3, V) == [(0, 3), (3, 6), (6, 8)]
    cfg = LMConfig(cell=cell, emb_size=8, hidden_size=12, layers=2, chunk=8, max_forget_bits=3, **DROPS)
    torch.manual_seed(0)
    model = RNNLanguageModel(cfg, V, "reverse")
    segs = segments([21, 16, 5])
    eager = run_segments(model, segs, "reverse")
    deferred = run_segments(model, segs, "reverse", defer=True)
    for i, (e, d) in enumerate(zip(eager, deferred)):
        assert torch.equal(e[0], d[0]) and math.isfinite(d[0].item()), f"segment {i}: losses differ"
        assert e[3] == d[3], f"segment {i}: correct counts differ"
        for a, b in zip(e[1], d[1]):
            assert torch.equal(a, b)
        for name in e[2]:
            assert torch.equal(e[2][name], d[2][name]), f"segment {i}: {name} gradient differs"
    assert sum(d[3] for d in deferred) > 0  # the counts compared were not all zero
    # store mode and evaluation ignore the request: their loss is there at once
    store = run_segments(model, segs[:1], "store", defer=True)
    assert torch.equal(store[0][0], eager[0][0])


def test_dropout_masks_are_in_use():
    """Control: with other masks (another seed) the loss changes, so the equality above is not vacuous."""
    cfg = LMConfig(cell="revgru", emb_size=8, hidden_size=8, layers=2, chunk=8, **DROPS)
    torch.manual_seed(0)
    model = RNNLanguageModel(cfg, V, "reverse")
    segs = segments([12])
    a = run_segments(model, segs, "reverse", seed=1)[0][0]
    b = run_segments(model, segs, "reverse", seed=2)[0][0]
    assert a.item() != b.item()


@pytest.mark.parametrize("cell", ["revgru", "revlstm", "gru", "lstm"])
def test_eval_mode_is_deterministic(cell):
    rev = cell.startswith("rev")
    cfg = LMConfig(cell=cell, emb_size=8, hidden_size=8, layers=2, chunk=8, **DROPS)
    torch.manual_seed(0)
    model = RNNLanguageModel(cfg, V, "reverse" if rev else None).eval()
    (tok, tgt), = segments([13])
    with torch.no_grad():
        torch.manual_seed(5)
        r1 = model.segment(tok, tgt)
        torch.manual_seed(6)  # a different RNG state must not matter
        r2 = model.segment(tok, tgt)
        r3 = model.segment(tok, tgt, model.initial_state(tok.shape[1]))
    assert r1.loss_sum.item() == r2.loss_sum.item() == r3.loss_sum.item()
    flat = lambda st: st.ints if rev else [t for s in st for t in (s if isinstance(s, tuple) else (s,))]  # noqa: E731
    for a, b in zip(flat(r1.state), flat(r2.state)):
        assert torch.equal(a, b)
    # with grad enabled (still eval) the loss is the same too
    r4 = model.segment(tok, tgt)
    assert r4.loss_sum.item() == r1.loss_sum.item()


def _hand_loss(model, tok, tgt):
    """Cross-entropy of the tied decoder applied to the RNN output, in float64, by hand."""
    emb = model.encoder.weight
    x = emb[tok]
    y, _ = model.rnn(x)
    logits = (y.double() @ emb.double().t() + model.decoder_bias.double()).reshape(-1, V)
    flat = tgt.reshape(-1)
    valid = flat != IGNORE_INDEX
    logp = logits - logits.logsumexp(1, keepdim=True)
    loss = -logp[valid.nonzero().squeeze(1), flat[valid]].sum()
    correct = int((logits.argmax(1)[valid] == flat[valid]).sum())
    return loss, correct, int(valid.sum())


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_loss_matches_hand_computation(cell):
    cfg = LMConfig(cell=cell, emb_size=6, hidden_size=10, layers=2, chunk=4, dropout=0, dropouth=0, dropouti=0,
                   dropoute=0, wdrop=0)
    torch.manual_seed(0)
    model = RNNLanguageModel(cfg, V, None).eval()
    with torch.no_grad():
        model.decoder_bias.normal_()  # a non-zero bias, so that it has to be included
    (tok, tgt), = segments([11], batch=4, seed=3)
    tgt[0, :] = IGNORE_INDEX
    tgt[5, 1] = IGNORE_INDEX
    with torch.no_grad():
        res = model.segment(tok, tgt)
        loss, correct, tokens = _hand_loss(model, tok, tgt)
    assert res.tokens == tokens == tgt.numel() - 5
    assert res.correct == correct
    assert torch.allclose(res.loss_sum.double(), loss, rtol=1e-6, atol=0)


def test_all_targets_ignored_gives_zero():
    cfg = LMConfig(cell="revgru", emb_size=8, hidden_size=8, chunk=4)
    torch.manual_seed(0)
    model = RNNLanguageModel(cfg, V).eval()
    (tok, _), = segments([7])
    tgt = torch.full_like(tok, IGNORE_INDEX)
    with torch.no_grad():
        res = model.segment(tok, tgt)
    assert res.tokens == 0 and res.correct == 0
    assert float(res.loss_sum) == 0.0


def test_chunk_loss_ignores_ignore_index():
    torch.manual_seed(0)
    K, B, E = 3, 4, 5
    Y = torch.randn(K, B, E)
    W, b = torch.randn(V, E), torch.randn(V)
    logits = (Y @ W.t() + b).reshape(-1, V)
    pred = logits.argmax(1)
    # targets: the argmax (correct) at even positions, something else at odd ones, some ignored
    targets = torch.where(torch.arange(K * B) % 2 == 0, pred, (pred + 1) % V)
    ignored = torch.tensor([0, 3, 5, 6])  # two of them would have been correct
    targets[ignored] = IGNORE_INDEX
    loss, correct = chunk_loss(Y, targets.view(K, B), W, b, None)
    valid = targets != IGNORE_INDEX
    assert correct == int((pred[valid] == targets[valid]).sum())
    assert correct == int(((torch.arange(K * B) % 2 == 0) & valid).sum())
    expected = F.cross_entropy(logits[valid], targets[valid], reduction="sum")
    assert torch.allclose(loss, expected, rtol=1e-6)
    # the ignored rows contribute nothing: changing their logits leaves the loss unchanged
    Y2 = Y.clone().view(-1, E)
    Y2[ignored] = 100.0
    loss2, correct2 = chunk_loss(Y2.view(K, B, E), targets.view(K, B), W, b, None)
    assert loss2.item() == loss.item() and correct2 == correct


def test_training_counts_ignore_ignored_targets():
    cfg = LMConfig(cell="revlstm", emb_size=8, hidden_size=8, chunk=4, **DROPS)
    torch.manual_seed(0)
    model = RNNLanguageModel(cfg, V, "reverse").train()
    (tok, tgt), = segments([10], batch=2)
    tgt[:3] = IGNORE_INDEX
    res = model.segment(tok, tgt)
    res.loss_sum.backward()
    assert res.tokens == int((tgt != IGNORE_INDEX).sum()) == 14
    assert 0 <= res.correct <= res.tokens
