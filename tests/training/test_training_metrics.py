"""MetricsLogger: crash-safe JSON lines, NaN as null, stdout only when asked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from revrnn_cli.errors import UserError
from revrnn_cli.training import MetricsLogger, read_metrics


def test_lines_are_appended_and_valid_json(tmp_path: Path, capsys) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    with MetricsLogger(path, json_stdout=False) as log:
        log.log({"step": 1, "loss": 5.0})
        # visible on disk before close: a crash now would keep this line
        assert len(path.read_text().splitlines()) == 1
        log.log({"step": 2, "loss": 4.5, "time": 123.0})
    with MetricsLogger(path, json_stdout=False) as log:  # a resumed run appends
        log.log({"step": 3, "loss": 4.0})

    lines = path.read_text().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert isinstance(records[0]["time"], float) and records[0]["time"] > 1e9
    assert records[1]["time"] == 123.0
    assert read_metrics(path) == records
    assert capsys.readouterr().out == ""


def test_non_finite_becomes_null(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path, json_stdout=False) as log:
        log.log({"loss": math.nan, "ppl": math.inf, "g": {"norm": -math.inf}, "xs": [1.0, math.nan],
                 "t": torch.tensor(2.5), "n": np.float32(np.nan)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rec = json.loads(text)
    assert rec["loss"] is None and rec["ppl"] is None and rec["g"] == {"norm": None}
    assert rec["xs"] == [1.0, None] and rec["t"] == 2.5 and rec["n"] is None


def test_stdout_only_when_asked(tmp_path: Path, capsys) -> None:
    with MetricsLogger(tmp_path / "m.jsonl", json_stdout=True) as log:
        log.log({"step": 1, "loss": math.nan})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["loss"] is None and json.loads(out[0])["step"] == 1

    with MetricsLogger(None, json_stdout=True) as log:  # no file, stdout only
        log.log({"step": 2})
    assert json.loads(capsys.readouterr().out)["step"] == 2


def test_record_is_not_mutated_and_closed_logger_refuses(tmp_path: Path) -> None:
    rec = {"loss": 1.0}
    log = MetricsLogger(tmp_path / "m.jsonl", json_stdout=False)
    log.log(rec)
    log.close()
    assert rec == {"loss": 1.0}
    with pytest.raises(ValueError):
        log.log(rec)


def test_read_metrics_tolerates_only_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step":1}\n{"step":2}\n{"step":3,"lo')
    assert read_metrics(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step":1}\n{"ste\n{"step":3}\n')
    with pytest.raises(UserError, match=r"m.jsonl:2"):
        read_metrics(path)
    with pytest.raises(UserError, match="no such metrics file"):
        read_metrics(tmp_path / "absent.jsonl")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_one_line_naming_the_file() -> None:
    from revrnn_cli.errors import EXIT_RESOURCE, ResourceError

    with MetricsLogger(Path("/dev/full")) as log:  # every write fails with ENOSPC
        with pytest.raises(ResourceError) as info:
            log.log({"step": 1})
    assert info.value.exit_code == EXIT_RESOURCE
    assert str(info.value) == "/dev/full: cannot write: No space left on device"


def test_size_and_truncate_cut_back_to_a_checkpoint(tmp_path: Path) -> None:
    from revrnn_cli.training.metrics import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path) as log:
        log.log({"step": 1})
        size = log.size  # what a checkpoint written now records
        log.log({"step": 2})
    assert size == len(path.read_bytes().splitlines(keepends=True)[0])
    truncate_metrics(path, size)
    assert [r["step"] for r in read_metrics(path)] == [1]
    truncate_metrics(path, None)  # a checkpoint from before the size was recorded: left as it is
    truncate_metrics(path, 10**6)
    assert [r["step"] for r in read_metrics(path)] == [1]
    with MetricsLogger(path) as log:  # appending continues from the cut
        assert log.size == size
        log.log({"step": 2})
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_closed_stdout_is_noted_and_the_file_keeps_every_record(tmp_path: Path, monkeypatch) -> None:
    import sys

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise OSError("no descriptor")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path, json_stdout=True) as log:
        assert not log.stdout_closed
        log.log({"step": 1})
        assert log.stdout_closed and not log.json_stdout
        log.log({"step": 2})  # no second attempt, no error
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
