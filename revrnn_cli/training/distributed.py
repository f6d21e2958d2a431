"""Multi-process training with DistributedDataParallel, launched by ``torchrun``: one concern, here.

    torchrun --nproc_per_node 2 -m revrnn_cli train SPEC            # one machine, 2 processes
    revrnn train --nproc 2 SPEC                                     # the same, launched for you
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 \\
             --rdzv_backend c10d --rdzv_endpoint HOST:29400 -m revrnn_cli train SPEC   # node 0 (node 1: --node_rank 1)

Without ``torchrun`` (no ``RANK`` / ``WORLD_SIZE`` in the environment) everything here is a no-op:
the context is rank 0 of 1, :func:`shard` returns the whole range, reductions return their input.

What :func:`init` does under ``torchrun``: selects the GPU ``LOCAL_RANK`` (when there is one for
it), joins the process group (``env://``: ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``WORLD_SIZE``, set by torchrun) and registers its teardown at exit. The default group is **gloo**:
it carries the small control traffic on the CPU (per-step token counts and flags, metrics, the run
directory's name, checkpoint RNG states), whatever the device. The gradients of a model on a GPU go
over a second group with the **nccl** backend, created by :meth:`DistContext.data_parallel`; on the
CPU they go over gloo.

**The contract a task follows** (the shared :class:`~revrnn_cli.training.loop.Trainer` relies on it;
:class:`~revrnn_cli.tasks.lm.LMTask` is the reference):

1. *Where it learns rank and world size*: from the module-level accessor :func:`context`, read in
   the task's constructor. The runner calls :func:`init` before it builds the task, so the context
   is ready; nothing is passed through ``build_task``.
2. *Data*: every rank walks the same global batches in the same order (same number per epoch, same
   ``lr_scale``) and trains on its own contiguous part of each: ``batch[..., ctx.shard(B)]``
   (:func:`shard`). A language model shards the batch (column) dimension of the token stream; a
   translation task shards each batch of sentences. Where uneven parts would change the result
   (the LM's stream columns carry hidden states), require ``B % world_size == 0`` and name the key.
3. *Training forward through DDP*: wrap the model once, ``self.net = ctx.data_parallel(self.model)``,
   and call the training forward through it (``self.net.segment(...)``; any method name works).
   Outside torchrun ``data_parallel`` returns the model itself. The Trainer refuses to train a
   multi-process run whose task did not do this (the gradients would not be averaged).
4. *Loss*: ``train_step`` returns the **rank's** summed loss and its token count (and, if the loss
   is normalised by something else, the rank's ``normalizer``, e.g. its number of sentences: a
   count that adds up over the ranks). The Trainer all-reduces the count and backpropagates
   ``loss_sum * world_size / global_count``; DDP averages over the ranks, so every rank ends with
   ``sum over ranks of d loss_sum / global_count``, the gradient one process gets from the whole
   batch (``loss_sum / count``). A task must not normalise the loss itself.
5. *Evaluation* returns the **global** result on every rank (all ranks use it for the learning-rate
   schedule): shard the batches and add the sums with :meth:`DistContext.all_reduce_sum`, or
   evaluate everything on every rank. A rank whose part is empty contributes zeros.
6. *State*: ``state_dict`` may differ between ranks (the LM's carried hidden state does): the
   Trainer gathers every rank's, with every rank's RNG state, into rank 0's checkpoint, and
   restores each rank its own. A run resumes with the same world size only.

Only rank 0 writes (run directory, config, environment, metrics, stdout, progress, checkpoints).
"""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import EXIT_USAGE, UserError

