"""``--plot``: memory against sequence length per mode, as a PNG (matplotlib is an optional extra)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def plot_rows(rows: list[dict], path: Path, key: str = "saved_bytes") -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'revrnn[plot]' (or pip install matplotlib)") from None
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
