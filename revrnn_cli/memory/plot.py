"""``revrnn memprofile --plot``: what one training step really costs, per mode, against T.

    revrnn memprofile --seq-len 35,70,250,500 --plot mem.png
    revrnn memprofile experiments/ptb_revlstm_long.yaml --seq-len 250,500,1000 --extrapolate 20000 --plot mem.png

The main panel is the measured peak of the step, because that is what decides whether a step fits:
by the bytes kept for backward alone, checkpointing looks as cheap as reverse mode (it keeps only
its √T boundary states), yet its peak grows about 17× faster per step (docs/results.md §5), since
each segment's recomputation and backward need the full activations of that segment. Beside it:
the bytes kept for backward and the step time. Nothing drawn is invented: values predicted rather
than measured (rows skipped for memory, ``--extrapolate``) are open markers on dashed lines and
listed on the figure, and without peak measurements (``--no-peak``) the main panel says so.
"""

from __future__ import annotations

from pathlib import Path

from ..plotting import require_matplotlib, save

MIB = 2**20


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / MIB:.1f} MiB"


def _series(rows: list[dict], mode: str, key: str) -> list[tuple[int, float]]:
    return sorted((r["seq_len"], r[key]) for r in rows if r["mode"] == mode and r.get(key) is not None)


def build_figure(rows: list[dict], *, skipped: list[dict] = (), extrapolated: dict | None = None,
                 peak_measured: bool = True, title: str = "activation memory of one training step"):
    """The figure. ``skipped``: rows not run (with ``predicted_saved_bytes``); ``extrapolated``:
    mode -> (T, predicted kept bytes) from ``--extrapolate``; ``peak_measured``: False with ``--no-peak``."""
    plt = require_matplotlib()
    fig = plt.figure(figsize=(12, 6), dpi=100)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.5, 1])
    peak, kept, time_ax = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    modes = list(dict.fromkeys([r["mode"] for r in rows] + [r["mode"] for r in skipped]))
    notes = []
    for i, mode in enumerate(modes):
        c = colours[i % len(colours)]
        for ax, key in ((peak, "peak_step_bytes"), (kept, "saved_bytes")):
            pts = _series(rows, mode, key)
            if pts:
                ax.plot([t for t, _ in pts], [v / MIB for _, v in pts], marker="o", color=c, label=mode)
        pts = _series(rows, mode, "step_seconds")
        if pts:
            time_ax.plot([t for t, _ in pts], [v for _, v in pts], marker="o", color=c, label=mode)
        predicted = [(r["seq_len"], r["predicted_saved_bytes"]) for r in skipped
                     if r["mode"] == mode and r.get("predicted_saved_bytes")]
        if extrapolated and extrapolated.get(mode):
            predicted.append(extrapolated[mode])
        if predicted:
            last = _series(rows, mode, "saved_bytes")[-1:]
            line = sorted(last + predicted)
            kept.plot([t for t, _ in line], [v / MIB for _, v in line], ls="--", color=c)
            kept.plot([t for t, _ in predicted], [v / MIB for _, v in predicted], ls="none", marker="o",
                      mfc="none", color=c)
        for r in skipped:
            if r["mode"] == mode:
                notes.append(f"{mode} at T={r['seq_len']:,} skipped: would keep about "
                             f"{_size(r['predicted_saved_bytes'])} (extrapolated), over 80% of memory")
        if extrapolated and extrapolated.get(mode):
            t, v = extrapolated[mode]
            notes.append(f"{mode} at T={t:,}: {_size(v)} kept, extrapolated (not run)")
        failed = [r["seq_len"] for r in rows if r["mode"] == mode and r.get("error")]
        if failed and peak_measured:
            notes.append(f"{mode}: peak not measured at T=" + ", ".join(f"{t:,}" for t in failed))
    peak.set_title("measured peak memory of the step", fontsize=11)
    peak.set_ylabel("MiB (peak during one training step)")
    if not peak_measured:
        peak.text(0.5, 0.5, "peaks not measured (--no-peak)", ha="center", va="center", fontsize=13,
                  transform=peak.transAxes)
    kept.set_title("kept for backward", fontsize=10)
    kept.set_ylabel("MiB")
    time_ax.set_title("time of the step", fontsize=10)
    time_ax.set_ylabel("seconds")
    for ax in (peak, kept, time_ax):
        ax.set_xlabel("sequence length T")
        ax.set_xscale("log")
        if ax.lines:
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    if any(p is not None for p in (skipped or None, extrapolated or None)):
        notes.insert(0, "open markers, dashed: extrapolated from the measured lengths, not measured")
    fig.suptitle(title)
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.03 * (len(notes) + 1) if notes else 0, 1, 1))
    return fig


def plot_rows(rows: list[dict], path: Path, *, skipped: list[dict] = (), extrapolated: dict | None = None,
              peak_measured: bool = True) -> Path:
    """Draw :func:`build_figure` to ``path``."""
    return save(build_figure(rows, skipped=skipped, extrapolated=extrapolated, peak_measured=peak_measured), path)


__all__ = ["build_figure", "plot_rows"]