__all__ = ["DistContext", "context", "destroy", "init", "is_main", "launch_local", "launched_by_torchrun",
           "rank_seed", "shard"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def shard(n: int, rank: int, world_size: int) -> slice:
    """The contiguous part of ``range(n)`` that rank ``rank`` of ``world_size`` takes.

    Parts cover ``range(n)`` in rank order without overlap; their sizes differ by at most one (the
    first ``n % world_size`` ranks take one more), so a part is empty only when ``n < world_size``.
    ``shard(20, 1, 2) == slice(10, 20)``; ``shard(5, r, 2)`` gives ``0:3`` and ``3:5``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    if n < 0:
        raise ValueError(f"cannot shard a negative size {n}")
    q, r = divmod(n, world_size)
    start = rank * q + min(rank, r)
    return slice(start, start + q + (1 if rank < r else 0))


def rank_seed(seed: int, rank: int) -> int:
    """A per-rank seed for dropout masks (ranks must not draw the same masks for their parts)."""
    return (seed + 0x9E3779B1 * (rank + 1)) % 2**63


def launched_by_torchrun() -> bool:
    """True when the environment names this process's rank (torchrun, or any ``env://`` launcher)."""
    return all(k in os.environ for k in _ENV[:2])


def _dist():
    import torch.distributed as dist

    return dist


@dataclass
class DistContext:
    """This process's place in the run; the single-process default is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    _grad_groups: dict = field(default_factory=dict, repr=False)
    _wrapped: Any = field(default_factory=weakref.WeakSet, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``range(n)`` (see :func:`shard`)."""
        return shard(n, self.rank, self.world_size)

    # ---- collectives (all ranks must call them, in the same order) -------------------------------
    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks, in float64 (token counts stay exact below 2**53)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        _dist().all_reduce(t)
        return t.tolist()

    def all_reduce_max(self, value: float) -> float:
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
        return float(t.item())

    def barrier(self) -> None:
        if self.distributed:
            _dist().barrier()

    def gather_object(self, obj: Any) -> list | None:
        """Every rank's ``obj`` (picklable, CPU tensors) as a list on rank 0; None on the others."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        _dist().gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (the others' argument is ignored)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        _dist().broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run ``fn`` on rank 0 only and return its result on every rank.

        For what only rank 0 may do or can see (create the run directory, read a checkpoint that
        lives on node 0). If it raises, every rank raises the same error (so a spec or checkpoint
        error is the same one-line error everywhere instead of a hang).
        """
        if not self.distributed:
            return fn(*args, **kwargs)
        result: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                result = ("ok", fn(*args, **kwargs))
            except Exception as e:  # noqa: BLE001 - handed to the other ranks, then re-raised here as it was
                result = ("error", e)
        try:
            result = self.broadcast_object(result)
        except Exception:  # noqa: BLE001  # pragma: no cover - an exception that does not pickle
            if not self.is_main:
                raise RuntimeError("rank 0 failed and its error could not be sent to this rank") from None
        kind, value = result
        if kind == "error":
            raise value
        return value

    # ---- the model ---------------------------------------------------------------------------------
    def data_parallel(self, model: nn.Module) -> Any:
        """Wrap ``model`` in DistributedDataParallel; call its methods through the result.

        ``net = ctx.data_parallel(model)``; ``net.segment(x, y, h)`` runs ``model.segment(x, y, h)``
        as DDP's forward, so the backward that follows averages the gradients over the ranks
        (DDP's reducer is armed by its forward; calling ``model.segment`` directly would skip it).
        Outside torchrun it returns ``model`` itself. Parameters stay those of ``model``, so its
        ``state_dict`` and an optimizer over ``model.parameters()`` are unchanged.
        """
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        params = [p for p in model.parameters() if p.requires_grad]
        device = params[0].device if params else torch.device("cpu")
        group = None
        if device.type == "cuda":
            group = self._grad_groups.get("nccl")
            if group is None:
                if torch.cuda.device_count() <= self.local_rank:
                    raise UserError(f"local rank {self.local_rank} has no GPU of its own "
                                    f"({torch.cuda.device_count()} visible): run at most one process per GPU "
                                    "(--nproc_per_node), or train on the CPU (--set device=cpu)", exit_code=EXIT_USAGE)
                group = self._grad_groups["nccl"] = _dist().new_group(backend="nccl")
        ddp = DDP(_Dispatch(model), device_ids=None, process_group=group)
        self._wrapped.add(model)
        return _Replica(model, ddp)

    def is_data_parallel(self, model: nn.Module) -> bool:
        """Whether ``model`` was wrapped by :meth:`data_parallel` (always True in one process)."""
        return not self.distributed or model in self._wrapped


class _Dispatch(nn.Module):
    """DDP calls ``forward``; the models' training entry points are named methods."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, method: str, *args, **kwargs):
        return getattr(self.module, method)(*args, **kwargs)


class _Replica:
    """``replica.name(...)`` calls ``model.name(...)`` through DDP; other attributes are the model's."""

    def __init__(self, model: nn.Module, ddp: nn.Module):
        self.module, self.ddp = model, ddp

    def __getattr__(self, name: str):
        attr = getattr(self.module, name)
        if not callable(attr) or isinstance(attr, nn.Module):
            return attr

        def call(*args, **kwargs):
            return self.ddp(name, *args, **kwargs)

        return call


_CTX: DistContext | None = None
_OWNED = False  # whether init() created the process group (and so destroys it)


def init() -> DistContext:
    """Join the process group when launched by torchrun; return this process's context.

    Idempotent. Outside torchrun, or with ``WORLD_SIZE=1``, nothing is initialised and the context
    is rank 0 of 1. A group that the caller initialised already is used as it is.
    """
    global _CTX, _OWNED
    if _CTX is not None and (_CTX.distributed or not launched_by_torchrun()):
        return _CTX
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        _CTX = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        return _CTX
    if not launched_by_torchrun():
        _CTX = DistContext()
        return _CTX
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    if world <= 1:
        _CTX = DistContext()
        return _CTX
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise UserError(f"{key} is not set: launch multi-process training with torchrun "
                            "(or set MASTER_ADDR and MASTER_PORT next to RANK and WORLD_SIZE)")
    if not dist.is_available():  # pragma: no cover - every supported torch build has it
        raise UserError("this torch build has no torch.distributed")
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)
    dist.init_process_group(backend="gloo", rank=rank, world_size=world)
    _CTX, _OWNED = DistContext(rank, world, local), True
    atexit.register(destroy)
    return _CTX


