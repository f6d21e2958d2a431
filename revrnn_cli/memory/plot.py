"""``--plot``: memory against sequence length per mode, as a PNG (matplotlib is an optional extra)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError


def check_plot_target(path: Path) -> None:
    """Fail now, in one line, if ``--plot`` could not be honoured after the profile: no matplotlib,
    or a file that cannot be written (a profile can take many minutes)."""
    _pyplot()
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--plot {path}: is a directory; give a file name such as mem.png")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"--plot {path}: cannot write there ({parent} is not a writable directory)")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'revrnn[plot]' (or pip install matplotlib)") from None
    return plt


def plot_rows(rows: list[dict], path: Path, key: str = "saved_bytes") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for mode in dict.fromkeys(r["mode"] for r in rows):
        pts = sorted((r["seq_len"], r[key]) for r in rows if r["mode"] == mode and r.get(key) is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] / 2**20 for p in pts], marker="o", label=mode)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("MiB " + ("kept for backward" if key == "saved_bytes" else "peak during one step"))
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("activation memory of one training step")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
