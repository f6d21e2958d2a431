"""The ``revrnn`` command line: parse, validate, call the engine, format the result.

    revrnn verify-reversal                          # check a default RevGRU and RevLSTM, exit 0 if exact
    revrnn verify-reversal --cell revlstm --steps 10000 --max-forget-bits 2 --json | jq .ok
    revrnn verify-reversal experiments/verify_long.yaml
    revrnn train experiments/quickstart.yaml
    revrnn train experiments/ptb_revlstm.yaml --set model.layers=2 --json
    revrnn evaluate runs/quickstart --split test --json
    revrnn generate runs/ptb_revlstm_small --prompt "the company said" --seed 1
    echo "A dog runs." | revrnn translate runs/multi30k_revlstm_small
    revrnn compare runs/ptb_lstm_small runs/ptb_revlstm_small --plot compare.png

Human output goes to stderr, one JSON object to stdout with ``--json``. Exit codes are listed in
:mod:`revrnn_cli.errors` (0 ok, 1 check failed, 2 usage or spec error, ...).
"""

from __future__ import annotations

import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from typer.exceptions import TyperException
from rich.markup import escape
from rich.table import Table

from . import __version__
from .console import emit_json, err, fail, fmt
from .data.errors import DataError
from .engine.fixed_point import FixedPointError, NonFiniteError
from .engine.native import KernelsUnavailable
from .errors import EXIT_CHECK_FAILED, EXIT_DATA, EXIT_NONFINITE, EXIT_NUMERIC, EXIT_OK, EXIT_SIGINT, EXIT_USAGE, UserError
from .errors import out_of_memory
from .training.loop import Interrupted
from .spec import load_yaml, validation_message

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reversible recurrent neural networks: exact memory-free backprop, experiments, memory profiles.")


