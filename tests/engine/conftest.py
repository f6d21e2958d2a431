"""Engine tests run on both step paths where both exist: the eager reference cells and the fused
operators (skipped, with the reason, on a machine that cannot build them)."""

from __future__ import annotations

import pytest

from revrnn_cli.engine import native


def native_or_skip() -> None:
    if not native.load():
        pytest.skip(f"the fused operators cannot be built here: {native._state['error']}")


@pytest.fixture(params=["reference", "native"])
def path(request):
    """The step path of a test: ``reference`` or ``native`` (also selected for the layer API)."""
    if request.param == "native":
        native_or_skip()
    with native.kernels(request.param):
        yield request.param
