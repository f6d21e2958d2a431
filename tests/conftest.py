"""Suite-wide test setup.

Points REVRNN_DATA_DIR at the shared offline corpora (``<repo>/../shared/data``)
when the variable is unset and that directory exists, so tests never download,
keeps the tokenisation cache of the translation data in a temporary directory
(never the user's home), and pins torch to one thread so timings are stable on
shared CI machines.
"""

import os
import tempfile
from pathlib import Path

import pytest
import torch

_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

if not os.environ.get("REVRNN_DATA_DIR") and _SHARED_DATA.is_dir():
    os.environ["REVRNN_DATA_DIR"] = str(_SHARED_DATA)

if not os.environ.get("REVRNN_CACHE_DIR"):
    os.environ["REVRNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="revrnn-test-cache-")

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_global_torch_settings():
    """verify() and the runner switch on deterministic algorithms process-wide (as a CLI process
    should); leave the test session as it was found."""
    flag = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(flag, warn_only=warn)
