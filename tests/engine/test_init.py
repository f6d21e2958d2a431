"""The engine's process-wide settings (``revrnn_cli.engine.deterministic_settings``)."""

import torch

from revrnn_cli.engine import deterministic_settings


def test_deterministic_settings_fill_uninitialized_memory_only_when_asked(monkeypatch):
    """Training skips NaN-filling torch.empty (4% of a step); the test suite asks for it, so that an
    operator reading memory it never wrote produces NaN here and fails the exactness tests."""
    monkeypatch.delenv("REVRNN_FILL_UNINITIALIZED", raising=False)
    deterministic_settings()
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is False
    monkeypatch.setenv("REVRNN_FILL_UNINITIALIZED", "1")
    deterministic_settings()
    assert torch.utils.deterministic.fill_uninitialized_memory is True
    assert torch.isnan(torch.empty(4)).all()  # what the suite relies on
