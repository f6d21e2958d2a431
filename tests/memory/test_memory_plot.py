"""memprofile's figure: the measured peak as the main panel, kept bytes and step time beside it,
predicted values marked as such, and a figure that says when peaks were not measured."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from revrnn_cli import cli
from revrnn_cli.errors import EXIT_OK, EXIT_USAGE
from revrnn_cli.memory.plot import MIB, build_figure
from revrnn_cli.memory.profile import profile_row
from revrnn_cli.spec import ExperimentSpec

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
MODES = ("bptt", "checkpoint", "reverse")


@pytest.fixture(scope="module")
def rows():
    spec = ExperimentSpec.model_validate({"data": {"dataset": "ptb"}, "model": {"cell": "revlstm", "emb_size": 8,
                                                                               "hidden_size": 8}})
    out = [profile_row(m, spec, T, 2, "cpu", measure_peak=False) for T in (10, 40) for m in MODES]
    for i, r in enumerate(out):  # stand-in peaks (the probe is tested in test_memory_profile.py)
        r["peak_step_bytes"] = r["saved_bytes"] * 2 + i * MIB
    return out


def _texts(fig) -> str:
    return "\n".join([t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts])


def test_main_panel_is_the_measured_peak(rows):
    fig = build_figure(rows)
    peak, kept, step = fig.axes
    assert "peak" in peak.get_title() and "kept" in kept.get_title() and "time" in step.get_title()
    assert peak.get_position().width > kept.get_position().width  # the main panel
    for ax, key, scale in ((peak, "peak_step_bytes", MIB), (kept, "saved_bytes", MIB), (step, "step_seconds", 1)):
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == set(MODES)
        for mode, line in lines.items():
            expected = [r[key] / scale for r in sorted(rows, key=lambda r: r["seq_len"]) if r["mode"] == mode]
            assert list(line.get_ydata()) == pytest.approx(expected)
    assert "not measured" not in _texts(fig)


def test_without_peaks_the_figure_says_so(rows):
    no_peak = [{k: v for k, v in r.items() if k != "peak_step_bytes"} for r in rows]
    fig = build_figure(no_peak, peak_measured=False)
    assert not fig.axes[0].lines
    assert "peaks not measured (--no-peak)" in _texts(fig)


def test_predicted_values_are_marked(rows):
    skipped = [{"mode": "bptt", "seq_len": 1000, "skipped": True, "predicted_saved_bytes": 3 * 2**30}]
    fig = build_figure(rows, skipped=skipped, extrapolated={"reverse": (5000, 2 * MIB)})
    text = _texts(fig)
    assert "bptt at T=1,000 skipped" in text and "3.00 GiB" in text
    assert "reverse at T=5,000: 2.0 MiB kept, extrapolated" in text
    kept = fig.axes[1]
    hollow = [line for line in kept.lines if line.get_markerfacecolor() == "none"]
    assert sorted(x for line in hollow for x in line.get_xdata()) == [1000, 5000]
    assert not any(1000 in line.get_xdata() for line in fig.axes[0].lines)  # no invented peak


def _main(argv) -> int:
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    return e.value.code


def test_cli_writes_the_png(tmp_path, capsys):
    png = tmp_path / "mem.png"
    args = ["memprofile", QUICKSTART, "--seq-len", "5,10", "--modes", "bptt,reverse", "--no-peak",
            "--extrapolate", "100", "--plot", png]
    assert _main(args) == EXIT_OK
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert "plot written" in capsys.readouterr().err


def test_cli_checks_matplotlib_before_profiling(tmp_path, capsys, monkeypatch):
    import revrnn_cli.memory.profile as profile

    monkeypatch.setattr(profile, "profile_row", lambda *a, **k: pytest.fail("profiled before checking matplotlib"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert _main(["memprofile", QUICKSTART, "--seq-len", "5", "--plot", tmp_path / "m.png"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and len(err.strip().splitlines()) == 1
