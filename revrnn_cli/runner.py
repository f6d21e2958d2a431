"""Run experiments: what ``revrnn train`` and ``revrnn evaluate`` do, without the command line.

    revrnn train experiments/quickstart.yaml
    revrnn train experiments/ptb_revlstm_small.yaml --set train.epochs=2 --json
    revrnn train --resume runs/ptb_revlstm_small          # continue from runs/…/last.pt
    revrnn evaluate runs/ptb_revlstm_small --split test --json

A run directory holds ``config.yaml`` (the merged, validated spec: feeding it back reproduces the
run), ``environment.json`` (versions, seed, device, git commit), ``metrics.jsonl`` (one JSON object
per log line, always written) and the checkpoints ``last.pt`` and ``best.pt``.
"""

from __future__ import annotations

import gc
import math
import random
from contextlib import nullcontext
from pathlib import Path

import torch

from .console import emit_json, err
from .engine import deterministic_settings, native
from .errors import UserError
from .spec import ExperimentSpec, load_spec, load_yaml
from .tasks.lm import LMTask
from .training import distributed
from .training.checkpoint import RUN_KEYS, check_compatible, check_world_size, config_hash, load_checkpoint
from .memory.accounting import all_ratios
from .training.lock import ensure_free
from .training.loop import Trainer, finished_reason
from .training.metrics import MetricsLogger, truncate_metrics
from .training.rundir import RunDirectory, ensure_writable, environment_record, write_config, write_environment


# what a resumed run may change: how long it trains, where it writes, where the data lie and whether
# their counts are checked
RESUME_MAY_CHANGE = ("train.epochs", "train.max_steps", "train.log_interval", "train.checkpoint_every", "output",
                     "data.data_dir", "data.download", "data.verify", "device")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def build_task(spec: ExperimentSpec, device: torch.device):
    """The task the spec describes: language modelling, or translation (``task: translation``)."""
    if spec.task == "translation":
        from .tasks.translation import TranslationTask

        return TranslationTask(spec, device)
    return LMTask(spec, device)


def memory_summary(task) -> dict:
    """The paper's ratios for the task's last batch (encoder and decoder separately for translation)."""
    return all_ratios(task.memory_stats())


def resolve_checkpoint(path: Path, prefer: str = "last") -> Path:
    """A run directory resolves to its ``last.pt`` (or ``best.pt``); a file is taken as it is."""
    path = Path(path)
    if path.is_dir():
        for name in (prefer, "best" if prefer == "last" else "last"):
            if (path / f"{name}.pt").is_file():
                return path / f"{name}.pt"
        raise UserError(f"{path}: no last.pt or best.pt in this run directory")
    if not path.is_file():
        raise UserError(f"{path}: no such run directory or checkpoint")
    return path


def train(spec_path: Path | None, overrides: list[str], *, resume: Path | None = None, data_dir: str | None = None,
          run_dir: Path | None = None, overwrite: bool = False, json_stdout: bool = False,
          progress: bool | None = None) -> dict:
    """Train from a spec (or resume a run); returns the final summary (also logged as ``end``).

    The run directory is claimed (created or checked, and locked) before any work; a new run that
    fails before its first step leaves no directory behind (:class:`RunDirectory`). A resumed run
    continues in its own directory, from the spec in its ``config.yaml`` (edits there count, and
    are refused like ``--set`` if they change the experiment); one that is already finished
    trains nothing and changes nothing.
    """
    dist = distributed.init()  # under torchrun: join the process group; otherwise rank 0 of 1
    if data_dir is not None:
        overrides = [*overrides, f"data.data_dir={data_dir}"]
    payload = ckpt_path = None
    if resume is not None:
        if overwrite:
            raise UserError("--overwrite starts a new run in place of an old one; it cannot be combined with --resume")
        dist.on_main(ensure_free, resume if Path(resume).is_dir() else Path(resume).parent)  # a run in progress?
        ckpt_path = dist.on_main(resolve_checkpoint, resume)  # rank 0 reads it, every rank gets it
        if run_dir is not None and Path(run_dir).resolve() != ckpt_path.parent.resolve():
            raise UserError(f"--run-dir {run_dir}: a resumed run continues in its own directory {ckpt_path.parent}; "
                            f"drop --run-dir (or copy the run there and resume the copy)")
        payload = dist.on_main(load_checkpoint, ckpt_path, RUN_KEYS)
        check_world_size(payload, dist.world_size, ckpt_path)
        spec, config = _resume_spec(dist, spec_path, overrides, payload, ckpt_path)
        done = finished_reason(spec.train, payload["loop"])
        if done is not None:
            return _nothing_to_train(ckpt_path, payload, done, json_stdout and dist.is_main)
        claim = lambda: RunDirectory.existing(ckpt_path.parent)  # noqa: E731
    else:
        if spec_path is None:
            raise UserError("train: give a spec file (or --resume RUN_DIR)")
        spec, config = load_spec(spec_path, overrides)
        claim = lambda: RunDirectory.new(spec.output.runs_dir, spec.output.name or spec.name,  # noqa: E731
                                         explicit=run_dir, overwrite=overwrite)
    held: dict = {}

    def claimed() -> Path:
        held["run"] = claim()  # only rank 0 writes, so only rank 0 holds the directory
        return held["run"].path

    out_dir = dist.on_main(claimed)
    with held.get("run") or nullcontext() as run:
        return _train_in(out_dir, run, spec, config, payload, ckpt_path, dist, json_stdout, progress)