def _version(value: bool):
    if value:
        err.print(f"revrnn {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """revrnn: train and check reversible RNNs (MacKay et al., NeurIPS 2018)."""


class CellName(str, Enum):
    revgru = "revgru"
    revlstm = "revlstm"


def _forget_bits(value: Optional[str]):
    if value is None:
        return None
    v = value.strip().lower()
    if v == "none":
        return "none"
    if v in {"1", "2", "3", "5"}:
        return int(v)
    raise typer.BadParameter(f"{value!r} is not one of 1, 2, 3, 5, none")


# CLI option -> VerifyConfig field, so that a validation error names the flag the user typed
_VERIFY_FLAGS = {"cell": "--cell", "layers": "--layers", "hidden": "--hidden", "input_size": "--input-size",
                 "batch": "--batch", "steps": "--steps", "max_forget_bits": "--max-forget-bits", "seed": "--seed",
                 "top_size": "--top-size", "chunk": "--chunk", "dropout": "--dropout", "weight_drop": "--weight-drop",
                 "device": "--device"}


@app.command("verify-reversal")
def verify_reversal(
    spec: Optional[Path] = typer.Argument(None, help="YAML file with one check (a mapping) or `checks:` (a list)."),
    cell: Optional[CellName] = typer.Option(None, "--cell", help="Cell to check (default: both)."),
    layers: Optional[int] = typer.Option(None, "--layers", min=1, help="Stacked layers \\[2]."),
    hidden: Optional[int] = typer.Option(None, "--hidden", min=2, help="Hidden units per layer, even \\[32]."),
    top_size: Optional[int] = typer.Option(None, "--top-size", min=2, help="Width of the top layer \\[= hidden]."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=1, help="Input features \\[16]."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Batch size \\[4]."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Time steps T \\[1000]."),
    max_forget_bits: Optional[str] = typer.Option(None, "--max-forget-bits", callback=_forget_bits,
                                                  help="Most bits forgotten per unit per step: 1, 2, 3, 5 or none \\[3]."),
    no_forget: bool = typer.Option(False, "--no-forget", help="Check the no-forgetting variant (no buffer)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", min=0.0, max=0.99, help="Locked dropout between layers \\[0.3]."),
    weight_drop: Optional[float] = typer.Option(None, "--weight-drop", min=0.0, max=0.99, help="DropConnect on recurrent weights \\[0.2]."),
    chunk: Optional[int] = typer.Option(None, "--chunk", min=1, help="Steps per batched input projection \\[16]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed \\[0]."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda[:N] \\[cpu]."),
    no_grad_check: bool = typer.Option(False, "--no-grad-check", help="Skip the reverse-vs-store gradient comparison."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
):
    """Run T steps forward, reverse to the start, and check that every state comes back bit-for-bit."""
    from .verify import VerifyConfig, verify

    cell = cell.value if cell is not None else None
    overrides = {k: v for k, v in dict(cell=cell, layers=layers, hidden=hidden, top_size=top_size,
                                       input_size=input_size, batch=batch, steps=steps, dropout=dropout,
                                       weight_drop=weight_drop, chunk=chunk, seed=seed,
                                       device=device).items() if v is not None}
    if max_forget_bits is not None:
        overrides["max_forget_bits"] = None if max_forget_bits == "none" else max_forget_bits
    if no_forget:
        overrides["forget"] = False
    if no_grad_check:
        overrides["check_gradients"] = False
    if spec is not None:
        raw = load_yaml(spec)
        entries = raw.get("checks") if isinstance(raw, dict) and "checks" in raw else [raw]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise UserError(f"{spec}: expected a mapping of options or `checks:` with a list of mappings")
        where = str(spec)
    else:
        entries = [{}] if cell else [{"cell": "revgru"}, {"cell": "revlstm"}]
        where = "verify-reversal"
    configs = []
    for i, entry in enumerate(entries):
        try:
            configs.append(VerifyConfig.model_validate({**entry, **overrides}))
        except Exception as e:  # pydantic.ValidationError
            prefix = f"{where}: checks[{i}]" if len(entries) > 1 and spec else where
            raise UserError(validation_message(e, prefix, flags=None if spec else _VERIFY_FLAGS)) from None

    reports = []
    for cfg in configs:
        with err.status(f"verifying {cfg.describe()} ...", spinner="dots") if err.is_terminal else _null():
            try:
                reports.append(verify(cfg))
            except ValueError as e:
                raise UserError(f"{where}: {e}") from None
    ok = all(r["ok"] for r in reports)
    if json_out:
        emit_json({"ok": ok, "checks": reports})
    _print_verify_table(reports)
    if any("error" in r for r in reports) and not ok:
        raise typer.Exit(EXIT_NUMERIC)
    raise typer.Exit(EXIT_OK if ok else EXIT_CHECK_FAILED)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


_VERIFY_ROWS = [
    ("exact", "exact"), ("states checked", "states_checked"), ("states mismatched", "states_mismatched"),
    ("max state error", "max_state_error"), ("buffers empty", "buffers_empty"),
    ("largest |state|", "max_state"), ("forget gates at 1", "saturated_gates"),
    ("max rel. grad diff", "max_relative_grad_diff"), ("grad angle (degrees)", "grad_angle_degrees"),
    ("losses equal", "losses_equal"),
    ("normal bits", "normal_bits"), ("used bits", "used_bits"), ("optimal bits", "optimal_bits"),
    ("used / optimal", "used_over_optimal"), ("normal / used", "ratio_used"), ("normal / optimal", "ratio_optimal"),
    ("forward s", "forward_seconds"), ("reverse s", "reverse_seconds"),
    ("train step s (reverse)", "train_seconds_reverse"), ("train step s (store)", "train_seconds_store"),
]


def _print_verify_table(reports: list[dict]) -> None:
    t = Table(title="revrnn verify-reversal", title_justify="left")
    t.add_column("")
    for r in reports:
        label = r["description"].replace(" in=", "\nin=") if len(reports) > 1 else r["description"]
        t.add_column(escape(label), justify="right")
    for label, key in _VERIFY_ROWS:
        t.add_row(label, *[fmt(r.get(key)) for r in reports])
    err.print(t)
    for r in reports:
        if "error" in r:
            fail(escape(r["error"]))
        elif not r["ok"]:
            detail = f"first mismatch at {r['first_mismatch']}" if r.get("first_mismatch") else "gradients disagree"
            fail(escape(f"{r['description']}: {detail}"))


@app.command("train")
def train_cmd(
    spec: Optional[Path] = typer.Argument(None, help="Experiment spec (YAML). Optional with --resume."),
    set_: list[str] = typer.Option([], "--set", help="Override a spec value: --set model.layers=2 (repeatable)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the merged, validated spec and exit."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run: its directory or a checkpoint."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory \\[spec, $REVRNN_DATA_DIR, ./data]."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Write the run here instead of runs/<name>\\[-N] (refused if it holds a run)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per log line on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the run that --run-dir holds (its checkpoints and metrics are deleted)."),
    nproc: int | None = typer.Option(None, "--nproc", min=1,
                                     help="Train with N processes on this machine (DistributedDataParallel; "
                                          "launches torchrun --standalone --nproc_per_node N)."),
):
    """Train a model from a YAML experiment spec (checkpoints, metrics.jsonl, resumable)."""
    from .runner import train
    from .spec import dump_spec, load_spec
    from .training import distributed

    if print_config:
        if spec is None:
            raise UserError("train --print-config: give a spec file")
        parsed, config = load_spec(spec, set_)
        if json_out:
            emit_json(config)
        else:
            sys.stdout.write(dump_spec(parsed))
        raise typer.Exit(EXIT_OK)
    if nproc is not None:
        raise typer.Exit(_launch_train(nproc, spec, set_, resume, data_dir, run_dir, json_out, overwrite))
    summary = train(spec, set_, resume=resume, data_dir=data_dir, run_dir=run_dir, overwrite=overwrite,
                    json_stdout=json_out)
    if distributed.is_main() and "message" in summary:  # nothing was trained: one line says why
        err.print(escape(f"revrnn: {summary['message']}"), soft_wrap=True)
    elif distributed.is_main():
        _print_summary("training finished" if summary["stopped"] == "finished" else f"stopped ({summary['stopped']})",
                       summary)


def _launch_train(nproc, spec, set_, resume, data_dir, run_dir, json_out, overwrite=False) -> int:
    """``revrnn train --nproc N``: check what can be checked here, then run N processes under torchrun."""
    from .runner import resolve_checkpoint
    from .spec import load_spec
    from .training import distributed
    from .training.checkpoint import check_world_size, load_checkpoint
    from .training.rundir import refuse_existing_run

    if spec is not None:
        load_spec(spec, set_)  # a spec error: one line here, not one per process
    if resume is not None:
        path = resolve_checkpoint(resume)
        check_world_size(load_checkpoint(path), nproc, path)
    elif spec is None:
        raise UserError("train: give a spec file (or --resume RUN_DIR)")
    elif run_dir is not None:
        refuse_existing_run(run_dir, overwrite)
    argv = ["train", *([str(spec)] if spec is not None else [])]
    for value in set_:
        argv += ["--set", value]
    for flag, value in (("--resume", resume), ("--data-dir", data_dir), ("--run-dir", run_dir)):
        if value is not None:
            argv += [flag, str(value)]
    if json_out:
        argv.append("--json")
    if overwrite:
        argv.append("--overwrite")
    return distributed.launch_local(nproc, argv)


@app.command("evaluate")
def evaluate_cmd(
    target: Path = typer.Argument(..., help="A run directory (uses best.pt) or a checkpoint file."),
    split: str = typer.Option("valid", "--split", help="valid or test."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory \\[as trained]."),
    max_batches: Optional[int] = typer.Option(None, "--max-batches", min=1, help="Evaluate only this many batches."),
    beam: Optional[int] = typer.Option(None, "--beam", min=1,
                                       help="Translation: beam size \\[spec's decode.beam_size]; 1 = greedy."),
    max_sentences: Optional[int] = typer.Option(None, "--max-sentences", min=1,
                                                help="Translation: translate only the first N sentences."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
):
    """Perplexity of a checkpoint on a split, with the same fixed-point forward as training;
    for a translation run also beam-search BLEU (translations written to the run directory)."""
    from .runner import evaluate

    if split not in ("valid", "test"):
        raise typer.BadParameter(f"{split!r} is not one of valid, test", param_hint="'--split'")
    result = evaluate(target, split, data_dir=data_dir, max_batches=max_batches, beam=beam,
                      max_sentences=max_sentences)
    if json_out:
        emit_json(result)
    _print_summary(f"evaluation of {result['checkpoint']} on {split}", result)


@app.command("memprofile")
def memprofile_cmd(
    spec: Optional[Path] = typer.Argument(None, help="Experiment spec (default: a 2-layer RevLSTM LM, 650 units)."),
    seq_len: str = typer.Option("35,70,140,280", "--seq-len", help="Comma-separated sequence lengths."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Batch size \\[spec's train.batch_size]."),
    modes: str = typer.Option("bptt,checkpoint,store,reverse", "--modes", help="Comma-separated subset of the modes."),
    set_: list[str] = typer.Option([], "--set", help="Override a spec value (repeatable)."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Timed steps per row (median)."),
    no_peak: bool = typer.Option(False, "--no-peak", help="Skip the peak-memory subprocesses (faster)."),
    plot: Optional[Path] = typer.Option(None, "--plot",
                                        help="Draw peak memory, kept bytes and step time against T "
                                             "per mode to this PNG."),
    extrapolate: Optional[int] = typer.Option(None, "--extrapolate", min=1,
                                              help="Also predict each mode's kept memory at this T from the fit."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per row on stdout."),
):
    """Activation memory of one training step: paper accounting, bytes kept, measured peak, time.

    Lengths run in increasing order; a mode whose kept memory, extrapolated from the shorter
    lengths, would exceed 80% of the available memory is skipped (reported, not run)."""
    from .memory.profile import MODES, available_memory_bytes, growth_per_step, predict, profile_row
    from .plotting import prepare_plot
    from .runner import pick_device
    from .spec import load_spec

    prepare_plot(plot)  # matplotlib and the file name, before any profiling

    try:
        lengths = [int(v) for v in seq_len.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{seq_len!r} is not a comma-separated list of integers (e.g. 35,70,140)",
                                 param_hint="'--seq-len'")
    if not lengths or min(lengths) < 1:
        raise typer.BadParameter("sequence lengths must be positive integers", param_hint="'--seq-len'")
    chosen = [m.strip() for m in modes.split(",")]
    if "" in chosen:
        raise typer.BadParameter(f"{modes!r} has an empty item; expected a comma-separated subset of "
                                 f"{', '.join(MODES)}", param_hint="'--modes'")
    bad = [m for m in chosen if m not in MODES]
    if bad:
        raise typer.BadParameter(f"{', '.join(map(repr, bad))} not among {', '.join(MODES)}", param_hint="'--modes'")
    base = None if spec else DEFAULT_MEMPROFILE_SPEC
    parsed, _ = load_spec(spec, set_, base=base)
    if parsed.task == "translation" and "checkpoint" in chosen:
        chosen.remove("checkpoint")
        err.print("memprofile: the checkpoint mode is profiled for language models only; skipped for translation")
        if not chosen:
            raise UserError(f"{spec}: no mode left to profile (translation supports bptt, store, reverse)")
    if not parsed.model.reversible and {"store", "reverse"} & set(chosen):
        raise UserError(f"{spec}: modes store and reverse need a reversible cell (model.cell revgru or revlstm)")
    device = pick_device(parsed.device)
    B = batch or parsed.train.batch_size
    rows, skipped = [], []
    avail = available_memory_bytes() if device.type == "cpu" else None
    for T in sorted(lengths):
        for mode in chosen:
            guess = predict(rows, mode, T)
            if avail and guess and guess > 0.8 * avail:
                row = {"mode": mode, "seq_len": T, "batch": B, "skipped": True, "predicted_saved_bytes": guess,
                       "available_bytes": avail}
                skipped.append(row)
            else:
                with err.status(f"memprofile: {mode} T={T} ...") if err.is_terminal else _null():
                    row = profile_row(mode, parsed, T, B, device, repeats, measure_peak=not no_peak)
                rows.append(row)
            if json_out:
                emit_json(row)
    _print_memprofile(rows, growth_per_step(rows))
    for row in skipped:
        err.print(f"skipped {row['mode']} at T={row['seq_len']}: it would keep about "
                  f"{row['predicted_saved_bytes'] / 2**30:.1f} GiB (extrapolated), more than 80% of the "
                  f"{row['available_bytes'] / 2**30:.1f} GiB available")
    preds = {}
    if extrapolate:
        preds = {m: predict(rows, m, extrapolate) for m in chosen}
        err.print(f"extrapolated to T={extrapolate}: " + ", ".join(
            f"{m} {p / 2**30:.2f} GiB" for m, p in preds.items() if p is not None))
    if plot is not None:
        from .memory.plot import plot_rows

        extrapolated = {m: (extrapolate, p) for m, p in preds.items() if p is not None}
        path = plot_rows(rows, plot, skipped=skipped, extrapolated=extrapolated, peak_measured=not no_peak)
        err.print(f"plot written to {path}")


DEFAULT_MEMPROFILE_SPEC = {"name": "memprofile", "data": {"dataset": "ptb"},
                           "model": {"cell": "revlstm", "emb_size": 650, "hidden_size": 650, "layers": 2}}


def _mib(v):
    return None if v is None else v / 2**20


def _print_memprofile(rows: list[dict], slopes: dict) -> None:
    t = Table(title="revrnn memprofile (one training step)", title_justify="left")
    sides = any("enc_ratio_used" in r for r in rows)  # translation: encoder and decoder separately
    cols = ["T", "mode", "normal/used", "normal/opt", "used/opt"] + (["enc n/u", "dec n/u"] if sides else [])
    for col in cols + ["kept MiB", "peak MiB", "step s", "tok/s"]:
        t.add_column(col, justify="left" if col == "mode" else "right")
    for r in rows:
        extra = [fmt(r.get("enc_ratio_used")), fmt(r.get("dec_ratio_used"))] if sides else []
        t.add_row(fmt(r["seq_len"]), r["mode"], fmt(r.get("ratio_used")), fmt(r.get("ratio_optimal")),
                  fmt(r.get("used_over_optimal")), *extra, fmt(_mib(r.get("saved_bytes"))),
                  fmt(_mib(r.get("peak_step_bytes"))), fmt(r.get("step_seconds")), fmt(r.get("tokens_per_s")))
    err.print(t)
    if slopes:
        parts = [f"{m} {fmt(v)}" for m, v in sorted(slopes.items(), key=lambda kv: -kv[1])]
        err.print("bytes kept per extra time step: " + ", ".join(parts))
    for r in rows:
        if "error" in r:
            fail(escape(f"peak memory of {r['mode']} at T={r['seq_len']}: {r['error']}"))


def _print_summary(title: str, values: dict) -> None:
    t = Table(title=escape(title), title_justify="left", show_header=False)
    t.add_column("")
    t.add_column("", justify="right")
    for k, v in values.items():
        if k not in ("event",):
            t.add_row(escape(k), escape(fmt(v)))
    err.print(t)


@app.command("generate")
def generate_cmd(
    target: Path = typer.Argument(..., help="A language-model run directory (uses best.pt) or a checkpoint file."),
    words: int = typer.Option(100, "--words", min=1, help="Words to sample."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0,
                                      help="Below 1 sharper, above 1 flatter; 0 always takes the most likely word."),
    seed: Optional[int] = typer.Option(None, "--seed",
                                       help="Sampling seed (default: the run's seed); same seed, same words."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Words to continue (unknown words read as <unk>)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory (default: as trained)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of the text."),
):
    """Sample words from a language-model run, with the same fixed-point forward as evaluation."""
    from .tasks.generate import generate

    result = generate(target, words, temperature, seed, prompt, data_dir)
    if result["unknown_prompt_words"]:
        unknown = " ".join(result["unknown_prompt_words"])
        err.print(escape(f"prompt words not in the vocabulary, read as <unk>: {unknown}"))
    _write_out(lambda: emit_json(result) if json_out else sys.stdout.write(result["text"] + "\n"))
    err.print(escape(f"{len(result['words'])} words from {result['checkpoint']} (seed {result['seed']}, "
                     f"temperature {result['temperature']:g})"))


@app.command("translate")
def translate_cmd(
    target: Path = typer.Argument(..., help="A translation run directory (uses best.pt) or a checkpoint file."),
    input_: str = typer.Option("-", "--input", help="Raw sentences, one per line; - reads standard input."),
    beam: Optional[int] = typer.Option(None, "--beam", min=1,
                                       help="Beam size (default: the spec's decode.beam_size); 1 = greedy."),
    max_len: Optional[int] = typer.Option(None, "--max-len", min=1,
                                          help="Most tokens per translation (default: the spec's decode.max_len)."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1,
                                        help="Sentences decoded together and written at once "
                                             "(default: the spec's decode.batch_size)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data directory (default: as trained)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per input line (with the score) on stdout."),
):
    """Translate raw sentences (tokenised and lowercased as the run's data were): one line out per line in."""
    from .tasks.translate_text import Translator, open_input, read_lines

    stream, name = open_input(input_)
    try:
        translator = Translator(target, beam=beam, max_len=max_len, batch=batch, data_dir=data_dir)
        for rec in translator.stream(read_lines(stream, name)):
            _write_out(lambda: emit_json(rec) if json_out else sys.stdout.write(rec["translation"] + "\n"))
            if rec["line"] % translator.cfg.batch_size == 0:
                sys.stdout.flush()
        sys.stdout.flush()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    err.print(escape(f"translated {translator.lines} line(s) ({translator.empty} empty) from {name} with "
                     f"{translator.run.checkpoint}, beam {translator.cfg.beam_size}, in {translator.seconds:.1f} s"))


@app.command("compare")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with config.yaml and metrics.jsonl)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw validation curves and memory ratios to this PNG."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
):
    """Compare runs: the spec values that differ, and what each reached (perplexity, speed, memory)."""
    from .compare import compare
    from .compare.table import print_table
    from .plotting import prepare_plot

    prepare_plot(plot)  # matplotlib and the file name, before any work
    result = compare(runs)
    if json_out:
        emit_json(result)
    print_table(result)
    if plot is not None:
        from .compare.plot import plot_compare

        err.print(f"plot written to {escape(str(plot_compare(result, plot)))}")


