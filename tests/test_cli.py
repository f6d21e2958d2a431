"""`revrnn verify-reversal` through the real command line (subprocesses), plus an in-process check
that a broken reversal is reported as a failed check (exit 1) rather than as success.

The subprocesses of one group are started together (they are independent) and their results
cached per module, so the slow part, importing torch, overlaps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from revrnn_cli import cli
from revrnn_cli.engine import native
from revrnn_cli.engine.buffer import InformationBuffer
from revrnn_cli.errors import EXIT_CHECK_FAILED, EXIT_NUMERIC, EXIT_OK, EXIT_USAGE
from revrnn_cli.verify import GRAD_RTOL, VerifyConfig, verify

TINY = ["--steps", "50", "--hidden", "8", "--input-size", "4", "--batch", "2", "--layers", "2"]
TINY_CFG = dict(steps=50, hidden=8, input_size=4, batch=2, layers=2)



def _env() -> dict:
    env = dict(os.environ)  # carries the hub's offline switches (tests/conftest.py)
    for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        env.pop(k, None)
    return env


def run_cli_many(cases: dict[str, list[str]], cwd: Path, timeout: float = 240) -> dict[str, subprocess.CompletedProcess]:
    """Run several ``python -m revrnn_cli ARGS`` at once; stdout and stderr captured separately."""
    procs = {}
    for name, args in cases.items():
        out, err = open(cwd / f"{name}.out", "w+b"), open(cwd / f"{name}.err", "w+b")
        p = subprocess.Popen([sys.executable, "-m", "revrnn_cli", *args], cwd=cwd, env=_env(), stdout=out,
                             stderr=err, stdin=subprocess.DEVNULL)
        procs[name] = (p, out, err, args)
    results = {}
    try:
        for name, (p, out, err, args) in procs.items():
            rc = p.wait(timeout=timeout)
            out.seek(0)
            err.seek(0)
            results[name] = subprocess.CompletedProcess(args, rc, out.read().decode(), err.read().decode())
    finally:
        for p, out, err, _ in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            err.close()
    return results


def one_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one JSON line on stdout, got {len(lines)}: {stdout[:500]!r}"
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _main(argv) -> int:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return e.value.code


# ---- successful checks ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every subprocess of this module, started together."""
    d = tmp_path_factory.mktemp("verify_cli")
    spec = d / "checks.yaml"
    spec.write_text(
        "checks:\n"
        "  - {cell: revgru, steps: 30, hidden: 8, input_size: 4, batch: 2, layers: 1, max_forget_bits: 1}\n"
        "  - {cell: revlstm, steps: 20, hidden: 6, top_size: 4, input_size: 3, batch: 3, layers: 2,"
        " max_forget_bits: 5, seed: 7}\n"
        "  - {cell: revgru, steps: 10, hidden: 4, input_size: 2, batch: 1, layers: 1, forget: false}\n")
    cases = {
        "default": ["verify-reversal", *TINY, "--json"],
        "human": ["verify-reversal", "--cell", "revgru", "--steps", "10", "--hidden", "4", "--input-size", "2",
                  "--batch", "1", "--layers", "1"],
        "spec": ["verify-reversal", str(spec), "--json"],
    }
    cases.update({f"bad_{name}": BAD_CASES[name][0] for name in SUBPROCESS_BAD})
    return run_cli_many(cases, d)