def _resume_spec(dist, spec_path, overrides, payload, ckpt_path) -> tuple[ExperimentSpec, dict]:
    """The spec a resumed run follows: a spec file if given, else the run's ``config.yaml`` (read
    on rank 0: only the first node needs the run directory), else the checkpoint's own; with the
    overrides, and compatible with the checkpoint (:data:`RESUME_MAY_CHANGE`)."""
    if spec_path is not None:
        spec, config = load_spec(spec_path, overrides)
        here = f"in {spec_path}"
    else:
        saved = ckpt_path.parent / "config.yaml"
        base = dist.on_main(lambda: load_yaml(saved) if saved.is_file() else None)
        where = str(saved) if base is not None else str(ckpt_path)
        spec, config = load_spec(None, overrides, base=base if base is not None else payload["config"], where=where)
        here = "here" if base is None else (f"in {saved}" + (" with --set" if overrides else ""))
    check_compatible(payload, config, ckpt_path, ignore=RESUME_MAY_CHANGE, source=here)
    return spec, config


def _nothing_to_train(ckpt_path: Path, payload: dict, reason: str, json_stdout: bool) -> dict:
    """A finished run asked to resume: no step, no write; say why and how to go on."""
    loop = payload["loop"]
    summary = {"event": "end", "stopped": "already_finished", "epochs": loop["epoch"], "steps": loop["step"],
               "run_dir": str(ckpt_path.parent),
               "message": f"nothing to train: {ckpt_path.parent} is finished, {reason}; to train on, raise "
                          f"train.epochs or train.max_steps (or lower train.min_lr) with --set"}
    if json_stdout:
        emit_json(summary)
    return summary