def context() -> DistContext:
    """The current context (what tasks read in their constructor); rank 0 of 1 before :func:`init`."""
    global _CTX
    if _CTX is None:
        dist = _dist()
        if dist.is_available() and dist.is_initialized():
            _CTX = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        else:
            return DistContext()
    return _CTX


def is_main() -> bool:
    """Whether this process is rank 0 (also before :func:`init` and after :func:`destroy`)."""
    if _CTX is not None:
        return _CTX.is_main
    return int(os.environ.get("RANK", "0") or 0) == 0


def destroy() -> None:
    """Leave the process group that :func:`init` joined (registered at exit; safe to call twice)."""
    global _CTX, _OWNED
    dist = _dist()
    if _OWNED and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CTX, _OWNED = None, False


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run ``python -m revrnn_cli ARGV`` in ``nproc`` processes on this machine, as torchrun does.

    The same as ``torchrun --standalone --nproc_per_node NPROC -m revrnn_cli ARGV`` (the launcher
    runs in this process). Returns the exit code of the first process that failed (130/143 when
    they were interrupted, 128+N when killed by signal N), else 0.
    """
    if launched_by_torchrun():
        raise UserError("--nproc starts its own processes: do not combine it with torchrun")
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "revrnn_cli", *argv])
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default for several processes
    try:
        run(args)
    except ChildFailedError as e:
        _, failure = e.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else (code or 1)
    except SignalException as e:
        return 128 + int(e.sigval)
    sys.stdout.flush()
    return 0