def _check_report(r: dict, cfg: dict, cell: str, forget: bool) -> None:
    assert r["ok"] is True
    assert r["config"]["cell"] == cell
    for k, v in cfg.items():
        assert r["config"][k] == v, k
    assert r["config"]["forget"] is forget
    assert r["exact"] is True
    assert r["buffers_empty"] is True
    assert r["states_mismatched"] == 0
    assert r["first_mismatch"] is None
    assert r["states_checked"] == cfg["steps"] * cfg["layers"]
    assert r["max_state_error"] == 0
    assert 0 <= r["max_relative_grad_diff"] < GRAD_RTOL <= 1e-4
    assert r["losses_equal"] is True and r["loss_reverse"] == r["loss_store"]
    assert r["gradients_agree"] is True
    # memory accounting: a normal RNN stores one float32 per hidden unit per step (two for an LSTM)
    per_unit = 2 if cell == "revlstm" else 1
    widths = [cfg["hidden"]] * (cfg["layers"] - 1) + [cfg.get("top_size") or cfg["hidden"]]
    assert r["normal_bits"] == 32 * cfg["steps"] * cfg["batch"] * per_unit * sum(widths)
    normal, used, optimal = r["normal_bits"], r["used_bits"], r["optimal_bits"]
    if forget:
        assert used > 0 and optimal > 0
        assert used < normal  # the whole point: far less than storing the states
        assert r["ratio_used"] == normal / used
        assert r["ratio_optimal"] == normal / optimal
        assert r["used_over_optimal"] == used / optimal
    else:  # no forgetting: no buffer at all
        assert used == 0 and optimal == 0
        assert r["ratio_used"] is None and r["ratio_optimal"] is None and r["used_over_optimal"] is None


def _check_both_cells(obj: dict, bits, forget: bool) -> None:
    assert obj["ok"] is True
    assert [r["config"]["cell"] for r in obj["checks"]] == ["revgru", "revlstm"]
    for r in obj["checks"]:
        assert r["config"]["max_forget_bits"] == bits
        _check_report(r, TINY_CFG, r["config"]["cell"], forget)


def test_verify_json_exact_for_both_cells(runs):
    res = runs["default"]
    assert res.returncode == EXIT_OK, res.stderr
    _check_both_cells(one_json(res.stdout), 3, True)
    assert "verify-reversal" in res.stderr  # the human table still goes to stderr


@pytest.mark.parametrize("flags, bits, forget", [(["--max-forget-bits", "none"], None, True),
                                                 (["--no-forget"], 3, False)])