def _train_in(out_dir: Path, run: RunDirectory | None, spec, config, payload, ckpt_path, dist, json_stdout,
              progress) -> dict:
    """Build everything, then train in the claimed ``out_dir`` (``run`` is None on ranks other than 0)."""
    device = pick_device(spec.device)
    deterministic_settings()
    seed_everything(spec.seed)
    task = build_task(spec, device)
    kernels = native.describe(device) if spec.model.reversible else None
    if kernels and dist.is_main:
        err.print(f"revrnn: reversible steps run on the {kernels}", markup=False, highlight=False)
    if dist.distributed:
        seed_everything(distributed.rank_seed(spec.seed, dist.rank))  # each rank its own dropout masks
    if dist.is_main:  # only rank 0 writes, and only now that the data and the model are there
        write_config(out_dir, config)  # a resumed run's too: it may change train.epochs and the like
        if payload is None:
            write_environment(out_dir, {**environment_record(spec.seed, str(device)), "world_size": dist.world_size,
                                        "kernels": kernels})
        else:
            truncate_metrics(out_dir / "metrics.jsonl", payload["loop"].get("metrics_bytes"))
    with MetricsLogger(out_dir / "metrics.jsonl" if dist.is_main else None, json_stdout and dist.is_main) as log:
        trainer = Trainer(spec.train, task, out_dir, config, log, progress)
        if payload is not None:
            trainer.restore(payload, ckpt_path)
            log.log({"event": "resume", "checkpoint": str(ckpt_path), "epoch": trainer.state.epoch + 1,
                     "step": trainer.state.step})
        else:
            log.log({"event": "start", "run_dir": str(out_dir), "name": spec.name, "device": str(device), "kernels": kernels,
                     "config_hash": config_hash(config), "parameters": sum(p.numel() for p in task.model.parameters())})
        gc.freeze()  # the model, data and vocabulary live for the whole run: the collector need not rescan them
        try:
            summary = trainer.fit()
        finally:
            if run is not None:
                run.trained = run.trained or trainer.state.step > trainer.first_step
        final = task.evaluate("valid", spec.train.eval_batches)
        summary.update({"valid_loss": final["loss"], "valid_ppl": final["ppl"]})
        if "accuracy" in final:
            summary["valid_accuracy"] = final["accuracy"]
        summary.update(memory_summary(task) if spec.model.reversible else {})
        log.log(summary)
    return summary


def evaluate(target: Path, split: str = "valid", *, data_dir: str | None = None, which: str = "best",
             max_batches: int | None = None, beam: int | None = None, max_sentences: int | None = None) -> dict:
    """Perplexity (and accuracy on synthetic tasks) of a checkpoint on one split; for translation
    also BLEU of beam-search (``beam``, default the spec's; 1 = greedy) translations, which are
    written to ``<run>/translations/``."""
    ckpt_path = resolve_checkpoint(target, prefer=which)
    payload = load_checkpoint(ckpt_path, RUN_KEYS)
    overrides = [f"data.data_dir={data_dir}"] if data_dir else []
    spec, config = load_spec(None, overrides, base=payload["config"], where=str(ckpt_path))
    if spec.task == "translation":  # translations are written next to the checkpoint: check before decoding
        out = ckpt_path.parent / "translations"
        ensure_writable(out if out.is_dir() else ckpt_path.parent, "directory",
                        ": evaluate writes the translations there")
    device = pick_device(spec.device)
    deterministic_settings()
    seed_everything(spec.seed)
    task = build_task(spec, device)
    task.model.load_state_dict(payload["model"])
    result = task.evaluate(split, max_batches)
    out = {"checkpoint": str(ckpt_path), "split": split, "config_hash": config_hash(payload["config"]),
           "loss": result["loss"], "ppl": result["ppl"], "tokens": result["tokens"],
           "epoch": payload["loop"]["epoch"], "step": payload["loop"]["step"]}
    if "accuracy" in result:
        out["accuracy"] = result["accuracy"]
    if spec.model.reversible:
        out.update(memory_summary(task))
    if spec.task == "translation":
        out.update(_bleu(task, spec, split, beam, max_sentences, ckpt_path))
    if not math.isfinite(out["loss"]):
        out["loss"] = None
    return out


def _bleu(task, spec, split: str, beam: int | None, limit: int | None, ckpt_path: Path) -> dict:
    from .tasks.decode import score, translate_split, write_translations

    beam = spec.decode.beam_size if beam is None else beam
    if beam < 1:
        raise UserError(f"--beam must be at least 1 (1 = greedy), got {beam}")
    data = task.corpus.splits[split]
    hyps, seconds = translate_split(task.model, data, task.corpus.tgt_vocab, spec.decode, task.device, beam, limit)
    res = score(hyps, data, task.corpus.tgt_lang)
    stem = f"{split}.{ckpt_path.stem}.{'greedy' if beam == 1 else f'beam{beam}'}"
    if limit is not None and limit < len(data):
        stem += f".first{limit}"  # never overwrite a whole split's translations with a part
    paths = write_translations(ckpt_path.parent / "translations", stem, hyps, res.pop("detok"))
    return {**res, "beam": beam, "translations": str(paths[1]), "decode_seconds": seconds}


__all__ = ["evaluate", "pick_device", "resolve_checkpoint", "train"]
