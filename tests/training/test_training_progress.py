"""Progress: silent when disabled, never steals stdout, cheap per update."""

from __future__ import annotations

import io
import sys
import time

from rich.console import Console

from revrnn_cli.training import Progress, format_fields


def test_disabled_prints_nothing(capfd) -> None:
    with Progress(total=10, description="epoch 1", enabled=False) as bar:
        for _ in range(10):
            bar.update(loss=4.2, ppl=66.7, lr=1e-3, tok_s=12345.0)
        bar.set_total(20)
        bar.log("epoch 1 done")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_auto_is_disabled_when_stderr_is_not_a_terminal(capfd) -> None:
    bar = Progress(total=3, description="train")  # under pytest stderr is captured, not a tty
    assert bar.enabled is False
    with bar:
        bar.update()
        bar.log("hello")
    assert capfd.readouterr() == ("", "")


def test_enabled_bar_shows_fields_and_leaves_stdout_alone() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160)
    stdout = sys.stdout
    with Progress(total=None, description="epoch 1", console=console) as bar:
        assert bar.enabled
        assert sys.stdout is stdout  # --json records must keep going to the real stdout
        bar.set_total(4)
        for _ in range(4):
            bar.update(loss=4.2131, tok_s=12345.6)
        bar.log("epoch 1: valid ppl 80.1")
    text = buf.getvalue()
    assert "epoch 1: valid ppl 80.1" in text
    assert "loss 4.213" in text and "tok/s 12,346" in text and "4/4" in text


def test_format_fields() -> None:
    assert format_fields({"loss": 4.21311, "ppl": 67.62, "lr": 0.001, "tok_s": 12345.6, "step": 3}) == \
        "loss 4.213  ppl 67.62  lr 1.00e-03  tok/s 12,346  step 3"


def test_update_is_cheap() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    with Progress(total=20_000, description="speed", console=console) as bar:
        start = time.perf_counter()
        for i in range(20_000):
            bar.update(loss=1.0 / (i + 1), tok_s=1000.0)
        per_update = (time.perf_counter() - start) / 20_000
    assert per_update < 200e-6  # far below any training step; typically ~5 us

    off = Progress(total=20_000, description="off", enabled=False)
    start = time.perf_counter()
    for _ in range(20_000):
        off.update(loss=1.0)
    assert (time.perf_counter() - start) / 20_000 < 20e-6