def test_verify_json_variants_in_process(capsys, flags, bits, forget):
    code = _main(["verify-reversal", *TINY, *flags, "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    _check_both_cells(one_json(out), bits, forget)


def test_verify_human_output_goes_to_stderr_only(runs):
    res = runs["human"]
    assert res.returncode == EXIT_OK, res.stderr
    assert res.stdout == ""
    assert "exact" in res.stderr and "buffers empty" in res.stderr
    assert "revgru" in res.stderr


def test_verify_spec_with_checks_list_runs_each(runs):
    res = runs["spec"]
    assert res.returncode == EXIT_OK, res.stderr
    obj = one_json(res.stdout)
    assert obj["ok"] is True
    checks = obj["checks"]
    assert len(checks) == 3
    expected = [
        ("revgru", dict(steps=30, hidden=8, input_size=4, batch=2, layers=1, max_forget_bits=1), True),
        ("revlstm", dict(steps=20, hidden=6, top_size=4, input_size=3, batch=3, layers=2, max_forget_bits=5,
                         seed=7), True),
        ("revgru", dict(steps=10, hidden=4, input_size=2, batch=1, layers=1), False),
    ]
    for r, (cell, cfg, forget) in zip(checks, expected):
        _check_report(r, cfg, cell, forget)


# ---- usage errors -------------------------------------------------------------------------------

BAD_CASES = {
    "cell": (["verify-reversal", "--cell", "foo"], "--cell"),
    "hidden_odd": (["verify-reversal", "--hidden", "7"], "--hidden"),
    "bits": (["verify-reversal", "--max-forget-bits", "4"], "--max-forget-bits"),
    "steps0": (["verify-reversal", "--steps", "0"], "--steps"),
    "missing_spec": (["verify-reversal", "does_not_exist.yaml"], "does_not_exist.yaml"),
    "unknown_key": (["verify-reversal", "unknown.yaml"], "stepz"),
    "bad_checks": (["verify-reversal", "bad_checks.yaml"], "bad_checks.yaml"),
}
# the real process for a click-level and a validation-level error; the rest run in-process
SUBPROCESS_BAD = ("cell", "hidden_odd")


def _check_usage_error(code: int, out: str, err: str, needle: str) -> None:
    assert code == EXIT_USAGE, (code, err)
    assert out == ""
    lines = stderr_lines(err)
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("name", SUBPROCESS_BAD)
def test_verify_bad_arguments_exit_2_subprocess(runs, name):
    res = runs[f"bad_{name}"]
    _check_usage_error(res.returncode, res.stdout, res.stderr, BAD_CASES[name][1])


@pytest.mark.parametrize("name", [n for n in BAD_CASES if n not in SUBPROCESS_BAD])
def test_verify_bad_arguments_exit_2_in_process(capsys, tmp_path, monkeypatch, name):
    (tmp_path / "unknown.yaml").write_text("cell: revgru\nsteps: 10\nstepz: 3\n")
    (tmp_path / "bad_checks.yaml").write_text("checks: 3\n")
    monkeypatch.chdir(tmp_path)
    code = _main(BAD_CASES[name][0])
    out, err = capsys.readouterr()
    _check_usage_error(code, out, err, BAD_CASES[name][1])
    if name == "unknown_key":
        assert "unknown.yaml" in err and "unknown key" in err


# ---- a broken reversal is a failed check --------------------------------------------------------

@pytest.fixture
def broken_reversal(monkeypatch):
    """Flip the lowest bit of the state recovered by the last division of each buffer.

    The buffer itself is left consistent (it still empties), so only the state comparison can
    notice: exactly the kind of silent corruption verify-reversal exists to catch. (On the reference
    path, whose division is Python; the fused path is checked against it bit for bit elsewhere.)
    """
    original = InformationBuffer.div

    def div(self, h, Z, skip=0):
        out = original(self, h, Z, skip)
        return out ^ 1 if self.multiplications == 0 else out

    monkeypatch.setattr(InformationBuffer, "div", div)
    monkeypatch.setenv(native.KERNELS_ENV, "reference")


@pytest.mark.parametrize("cell", ["revgru", "revlstm"])
def test_verify_reports_inexact_reversal(broken_reversal, cell):
    report = verify(VerifyConfig(cell=cell, check_gradients=False, **TINY_CFG))
    assert report["exact"] is False
    assert report["ok"] is False
    assert "error" not in report
    assert report["states_mismatched"] > 0
    assert report["first_mismatch"] is not None
    assert report["max_state_error"] > 0


def test_verify_reports_exact_without_the_patch():
    report = verify(VerifyConfig(cell="revgru", check_gradients=False, **TINY_CFG))
    assert report["exact"] is True and report["ok"] is True


def test_cli_exit_1_when_reversal_inexact(broken_reversal, capsys):
    code = _main(["verify-reversal", "--cell", "revlstm", *TINY, "--no-grad-check", "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_CHECK_FAILED
    obj = one_json(out)
    assert obj["ok"] is False
    assert obj["checks"][0]["exact"] is False
    assert "first mismatch" in err


def test_cli_inexact_reversal_with_gradient_check_is_numeric_error(broken_reversal, capsys):
    # the reverse-mode gradient check then fails its own recovery check (ReversalError): exit 5
    code = _main(["verify-reversal", "--cell", "revgru", *TINY, "--json"])
    out, _ = capsys.readouterr()
    assert code == EXIT_NUMERIC
    obj = one_json(out)
    assert obj["ok"] is False and "error" in obj["checks"][0]


def test_cli_exit_0_in_process_control(capsys):
    code = _main(["verify-reversal", "--cell", "revlstm", *TINY, "--no-grad-check", "--json"])
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    assert one_json(out)["ok"] is True
