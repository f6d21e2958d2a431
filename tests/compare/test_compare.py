"""`revrnn compare` on two tiny trained quickstart runs (a RevLSTM and an LSTM): the table, the JSON,
the PNG; how the results are read from metrics.jsonl; and the mistakes a user can make."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from revrnn_cli import cli, runner
from revrnn_cli.compare.summary import summed_ratios, training_minutes
from revrnn_cli.errors import EXIT_DATA, EXIT_OK, EXIT_USAGE
from revrnn_cli.training.metrics import read_metrics

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
TINY = ["data.seq_len=10", "data.n_train=192", "data.n_valid=64", "train.epochs=2", "train.log_interval=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    runner.train(QUICKSTART, TINY, run_dir=tmp / "rev", progress=False)
    runner.train(QUICKSTART, [*TINY, "model.cell=lstm", "train.backprop=null"], run_dir=tmp / "base", progress=False)
    return tmp


def _main(argv) -> int:
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    return e.value.code


def test_json_has_the_differences_and_what_each_run_reached(runs, capsys):
    assert _main(["compare", runs / "rev", runs / "base", "--json"]) == EXIT_OK
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    obj = json.loads(out)
    assert obj["differing_keys"] == ["model.cell", "train.backprop"]
    rev, base = obj["runs"]
    assert (rev["label"], base["label"]) == ("rev", "base")
    assert rev["spec"] == {"model.cell": "revlstm", "train.backprop": "reverse"}
    for r in (rev, base):
        valid = [x for x in read_metrics(Path(r["run"]) / "metrics.jsonl") if x["event"] == "valid"]
        res = r["results"]
        assert res["epochs"] == len(valid) == len(r["curve"]) == 2
        assert res["last_valid_ppl"] == valid[-1]["ppl"] and res["best_valid_ppl"] == min(v["ppl"] for v in valid)
        assert res["tokens_per_s"] > 0 and res["stopped"] == "finished"
        minutes = [p["minutes"] for p in r["curve"]]
        assert 0 < minutes[0] < minutes[1] <= res["train_minutes"]
    assert rev["results"]["ratio_used"] > 1 and rev["results"]["used_over_optimal"] >= 1
    assert base["results"].get("ratio_used") is None


def test_table_shows_only_what_differs(runs, capsys):
    assert _main(["compare", runs / "rev", runs / "base"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == ""
    for needle in ("model.cell", "revlstm", "train.backprop", "best valid ppl", "normal/used", "used/optimal"):
        assert needle in err
    assert "data.seq_len" not in err and "model.emb_size" not in err  # equal in both runs


def test_plot_is_a_png(runs, tmp_path, capsys):
    png = tmp_path / "compare.png"
    assert _main(["compare", runs / "rev", runs / "base", "--plot", png]) == EXIT_OK
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png).shape
    assert width > height > 100
    assert str(png) in capsys.readouterr().err


def test_matplotlib_is_checked_before_any_work(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the [plot] extra were not installed
    png = tmp_path / "c.png"
    assert _main(["compare", runs / "rev", tmp_path / "no_such_run", "--plot", png]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "matplotlib" in err and "no_such_run" not in err and len(err.strip().splitlines()) == 1
    assert not png.exists()


@pytest.mark.parametrize("case", ["missing_run", "not_a_run", "bad_plot_dir", "bad_metrics"])
def test_mistakes_are_one_line(runs, tmp_path, capsys, case):
    target, extra, code = tmp_path / "nope", [], EXIT_USAGE
    if case == "not_a_run":
        target.mkdir()
    elif case == "bad_plot_dir":
        target, extra = runs / "rev", ["--plot", tmp_path / "no_dir" / "x.png"]
    elif case == "bad_metrics":
        target, code = tmp_path / "damaged", EXIT_DATA
        target.mkdir()
        (target / "config.yaml").write_text((runs / "rev" / "config.yaml").read_text())
        lines = (runs / "rev" / "metrics.jsonl").read_text().splitlines()
        (target / "metrics.jsonl").write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    assert _main(["compare", target, *extra]) == code
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert ("no_dir" if case == "bad_plot_dir" else target.name) in err


def test_training_time_leaves_out_the_stop_before_a_resume():
    records = [{"event": "start", "time": 0.0}, {"event": "valid", "time": 60.0},
               {"event": "resume", "time": 1000.0}, {"event": "valid", "time": 1120.0}]
    assert training_minutes(records) == [0.0, 1.0, 1.0, 3.0]


def test_ratios_are_those_of_the_summed_bits():
    # two intervals of equal normal bits N: used N/10 and N/30, optimal N/12 and N/40
    train = [{"ratio_used": 10.0, "ratio_optimal": 12.0}, {"ratio_used": 30.0, "ratio_optimal": 40.0}]
    got = summed_ratios(train)
    assert math.isclose(got["ratio_used"], 2 / (1 / 10 + 1 / 30))
    assert math.isclose(got["used_over_optimal"], (1 / 10 + 1 / 30) / (1 / 12 + 1 / 40))
    assert summed_ratios([{"loss": 1.0}]) == {}
