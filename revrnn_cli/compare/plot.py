"""``revrnn compare --plot``: the runs' validation curves and memory ratios in one figure.

    revrnn compare runs/ptb_lstm_small runs/ptb_revlstm_small --plot compare.png

Three panels, one colour per run throughout: validation perplexity against epoch (does the
reversible model learn as well?), the same against training minutes (what does it cost in time?),
and the paper's activation-memory ratio normal/used with used/optimal written beside each bar (what
does it save?). An ordinary model stores every hidden state: its bar is 1 by definition, and is
labelled so rather than left out, so the saving reads against the baseline.
"""

from __future__ import annotations

from pathlib import Path

from ..plotting import require_matplotlib, save


def build_figure(result: dict):
    """The figure for a :func:`~.summary.compare` result (matplotlib must be installed)."""
    plt = require_matplotlib()
    runs = result["runs"]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (by_epoch, by_time, memory) = plt.subplots(1, 3, figsize=(13, 4.2), dpi=100,
                                                   gridspec_kw={"width_ratios": [1, 1, 0.9]})
    plotted, values = False, []
    for i, r in enumerate(runs):
        c = colours[i % len(colours)]
        pts = [p for p in r["curve"] if p.get("ppl") is not None]
        if not pts:
            continue
        plotted = True
        values += [p["ppl"] for p in pts]
        by_epoch.plot([p["epoch"] for p in pts], [p["ppl"] for p in pts], marker="o", color=c, label=r["label"])
        timed = [p for p in pts if p.get("minutes") is not None]
        by_time.plot([p["minutes"] for p in timed], [p["ppl"] for p in timed], marker="o", color=c, label=r["label"])
    for ax, xlabel in ((by_epoch, "epoch"), (by_time, "training time (minutes)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation perplexity")
        ax.grid(True, which="both", alpha=0.3)
        if plotted:
            if max(values) > 4 * min(values):  # a long way down: log scale, plain tick labels
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: ""))
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax.transAxes)
    by_epoch.xaxis.get_major_locator().set_params(integer=True)
    by_epoch.set_title("validation perplexity per epoch", fontsize=10)
    by_time.set_title("validation perplexity against time", fontsize=10)
    _memory_panel(memory, runs, colours)
    fig.tight_layout()
    return fig


def _memory_panel(ax, runs: list[dict], colours: list[str]) -> None:
    labels, values, notes, cs = [], [], [], []
    for i, r in enumerate(runs):
        res = r["results"]
        ratio = res.get("ratio_used")
        labels.append(r["label"])
        cs.append(colours[i % len(colours)])
        if ratio:
            values.append(ratio)
            uo = res.get("used_over_optimal")
            notes.append(f"{ratio:.1f}×" + (f"  used/optimal {uo:.3f}" if uo else ""))
        else:
            values.append(1.0)
            notes.append("1× (stores every state)")
    y = list(range(len(runs)))[::-1]  # first run on top
    ax.barh(y, values, color=cs, alpha=0.8, height=0.5)
    ax.set_yticks(y, labels, fontsize=8)
    top = max(values)
    for yi, v, note in zip(y, values, notes):
        ax.text(v + 0.02 * top, yi, note, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.9)
    ax.set_xlabel("normal / used bits (activation memory saved)")
    ax.set_title("activation memory (paper's accounting)", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)


def plot_compare(result: dict, path: Path) -> Path:
    """Draw the comparison to ``path`` (PNG, or any format matplotlib writes)."""
    return save(build_figure(result), path)


__all__ = ["build_figure", "plot_compare"]
