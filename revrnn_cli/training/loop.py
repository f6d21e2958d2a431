"""The one training loop, shared by every task (language modelling, translation).

A task (:class:`Task`) supplies batches, a per-batch loss and an evaluation; this loop owns
everything else, once: SGD with per-batch learning-rate scaling, gradient clipping, the
non-finite guard, the learning-rate schedule, logging, atomic checkpoints (``last`` and ``best``)
holding everything needed for an exact resume (model, optimizer, schedule, RNG states, the data
position and the task's carried state, the logging accumulators), and graceful SIGINT/SIGTERM.

Resuming continues the run so that its metrics are identical to those of an uninterrupted run.
A run that already reached its end (``train.max_steps``, ``train.epochs``, ``train.min_lr``)
trains nothing more (:func:`finished_reason`). Every way of stopping early leaves a checkpoint to
resume from: a signal or a closed stdout (``--json | head``) stops at the next step boundary; a
second signal abandons the current step and saves the state from before it, which the loop keeps
for that purpose (the RNG and task states are all a step changes before its parameter update).

Under torchrun (:mod:`.distributed`) the same loop runs on every rank, each on its part of every
batch (the task shards it). Per step, two all-reduces: before the backward pass, the normalizer
below (and whether a loss already known is finite); after it, the ranks' token counts, losses
(a language model's reverse mode computes its loss in the backward pass), correct predictions,
paper bits, non-finite flags and stop requests, so that every rank takes the same decisions at the
same step (stop, raise, log) and the logged values are those of the whole batch.
The loss each rank backpropagates is ``loss_sum * world_size / global_tokens``: DDP averages the
gradients over the ranks, which gives every rank ``sum over ranks of d loss_sum / global_tokens``,
the gradient of one process on the whole batch (``loss_sum / tokens``). A task that normalises by
another count (``StepOutput.normalizer``, e.g. sentences) gets the same treatment: the count must be
additive over the ranks' parts of the batch, and the global sum is what the loss divides by. Clipping then sees the global norm. Only rank 0
writes metrics and checkpoints; a checkpoint holds every rank's RNG and task state (the LM's
carried hidden state differs per rank) and resumes with the same world size only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch

from ..console import err
from ..engine.fixed_point import STATE_BOUND, STATE_WARN
from ..errors import EXIT_NONFINITE, EXIT_SIGINT, EXIT_SIGPIPE, UserError
from ..memory.accounting import SIDES, all_ratios, memory_ratios
from . import distributed
from .checkpoint import (
    check_world_size,
    config_hash,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ..spec import TrainConfig
from .metrics import MetricsLogger
from .progress import Progress
from .signals import GracefulStop


@dataclass
class StepOutput:
    loss_sum: torch.Tensor  # summed loss over the batch's targets (the graph root)
    tokens: int
    lr_scale: float = 1.0  # e.g. AWD-LSTM's seq_len / bptt
    correct: int = 0
    bits: dict = field(default_factory=dict)  # the paper's accounting of this batch, if reversible
    normalizer: float | None = None  # what the gradient's loss divides loss_sum by: tokens (LM) or sentences (NMT)
    deferred: bool = False  # loss_sum and correct (a tensor) are filled by the backward pass


class Task(Protocol):
    model: torch.nn.Module

    def epoch_size(self) -> int | None: ...
    def batches(self, epoch: int, start: int) -> Iterator[tuple[int, Any]]: ...
    def train_step(self, batch: Any) -> StepOutput: ...
    def evaluate(self, split: str, max_batches: int | None = None) -> dict: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class NonFiniteError(UserError):
    exit_code = EXIT_NONFINITE


class Interrupted(Exception):
    """The run stopped early on request; ``str()`` says why, after which step, and what was saved."""

    def __init__(self, exit_code: int, checkpoint: Path | None, message: str | None = None):
        super().__init__(message or f"interrupted; saved {checkpoint}")
        self.exit_code, self.checkpoint = exit_code, checkpoint


def finished_reason(cfg: TrainConfig, loop: dict) -> str | None:
    """Why a run whose loop state is ``loop`` has nothing left to train under ``cfg``; None if it has.

    The same conditions end :meth:`Trainer.fit`; checked before a resume does anything, so that
    resuming a finished run trains no extra step and rewrites nothing.
    """
    if loop.get("finished"):
        return f"its learning rate fell below train.min_lr={cfg.min_lr} (step {loop['step']})"
    if cfg.max_steps and loop["step"] >= cfg.max_steps:
        return f"it reached train.max_steps={cfg.max_steps} (step {loop['step']})"
    if loop["epoch"] >= cfg.epochs:
        return f"it trained all train.epochs={cfg.epochs} epochs (step {loop['step']})"
    return None


@dataclass
class LoopState:
    epoch: int = 0
    position: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps done in total
    lr: float = 0.0
    best_val: float = math.inf
    val_history: list = field(default_factory=list)
    acc: dict = field(default_factory=dict)  # running sums of the current logging interval
    finished: bool = False
    max_state: float = 0.0  # largest |state| of a reversible model so far


def _interval_zero() -> dict:
    return {"loss": 0.0, "tokens": 0, "correct": 0, "batches": 0, "gnorm": 0.0, "seconds": 0.0,
            **{k: 0.0 for k in _BITS}}


class Trainer:
    def __init__(self, cfg: TrainConfig, task: Task, run_dir: Path, config: dict, logger: MetricsLogger,
                 progress: bool | None = None):
        self.cfg, self.task, self.run_dir, self.config, self.log = cfg, task, run_dir, config, logger
        self.dist = distributed.context()
        if not self.dist.is_data_parallel(task.model):
            raise UserError(f"{type(task).__name__} does not support multi-process training: its model is not "
                            "wrapped with distributed.context().data_parallel() (see revrnn_cli.training.distributed)")
        self.progress_enabled = progress if self.dist.is_main else False
        self.params = [p for p in task.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.state = LoopState(lr=cfg.lr, acc=_interval_zero())
        self._warned = False
        self.first_step = 0  # the step this process started from (a resumed run's checkpoint step)
        self._before_step: dict | None = None  # task and RNG states at the last step boundary

    # ---- checkpoints ----------------------------------------------------------------------------
    def checkpoint_payload(self, mine: dict | None = None) -> dict | None:
        """What a checkpoint holds; a collective under torchrun (None on ranks other than 0).

        ``mine``: this rank's task and RNG states to save instead of the current ones (those of
        the last step boundary, when a step is abandoned).
        """
        s, d = self.state, self.dist
        mine = mine or {"task": self.task.state_dict(), "rng": rng_state()}
        ranks = d.gather_object(_to_cpu(mine)) if d.distributed else [mine]
        if not d.is_main:
            return None
        payload = {
            "config": self.config,
            "config_hash": config_hash(self.config),
            "model": self.task.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "loop": {"epoch": s.epoch, "position": s.position, "step": s.step, "lr": s.lr, "best_val": s.best_val,
                     "val_history": list(s.val_history), "acc": dict(s.acc), "finished": s.finished,
                     "max_state": s.max_state, "metrics_bytes": self.log.size},
            "task": ranks[0]["task"],
            "rng": ranks[0]["rng"],
            "world_size": d.world_size,
        }
        if d.distributed:
            payload["ranks"] = ranks  # rank r's {"task", "rng"}
        return payload

    def save(self, name: str, mine: dict | None = None) -> Path:
        """Write ``name.pt`` (rank 0); every rank returns once it is on disk."""
        path = self.run_dir / f"{name}.pt"
        payload = self.checkpoint_payload(mine)
        if payload is not None:
            save_checkpoint(path, payload)
        self.dist.barrier()  # no rank may exit (and make torchrun stop rank 0) before the file is complete
        return path

    def restore(self, payload: dict, where: Path | str = "checkpoint") -> None:
        d = self.dist
        check_world_size(payload, d.world_size, where)
        self.task.model.load_state_dict(payload["model"])
        self.opt.load_state_dict(payload["optimizer"])
        loop = payload["loop"]
        self.state = LoopState(loop["epoch"], loop["position"], loop["step"], loop["lr"], loop["best_val"],
                               list(loop["val_history"]), dict(loop["acc"]), loop.get("finished", False),
                               loop.get("max_state", 0.0))
        mine = payload["ranks"][d.rank] if d.distributed else payload
        self.task.load_state_dict(mine["task"])
        set_rng_state(mine["rng"])
        self.first_step = self.state.step

    # ---- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, s = self.cfg, self.state
        with GracefulStop(announce=self.dist.is_main) as stop:
            self._mark_boundary()
            try:
                while s.epoch < cfg.epochs and not s.finished:
                    if cfg.max_steps and s.step >= cfg.max_steps:
                        return self._summary(stopped="max_steps")  # resumed at its end: no extra step
                    size = self.task.epoch_size()
                    if cfg.steps_per_epoch:
                        size = min(size or cfg.steps_per_epoch, cfg.steps_per_epoch)
                    with Progress(size, f"epoch {s.epoch + 1}/{cfg.epochs}", self.progress_enabled) as bar:
                        bar.update(s.position)
                        for i, batch in self.task.batches(s.epoch, s.position):
                            if cfg.steps_per_epoch and i >= cfg.steps_per_epoch:
                                break
                            if self._train_step(batch, i, bar, stop):
                                code = int(self.dist.all_reduce_max(stop.exit_code))  # the signal some rank got
                                with stop.protected():
                                    path = self.save("last")
                                raise Interrupted(code, path, self._stopped_message(stop, path))
                            if cfg.max_steps and s.step >= cfg.max_steps:
                                with stop.protected():
                                    self.save("last")
                                return self._summary(stopped="max_steps")
                    self._end_epoch(stop)
            except KeyboardInterrupt:  # a second signal, in the middle of a step
                raise self._abandon_step(stop) from None
        return self._summary(stopped="finished")

    # ---- stopping early ---------------------------------------------------------------------------
    def _mark_boundary(self) -> None:
        """Remember the task and RNG states at a step boundary (single process: see :meth:`_abandon_step`).

        Until the parameter update, a step changes only these (the data position, the carried
        hidden state, dropout and segment-length draws); with them, a step abandoned half-way can
        still be saved as the exact state before it. They are small (no parameters), and copied,
        since the next step may update tensors in place.
        """
        if not self.dist.distributed:
            self._before_step = {"task": _clone(self.task.state_dict()), "rng": rng_state()}

    def _abandon_step(self, stop: GracefulStop) -> Interrupted:
        """Save the state before the interrupted step (if this process trained any) and say so."""
        s = self.state
        code, what = stop.exit_code or EXIT_SIGINT, stop.reason or "interrupted"
        if self.dist.distributed:  # the ranks cannot agree on a checkpoint in the middle of a step
            return Interrupted(code, None, f"{what}: stopped at once without saving (a multi-process run saves "
                                           f"only at a step boundary); {self.run_dir / 'last.pt'} is the latest")
        if s.step == self.first_step:
            kept = self.run_dir / "last.pt"
            saved = (f"{kept} is unchanged" if kept.is_file() else "nothing was trained, so nothing was saved")
            return Interrupted(code, kept if kept.is_file() else None,
                               f"{what}: stopped before the first step of this run; {saved}")
        with stop.protected():
            path = self.save("last", mine=self._before_step)
        return Interrupted(code, path, f"{what}: abandoned step {s.step + 1}; saved the state after step {s.step} "
                                       f"to {path} (continue with: revrnn train --resume {self.run_dir})")

    def _stopped_message(self, stop: GracefulStop, path: Path) -> str:
        return (f"{stop.reason or 'interrupted'}: stopped after step {self.state.step}; saved {path} "
                f"(continue with: revrnn train --resume {self.run_dir})")

    def _train_step(self, batch, i: int, bar: Progress, stop: GracefulStop) -> bool:
        """One optimizer step; returns whether to stop now (a signal; the same answer on every rank)."""
        cfg, s, acc, d = self.cfg, self.state, self.state.acc, self.dist
        t0 = time.perf_counter()
        self.task.model.train()
        out = self.task.train_step(batch)
        if d.distributed:  # the global normalizer (and a loss known now: its finiteness) before backward
            local_ok = out.deferred or math.isfinite(float(out.loss_sum.detach()))
            norm, bad = d.all_reduce_sum([out.normalizer or out.tokens, 0.0 if local_ok else 1.0])
            self._check_loss(bad == 0)
            loss = out.loss_sum * (d.world_size / max(norm, 1))  # DDP's average: the global mean
        else:
            loss = out.loss_sum / max(out.normalizer or out.tokens, 1)
            if not out.deferred:
                self._check_loss(bool(torch.isfinite(loss.detach())))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        # a deferred loss has its value only now; the update is still to come
        if d.distributed:
            g = self._reduce_step(out, stop)
        else:
            local = float(out.loss_sum.detach())
            g = _StepTotals(out.tokens, local, int(out.correct), {k: float(out.bits.get(k, 0.0)) for k in _BITS},
                            math.isfinite(local), False)
            loss = out.loss_sum.detach() / max(out.normalizer or out.tokens, 1)
        if out.deferred:
            self._check_loss(g.finite)
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, cfg.clip if cfg.clip > 0 else math.inf)
        if not math.isfinite(float(gnorm)):
            raise NonFiniteError(f"non-finite gradient norm at epoch {s.epoch + 1}, step {s.step + 1}; "
                                 f"stopped without updating{self._last_good()}")
        with stop.protected():  # from here to the boundary: no half-applied step
            for group in self.opt.param_groups:
                group["lr"] = s.lr * out.lr_scale
            self.opt.step()
            for group in self.opt.param_groups:
                group["lr"] = s.lr
            s.step += 1
            s.position = i + 1
            acc["loss"] += g.loss_sum
            acc["tokens"] += g.tokens
            acc["correct"] += g.correct
            acc["batches"] += 1
            acc["gnorm"] += float(gnorm)
            acc["seconds"] += time.perf_counter() - t0
            for k in _BITS:
                acc[k] = acc.get(k, 0.0) + g.bits[k]  # .get: checkpoints from before the per-side keys
            self._watch_state(float(out.bits.get("max_state", 0.0)))
            bar.update(1, loss=g.loss_sum / max(g.tokens, 1) if d.distributed else float(loss.detach()), lr=s.lr)
            if s.step % cfg.log_interval == 0:
                self._log_interval()
            if cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0:
                self.save("last")
            self._mark_boundary()
        if self.log.stdout_closed:  # rank 0's reader went away: the others learn it at the next step
            stop.request(EXIT_SIGPIPE, "stdout was closed")
        return g.stop if d.distributed else stop.requested

    def _reduce_step(self, out: StepOutput, stop: GracefulStop) -> _StepTotals:
        """The whole batch's totals, from one all-reduce over the ranks (after the backward pass,
        where a deferred loss gets its value)."""
        local = float(out.loss_sum.detach())
        finite = math.isfinite(local)
        v = self.dist.all_reduce_sum([out.tokens, local if finite else 0.0, int(out.correct), 0.0 if finite else 1.0,
                                      1.0 if stop.requested else 0.0, *(float(out.bits.get(k, 0.0)) for k in _BITS)])
        return _StepTotals(int(v[0]), v[1], int(v[2]), dict(zip(_BITS, v[5:])), v[3] == 0, v[4] > 0)

    def _check_loss(self, finite: bool) -> None:
        if not finite:
            s = self.state
            raise NonFiniteError(f"non-finite training loss at epoch {s.epoch + 1}, step {s.step + 1}; "
                                 f"stopped without updating{self._last_good()}")

    def _last_good(self) -> str:
        last = self.run_dir / "last.pt"
        return f" (last good checkpoint: {last})" if last.is_file() else " (no checkpoint was saved yet)"

    def _log_interval(self) -> None:
        s, acc = self.state, self.state.acc
        if not acc["batches"]:
            return
        loss = acc["loss"] / max(acc["tokens"], 1)
        rec = {"event": "train", "epoch": s.epoch + 1, "step": s.step, "loss": loss, "ppl": _ppl(loss), "lr": s.lr,
               "grad_norm": acc["gnorm"] / acc["batches"], "tokens_per_s": acc["tokens"] / max(acc["seconds"], 1e-9)}
        if self.task_reports_accuracy():
            rec["accuracy"] = acc["correct"] / max(acc["tokens"], 1)
        rec.update(all_ratios(acc))
        rec.update(self._health(acc))
        self.log.log(rec)
        s.acc = _interval_zero()

    def _watch_state(self, max_state: float) -> None:
        """Track the largest |state| of the interval and warn once when it grows toward the bound."""
        acc = self.state.acc
        acc["max_state"] = max(acc.get("max_state", 0.0), max_state)
        self.state.max_state = max(self.state.max_state, max_state)
        if max_state > STATE_WARN and not self._warned and self.dist.is_main:
            self._warned = True
            err.print(f"revrnn: warning: a recurrent state reached |{max_state:.4g}| (healthy states stay near 1; "
                      f"the fixed-point bound is {STATE_BOUND:.4g}): units whose forget gates quantise to exactly 1 "
                      "integrate their input. Remedies: the bounded RevLSTM update (model.cell_update=bounded), "
                      "harder gradient clipping (train.clip) or a lower train.lr (README: Training stability)",
                      markup=False, highlight=False, soft_wrap=True)

    def _health(self, acc: dict) -> dict:
        """Largest |state| and the fraction of forget gates quantised to exactly 1, for reversible models."""
        if not acc.get("gates"):
            return {}
        mx = acc.get("max_state", 0.0)
        if self.dist.distributed:
            mx = float(self.dist.all_reduce_max(mx))
        return {"max_state": mx, "saturated_gates": acc["saturated_gates"] / acc["gates"]}

    def task_reports_accuracy(self) -> bool:
        return bool(getattr(self.task, "reports_accuracy", False))

    def _end_epoch(self, stop: GracefulStop) -> None:
        cfg, s = self.cfg, self.state
        with stop.protected():
            self._log_interval()
        val = self.task.evaluate("valid", cfg.eval_batches)  # may be abandoned: it changes no state
        with stop.protected():
            s.val_history.append(val["loss"])
            improved = val["loss"] < s.best_val
            if improved:
                s.best_val = val["loss"]
            self.log.log({"event": "valid", "epoch": s.epoch + 1, "step": s.step, "lr": s.lr, "best": improved,
                          **val})
            s.lr = self._schedule(s.lr, s.val_history)
            s.epoch += 1
            s.position = 0
            if cfg.min_lr and s.lr < cfg.min_lr:
                s.finished = True
            if improved:
                self.save("best")
            self.save("last")
            self._mark_boundary()

    def _schedule(self, lr: float, history: list[float]) -> float:
        cfg = self.cfg
        if cfg.schedule == "plateau":
            # the paper code's (AWD-LSTM's) rule: after more than `nonmono` epochs, divide when the
            # loss is worse than the best of all but the last `nonmono` epochs
            if len(history) > cfg.nonmono and history[-1] > min(history[: -cfg.nonmono] or [math.inf]):
                return lr / cfg.lr_decay
        elif cfg.schedule == "halve_on_rise":
            if len(history) > 1 and history[-1] > history[-2]:
                return lr / cfg.lr_decay
        return lr

    def _summary(self, stopped: str) -> dict:
        """The ``end`` record; the best validation values only once an epoch ended (there are none before)."""
        s = self.state
        best = {"best_valid_loss": s.best_val, "best_valid_ppl": _ppl(s.best_val)} if s.val_history else {}
        out = {"event": "end", "stopped": stopped, "epochs": s.epoch, "steps": s.step, "lr": s.lr, **best,
               "run_dir": str(self.run_dir)}
        if s.max_state:
            out["max_state"] = s.max_state
        return out


# the paper's accounting, in total and (translation) per side
_BITS = tuple(f"{side}{k}" for side in ("", *(f"{s}_" for s in SIDES))
              for k in ("normal_bits", "used_bits", "optimal_bits")) + ("gates", "saturated_gates")


@dataclass
class _StepTotals:
    """One step's sums over the whole batch (all ranks)."""

    tokens: int
    loss_sum: float
    correct: int
    bits: dict
    finite: bool
    stop: bool


def _clone(obj: Any) -> Any:
    """A copy whose tensors share no memory with ``obj``'s."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def _to_cpu(obj: Any) -> Any:
    """A copy with every tensor on the CPU (what is gathered to rank 0 must unpickle there)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 50 else math.inf


__all__ = ["Interrupted", "LoopState", "NonFiniteError", "StepOutput", "Task", "Trainer", "finished_reason",
           "memory_ratios"]
