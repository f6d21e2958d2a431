"""batchify / get_batch layout and AWD-LSTM randomised BPTT lengths."""

from __future__ import annotations

import random
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from revrnn_cli.data import batchify, get_batch, sample_bptt_length


def test_batchify_is_column_major_and_trims():
    data = torch.arange(103)
    out = batchify(data, 4)
    assert out.shape == (25, 4) and out.dtype == data.dtype and out.is_contiguous()
    for j in range(4):
        assert torch.equal(out[:, j], torch.arange(j * 25, (j + 1) * 25))
    assert int(out.max()) == 99  # tokens 100..102 dropped


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), bsz=st.integers(1, 40))
def test_batchify_property(n, bsz):
    data = torch.randperm(n)
    if n < bsz:
        with pytest.raises(ValueError):
            batchify(data, bsz)
        return
    out = batchify(data, bsz)
    steps = n // bsz
    assert out.shape == (steps, bsz)
    assert torch.equal(out.t().reshape(-1), data[: steps * bsz])


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_batchify_rejects_bad_batch_size(bad):
    with pytest.raises(ValueError):
        batchify(torch.arange(10), bad)


def test_batchify_rejects_non_1d():
    with pytest.raises(ValueError):
        batchify(torch.zeros(3, 3, dtype=torch.long), 2)


def test_get_batch_shapes_and_shift():
    source = batchify(torch.arange(1000), 10)  # [100, 10]
    x, y = get_batch(source, 0, 35)
    assert x.shape == y.shape == (35, 10)
    assert torch.equal(y, source[1:36]) and torch.equal(x, source[0:35])
    assert torch.equal(x[1:], y[:-1])
    assert torch.equal(y, x + 1)  # arange: each column is consecutive text
    x, y = get_batch(source, 70, 35)  # last window is shorter: 100 - 1 - 70 = 29
    assert x.shape == y.shape == (29, 10)
    assert torch.equal(y[-1], source[-1])


def test_get_batch_windows_cover_every_target_once():
    source = batchify(torch.arange(503), 5)
    seen = []
    i = 0
    rng = random.Random(0)
    while i < source.size(0) - 1:
        _, y = get_batch(source, i, sample_bptt_length(rng, 12, min_len=2))
        seen.append(y)
        i += y.size(0)
    assert torch.equal(torch.cat(seen), source[1:])


def test_get_batch_returns_views():
    source = batchify(torch.arange(100), 2)
    x, _ = get_batch(source, 3, 4)
    assert x.data_ptr() == source[3:].data_ptr()


@pytest.mark.parametrize("i, seq_len", [(-1, 5), (49, 5), (50, 5), (0, 0)])
def test_get_batch_rejects_bad_window(i, seq_len):
    source = batchify(torch.arange(100), 2)
    with pytest.raises((IndexError, ValueError)):
        get_batch(source, i, seq_len)


# --------------------------------------------------------------------------- randomised BPTT


def _draws(rng, n, **kw):
    return [sample_bptt_length(rng, 70, **kw) for _ in range(n)]


@pytest.mark.parametrize("make", [random.Random, lambda s: torch.Generator().manual_seed(s)])
def test_bptt_deterministic_for_a_seed(make):
    assert _draws(make(123), 200) == _draws(make(123), 200)
    assert _draws(make(123), 200) != _draws(make(124), 200)


def test_bptt_does_not_touch_global_rngs():
    torch_state = torch.get_rng_state()
    py_state = random.getstate()
    _draws(torch.Generator().manual_seed(0), 50)
    _draws(random.Random(0), 50)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state


@pytest.mark.parametrize("make", [random.Random, lambda s: torch.Generator().manual_seed(s)])
def test_bptt_distribution(make):
    lengths = _draws(make(7), 4000)
    assert min(lengths) >= 5 and all(isinstance(n, int) for n in lengths)
    short = [n for n in lengths if n < 52]  # base 35 (N(35,5)) vs base 70 (N(70,5)): separated by 3.5 sigma
    full = [n for n in lengths if n >= 52]
    assert 0.03 < len(short) / len(lengths) < 0.07  # p = 0.05, sd of the fraction ~0.0034
    assert abs(statistics.mean(full) - 69.5) < 0.5  # int() truncates: E = 70 - ~0.5
    assert abs(statistics.mean(short) - 34.5) < 1.5
    assert 4.0 < statistics.pstdev(full) < 6.0


def test_bptt_degenerate_parameters_are_exact():
    rng = random.Random(0)
    assert {sample_bptt_length(rng, 70, p_full=1.0, std=0.0) for _ in range(20)} == {70}
    assert {sample_bptt_length(rng, 71, p_full=0.0, std=0.0) for _ in range(20)} == {35}  # int(35.5)
    assert {sample_bptt_length(rng, 3, p_full=1.0, std=0.0) for _ in range(20)} == {5}  # min_len floor
    assert {sample_bptt_length(rng, 3, p_full=1.0, std=0.0, min_len=1) for _ in range(20)} == {3}


def test_bptt_min_len_is_a_floor():
    rng = torch.Generator().manual_seed(1)
    assert min(sample_bptt_length(rng, 8, std=20.0, min_len=6) for _ in range(500)) == 6


@pytest.mark.parametrize(
    "kwargs", [dict(bptt=0), dict(bptt=70, p_full=1.5), dict(bptt=70, std=-1.0), dict(bptt=70, min_len=0)]
)
def test_bptt_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        sample_bptt_length(random.Random(0), **kwargs)


def test_bptt_rejects_unknown_rng():
    with pytest.raises(TypeError):
        sample_bptt_length(42, 70)
