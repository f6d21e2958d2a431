"""The toy tasks: determinism, exact formats, and the token layout contract."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from revrnn_cli.data import (
    IGNORE_INDEX,
    SYNTHETIC_TASKS,
    DataError,
    blank_id,
    make_synthetic,
    make_synthetic_splits,
    num_input_tokens,
    sequence_length,
)
from revrnn_cli.data.synthetic import split_seed


@pytest.mark.parametrize("task", SYNTHETIC_TASKS)
def test_deterministic_for_a_seed_and_seed_sensitive(task):
    a = make_synthetic(task, 10, 12, 64, seed=3)
    b = make_synthetic(task, 10, 12, 64, seed=3)
    c = make_synthetic(task, 10, 12, 64, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_global_rng_untouched():
    state = torch.get_rng_state()
    make_synthetic("repeat", 5, 8, 16, seed=0)
    make_synthetic_splits("remember", 5, 8, 4, 4, 4, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_global_rng_does_not_influence_output():
    torch.manual_seed(0)
    a = make_synthetic("repeat", 7, 9, 10, seed=11)
    torch.manual_seed(999)
    b = make_synthetic("repeat", 7, 9, 10, seed=11)
    assert torch.equal(a[0], b[0])


def test_repeat_format():
    x, y = make_synthetic("repeat", 6, 20, 50, seed=1)
    assert x.shape == y.shape == (50, 20) and x.dtype == y.dtype == torch.long
    assert bool((y[:, 0] == IGNORE_INDEX).all())
    assert torch.equal(y[:, 1:], x[:, :-1])
    assert int(x.min()) >= 0 and int(x.max()) < 6


def test_remember_format():
    k, v = 7, 5
    x, y = make_synthetic("remember", v, k, 40, seed=2)
    assert x.shape == y.shape == (40, 2 * k) == (40, sequence_length("remember", k))
    assert bool((x[:, k:] == blank_id(v)).all())
    assert bool((y[:, :k] == IGNORE_INDEX).all())
    assert torch.equal(y[:, k:], x[:, :k])
    assert int(x[:, :k].min()) >= 0 and int(x[:, :k].max()) < v


@settings(max_examples=40, deadline=None)
@given(
    task=st.sampled_from(SYNTHETIC_TASKS),
    v=st.integers(1, 50),
    k=st.integers(1, 30),
    n=st.integers(0, 20),
    seed=st.integers(0, 2**32),
)
def test_format_properties(task, v, k, n, seed):
    x, y = make_synthetic(task, v, k, n, seed)
    t = sequence_length(task, k)
    assert x.shape == y.shape == (n, t)
    assert int(x.numel() == 0 or x.max()) < num_input_tokens(v)
    targets = y[y != IGNORE_INDEX]
    assert targets.numel() == n * (k - 1 if task == "repeat" else k)
    assert bool(((targets >= 0) & (targets < v)).all())


def test_symbols_are_roughly_uniform():
    x, _ = make_synthetic("repeat", 8, 50, 400, seed=5)
    counts = torch.bincount(x.reshape(-1), minlength=8).float()
    expected = x.numel() / 8  # 2500; binomial sd ~47
    assert bool(((counts - expected).abs() < 250).all())


def test_targets_work_with_cross_entropy_ignore_index():
    splits = make_synthetic_splits("remember", 4, 5, 8, 2, 2, seed=0)
    _, y = splits.train
    logits = torch.full((*y.shape, splits.n_classes), -30.0)
    mask = y != splits.ignore_index
    logits[mask] = logits[mask].scatter(1, y[mask].unsqueeze(1), 30.0)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, splits.n_classes), y.reshape(-1))
    assert float(loss) < 1e-6
    assert splits.ignore_index == torch.nn.CrossEntropyLoss().ignore_index
    assert splits.n_input_tokens == 5 and splits.blank_id == 4


def test_splits_are_deterministic_independent_and_sized():
    s1 = make_synthetic_splits("repeat", 10, 15, 30, 20, 10, seed=9)
    s2 = make_synthetic_splits("repeat", 10, 15, 30, 20, 10, seed=9)
    assert [t[0].shape[0] for t in (s1.train, s1.valid, s1.test)] == [30, 20, 10]
    for a, b in zip((s1.train, s1.valid, s1.test), (s2.train, s2.valid, s2.test)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(s1.train[0][:10], s1.test[0])
    assert not torch.equal(s1.valid[0][:10], s1.test[0])
    other = make_synthetic_splits("repeat", 10, 15, 30, 20, 10, seed=10)
    assert not torch.equal(s1.train[0], other.train[0])
    direct = make_synthetic("repeat", 10, 15, 20, split_seed(9, "valid"))
    assert torch.equal(direct[0], s1.valid[0])


def test_split_seed_is_stable_and_distinct():
    seeds = {split_seed(0, s) for s in ("train", "valid", "test")} | {split_seed(1, "train")}
    assert len(seeds) == 4
    assert all(0 <= s < 2**63 for s in seeds)
    assert split_seed(0, "train") == split_seed(0, "train")


def test_unknown_task_is_a_data_error():
    with pytest.raises(DataError, match="repeat, remember"):
        make_synthetic("copy", 5, 5, 5, 0)


@pytest.mark.parametrize(
    "args", [(0, 5, 5, 0), (5, 0, 5, 0), (5, 5, -1, 0), (5, 5, 5, -1), (5.0, 5, 5, 0), (5, 5, 5, True)]
)
def test_bad_sizes_are_value_errors(args):
    with pytest.raises(ValueError):
        make_synthetic("repeat", *args)


def test_layout_helpers():
    assert blank_id(10) == 10 and num_input_tokens(10) == 11
    assert sequence_length("repeat", 6) == 6 and sequence_length("remember", 6) == 12


def test_same_seed_same_data_in_another_process():
    """The data of a run are a function of its seed alone: a fresh interpreter draws the same tensors."""
    import subprocess
    import sys

    code = ("import sys, torch; from revrnn_cli.data import make_synthetic_splits as m; "
            "s = m('remember', 8, 6, 5, 3, 2, seed=1111); "
            "sys.stdout.write(repr([t.tolist() for p in (s.train, s.valid, s.test) for t in p]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    s = make_synthetic_splits("remember", 8, 6, 5, 3, 2, seed=1111)
    assert out == repr([t.tolist() for p in (s.train, s.valid, s.test) for t in p])
