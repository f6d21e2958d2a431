"""memprofile's measurements: reverse-mode memory does not grow like BPTT's; the JSON rows."""

import json
import subprocess
import sys

import pytest
import torch

from revrnn_cli.memory.profile import growth_per_step, profile_row
from revrnn_cli.spec import ExperimentSpec

B, H = 4, 16


def spec(cell="revlstm", bits=3):
    return ExperimentSpec.model_validate({"data": {"dataset": "ptb"}, "model": {
        "cell": cell, "emb_size": H, "hidden_size": H, "layers": 2, "max_forget_bits": bits}})


@pytest.fixture(scope="module")
def rows():
    s = spec()
    return [profile_row(m, s, T, B, "cpu", measure_peak=False) for T in (20, 80) for m in ("bptt", "checkpoint", "reverse")]


def test_reverse_kept_bytes_grow_only_by_the_buffer(rows):
    slopes = growth_per_step(rows)
    # per step, reverse mode may keep at most what the buffer can gain (4 multiplications of at most
    # 3 bits per unit of each layer's half-width buffer) plus the token ids (2 x int64 per sequence)
    bound = sum(4 * 3 * B * (H // 2) / 8 for _ in range(2)) + 2 * 8 * B
    assert 0 <= slopes["reverse"] <= bound
    assert slopes["reverse"] * 50 < slopes["bptt"]
    assert slopes["reverse"] < slopes["checkpoint"] * 10  # both far below BPTT


def test_reverse_keeps_less_than_bptt_at_every_length(rows):
    for T in (20, 80):
        by_mode = {r["mode"]: r for r in rows if r["seq_len"] == T}
        assert by_mode["reverse"]["saved_bytes"] * 10 < by_mode["bptt"]["saved_bytes"]


def test_paper_accounting_in_rows(rows):
    for r in rows:
        assert r["normal_bits"] == 32 * r["seq_len"] * B * H * 2 * 2  # two LSTM layers, h and c
        if r["mode"] == "reverse":
            assert r["used_bits"] > 0 and r["optimal_bits"] > 0
            assert r["ratio_used"] == pytest.approx(r["normal_bits"] / r["used_bits"])
            assert 1.0 <= r["used_over_optimal"] < 1.6  # tiny model: the 18-bit heads weigh more


def test_cli_json_rows_and_peak_probe():
    cmd = [sys.executable, "-m", "revrnn_cli", "memprofile", "--set", f"model.emb_size={H}", "--set",
           f"model.hidden_size={H}", "--seq-len", "12", "--batch", "2", "--modes", "bptt,reverse", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    for r in rows:
        for key in ("mode", "seq_len", "batch", "cell", "normal_bits", "saved_bytes", "step_seconds", "tokens_per_s",
                    "peak_step_bytes", "peak_rss_bytes", "build_rss_bytes"):
            assert key in r, key
        assert r["peak_rss_bytes"] >= r["build_rss_bytes"] > 0
    rev = [r for r in rows if r["mode"] == "reverse"][0]
    for key in ("used_bits", "optimal_bits", "ratio_used", "ratio_optimal", "used_over_optimal"):
        assert key in rev


def test_cli_rejects_bad_modes_and_lengths():
    for args in (["--modes", "fast"], ["--seq-len", "10,x"], ["--seq-len", "0"]):
        proc = subprocess.run([sys.executable, "-m", "revrnn_cli", "memprofile", *args], capture_output=True, text=True)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1


def test_probe_reports_its_own_peak_not_the_parents():
    """ru_maxrss survives exec on Linux: a probe started from a large parent must not inherit its peak."""
    from revrnn_cli.memory.measure import _run_probe
    from revrnn_cli.memory.probe import peak_rss_bytes

    ballast = torch.ones(600 * 2**20 // 4)  # make this process's peak at least 600 MiB larger
    ballast += 1
    parent_peak = peak_rss_bytes()
    cfg = {"data": {"dataset": "ptb"}, "model": {"cell": "revlstm", "emb_size": H, "hidden_size": H, "layers": 1}}
    child = _run_probe({"config": cfg, "mode": "reverse", "steps": 4, "batch": 2, "device": "cpu", "step": False}, 300)
    assert 0 < child["peak_rss_bytes"] < parent_peak - 300 * 2**20