def _write_out(write) -> None:
    """Write to stdout; a reader that went away (``| head``) ends the command quietly, as for any filter."""
    try:
        write()
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise typer.Exit(EXIT_OK)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"revrnn: warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors become one line and exit 2; user errors their own exit code."""
    warnings.formatwarning = _one_line_warning  # a warning is a line for people, not a source excerpt
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="revrnn", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(EXIT_SIGINT)
    except TyperException as e:  # click's usage errors, vendored by typer: one line, exit 2
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None and ctx.command_path != "revrnn" else ""
        message = (e.format_message() if hasattr(e, "format_message") else str(e)).replace("Value error, ", "")
        if message.strip():  # an empty message is click's "no arguments: help shown"
            fail(escape(f"{where}{message}"))
        sys.exit(getattr(e, "exit_code", EXIT_USAGE))
    except UserError as e:
        fail(escape(str(e)))
        sys.exit(e.exit_code)
    except KernelsUnavailable as e:  # REVRNN_KERNELS asks for what this machine cannot give
        fail(escape(str(e)))
        sys.exit(EXIT_USAGE)
    except DataError as e:
        fail(escape(str(e)))
        sys.exit(EXIT_DATA)
    except NonFiniteError as e:  # NaN or infinity reached the fixed-point engine: a diverged run
        fail(escape(str(e)))
        sys.exit(EXIT_NONFINITE)
    except FixedPointError as e:
        fail(escape(str(e)))
        sys.exit(EXIT_NUMERIC)
    except Interrupted as e:
        err.print(escape(f"revrnn: {e}"), soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted")
        sys.exit(EXIT_SIGINT)
    except (MemoryError, RuntimeError) as e:  # a failed allocation is one line; anything else is a bug
        oom = out_of_memory(e)
        if oom is None:
            raise
        fail(escape(str(oom)))
        sys.exit(oom.exit_code)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
