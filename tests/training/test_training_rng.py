"""RNG state survives a checkpoint: a resumed run draws the same numbers as an uninterrupted one."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from revrnn_cli.training import load_checkpoint, rng_state, save_checkpoint, set_rng_state


def _draw() -> tuple:
    return (
        [random.random() for _ in range(5)] + [random.gauss(0, 1)],
        np.random.rand(5).tolist() + [np.random.randn()],  # randn leaves a cached gaussian behind
        torch.rand(5).tolist() + torch.randn(3).tolist(),
        torch.randint(0, 1_000_000, (4,)).tolist(),
    )


def test_round_trip_through_weights_only_checkpoint(tmp_path: Path) -> None:
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    _draw()  # advance every generator away from a fresh seed; leaves python's and numpy's
    assert random.getstate()[2] is not None  # gaussian caches full, so they must be saved too

    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": rng_state()})
    expected = _draw()  # the uninterrupted sequence

    # scramble every generator, as a new process would have them
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert _draw() != expected

    state = torch.load(path, map_location="cpu", weights_only=True)["rng"]
    set_rng_state(state)
    assert _draw() == expected

    set_rng_state(load_checkpoint(path)["rng"])
    assert _draw() == expected


def test_state_is_made_of_restricted_unpickler_types() -> None:
    state = rng_state()
    assert {"python", "torch", "numpy"} <= set(state)
    assert state["torch"].dtype == torch.uint8
    assert isinstance(state["numpy"]["keys"], torch.Tensor) and state["numpy"]["keys"].numel() == 624
    assert isinstance(state["python"][1], tuple) and all(type(x) is int for x in state["python"][1])


def test_partial_state_restores_what_it_has() -> None:
    torch.manual_seed(0)
    state = {"torch": rng_state()["torch"]}
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)
