"""The fused step operators (C++, and CUDA where torch has it), and which path a run uses.

    REVRNN_KERNELS=auto       # default: the fused operators when they build, else the reference path
    REVRNN_KERNELS=native     # insist on the fused operators (an error if they cannot be built)
    REVRNN_KERNELS=reference  # the eager PyTorch cells of :mod:`.cells`

The reference path runs each step as about 300 small tensor operations from Python; a fused
operator runs a whole chunk of steps of one layer in one call (``native/rev_ops_cpu.cpp``): per
half-step one matmul and one pass over the units. They are compiled on first use with
``torch.utils.cpp_extension`` (g++ and ninja; a few tens of seconds, cached under
``REVRNN_BUILD_DIR``, default ``~/.cache/revrnn/native``) and registered with ``torch.library``,
so autograd, DDP and ``torch.compile`` see one operator per call. When they cannot be built, runs
continue on the reference path after one warning.

Both paths are exactly reversible and follow one integer trajectory: each half-step calls the same
ATen matmul and activation kernels as the eager cells, on operands of the same shapes, and the
per-unit arithmetic (``native/rev_math.h``) repeats theirs operation for operation, without
contraction, so the two agree bit for bit (tests/engine/test_native.py; on a GPU, checked once
before its fused path is used).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import threading
import warnings
from pathlib import Path

import torch

from .fixed_point import to_float

KERNELS_ENV = "REVRNN_KERNELS"
BUILD_DIR_ENV = "REVRNN_BUILD_DIR"
MODES = ("auto", "native", "reference")
SOURCE_DIR = Path(__file__).resolve().parent / "native"
CPU_SOURCES = ("rev_ops_cpu.cpp",)
CUDA_SOURCES = ("rev_ops_cuda.cu",)
HEADERS = ("rev_math.h", "rev_buffer.h", "rev_cell.h")
CFLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-march=native")
CUDA_FLAGS = ("-O3", "--fmad=false")
"""No fused multiply-add (-ffp-contract=off, --fmad=false): every float operation rounds as written,
as PyTorch's own elementwise kernels do, so the fused path matches the reference bit for bit."""

_lock = threading.Lock()
_state: dict = {"loaded": None, "error": None, "warned": False, "override": None, "cuda": False,
                "checked": {}, "checker": None}


class KernelsUnavailable(RuntimeError):
    """REVRNN_KERNELS names no path, or asks for the fused operators where they cannot be built."""


def mode() -> str:
    """The requested path: a :func:`kernels` override, else ``REVRNN_KERNELS``, else ``auto``."""
    m = _state["override"] or os.environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if m not in MODES:
        raise KernelsUnavailable(f"{KERNELS_ENV} must be one of {', '.join(MODES)}, got {m!r}")
    return m


@contextlib.contextmanager
def kernels(m: str):
    """Use path ``m`` (auto, native, reference) inside the block (tests compare the two paths)."""
    if m not in MODES:
        raise ValueError(f"kernels must be one of {', '.join(MODES)}, got {m!r}")
    old, _state["override"] = _state["override"], m
    try:
        yield
    finally:
        _state["override"] = old


def build_dir() -> Path:
    """Where the compiled operators are cached: one directory per source, flags, torch and CPU."""
    h = hashlib.sha256()
    for name in (*CPU_SOURCES, *CUDA_SOURCES, *HEADERS):
        h.update((SOURCE_DIR / name).read_bytes())
    h.update(" ".join(CFLAGS + CUDA_FLAGS).encode())
    h.update(str(_with_cuda()).encode())
    h.update(f"{torch.__version__}|{platform.machine()}|{_cpu_model()}".encode())
    root = Path(os.environ.get(BUILD_DIR_ENV) or Path.home() / ".cache" / "revrnn" / "native")
    return root / h.hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def load() -> bool:
    """Build (once, cached) and load the operators; False, with the reason kept, if that fails."""
    with _lock:
        if _state["loaded"] is not None:
            return _state["loaded"]
        try:
            _build()
            _state["loaded"] = True
        except Exception as e:  # a missing compiler, ninja or headers: fall back, say why once
            _state["loaded"], _state["error"] = False, f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}"
        return _state["loaded"]


def _with_cuda() -> bool:
    """Build the CUDA operators too: torch has CUDA, a GPU is visible and nvcc is found."""
    if torch.version.cuda is None or not torch.cuda.is_available():
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME is not None


def _build() -> None:
    if hasattr(torch.ops, "revrnn") and hasattr(torch.ops.revrnn, "forward_chunk"):
        return
    from torch.utils.cpp_extension import load as cpp_load

    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = os.environ.get("PATH", "")
    bindir = str(Path(os.sys.executable).parent)  # ninja installed from PyPI lives beside python
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = path + os.pathsep + bindir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cuda = _with_cuda()
        sources = [str(SOURCE_DIR / s) for s in CPU_SOURCES + (CUDA_SOURCES if cuda else ())]
        cpp_load(name="revrnn_native", sources=sources, extra_cflags=list(CFLAGS),
                 extra_cuda_cflags=list(CUDA_FLAGS), extra_include_paths=[str(SOURCE_DIR)], build_directory=str(out),
                 is_python_module=False, verbose=False, with_cuda=cuda)
        _state["cuda"] = cuda
    _register_fakes()


def _shapes(kind: int, forget: bool, K: int, B: int, H2: int) -> tuple[int, int, int]:
    """(state blocks, saved floats per unit and half, recurrent weights) of a cell code."""
    if kind == 1:
        return 4, (4 if forget else 2) + 4, 2
    return 2, 4, 4


def _register_fakes() -> None:
    """Shape functions, so that FakeTensor tracing (torch.compile, meta devices) sees each operator
    as one node with the right outputs, without running it."""

    def outs(kind, XP, state, forget, want_y, want_states, want_saved):
        K, B, H2 = XP.shape[0], XP.shape[1], state[0].shape[1]
        nb, W, n_rec = _shapes(kind, forget, K, B, H2)
        i64 = dict(dtype=torch.int64, device=XP.device)
        empty = XP.new_empty(0)
        return (XP.new_empty(nb, B, H2, **i64),
                XP.new_empty(K, B, 2 * H2) if want_y else empty,
                XP.new_empty(K, nb, B, H2, **i64) if want_states else XP.new_empty(0, **i64),
                XP.new_empty(2, K, W * B * H2) if want_saved else empty,
                XP.new_empty(n_rec, K, B, H2) if want_saved else empty)

    @torch.library.register_fake("revrnn::forward_chunk")
    def _(kind, XP, state, wh, head, arena, meta, zprod, fmeta, m, forget, zero_guard, rounds, skip, want_y,
          want_states, want_saved):
        return outs(kind, XP, state, forget, want_y, want_states, want_saved)

    @torch.library.register_fake("revrnn::reverse_chunk")
    def _(kind, XP, state, wh, head, arena, meta, restore, m, forget, zero_guard, rounds, skip, want_y,
          want_states, want_saved):
        return outs(kind, XP, state, forget, want_y, want_states, want_saved)

    @torch.library.register_fake("revrnn::backward_chunk")
    def _(kind, acts, lefts, dstate, dY, whT, m, forget, zero_guard):
        K, B, H2 = acts.shape[1], dstate[0].shape[0], dstate[0].shape[1]
        blk = (5 if forget else 3) * H2 if kind == 1 else 3 * H2
        return acts.new_empty(K, B, 2 * blk), acts.new_empty(len(dstate), B, H2)


def enabled(device) -> bool:
    """Whether the fused operators run for tensors on ``device``, as the path setting says."""
    m = mode()
    if m == "reference":
        return False
    device = torch.device(device)
    ok = load() and _supports(device)
    if not ok and m == "native":
        why = _state["error"] or f"no fused operators for {device.type} tensors"
        raise KernelsUnavailable(f"{KERNELS_ENV}=native but the fused operators are unavailable: {why}")
    if not ok and not _state["warned"] and device.type == "cpu":
        _state["warned"] = True
        warnings.warn(f"revrnn: the fused step operators could not be built ({_state['error']}); running on the "
                      f"reference path, which is about twice as slow (set {KERNELS_ENV}=reference to silence this)",
                      RuntimeWarning, stacklevel=2)
    return ok


def _supports(device: torch.device) -> bool:
    """CPU always; a GPU once its operators have matched the reference path bit for bit there (the
    CUDA file cannot be tested on machines without one, so it is checked where it runs)."""
    if device.type == "cpu":
        return True
    if device.type != "cuda" or not _state["cuda"]:
        return False
    key = device.index if device.index is not None else torch.cuda.current_device()
    checked = _state["checked"]
    if key not in checked:
        checked[key] = None  # while the check itself runs the fused path
        ok, why = _state["checker"](torch.device("cuda", key)) if _state["checker"] else (False, "no check")
        checked[key] = ok
        if not ok:
            _state["error"] = f"the CUDA operators disagree with the reference path on cuda:{key} ({why})"
            warnings.warn(f"revrnn: {_state['error']}; using the reference path there", RuntimeWarning, stacklevel=3)
    return checked[key] is not False


def set_device_check(check) -> None:
    """Register ``check(device) -> (ok, reason)``, run once per GPU before its fused path is used
    (:mod:`.selfcheck`; registered here rather than imported, since it drives the whole engine)."""
    _state["checker"] = check


def describe(device) -> str:
    """One line saying which path a run on ``device`` uses (printed at the start of training)."""
    if enabled(device):
        kind = "CUDA" if torch.device(device).type == "cuda" else "C++"
        return f"fused {kind} operators ({torch.device(device)})"
    why = "" if mode() == "reference" else f": {_state['error'] or 'none for this device'}"
    return f"reference PyTorch cells{why}"


# ---- the operators, as the step loops of :mod:`.reversible` call them -----------------------------

def _buffer_args(cell, buf, steps: int, track: bool):
    """The buffer's tensors for one call, after reserving the stack space ``steps`` steps may need."""
    if buf is None or not cell.forget:
        return None, None, None, None, None, 1
    muls = steps * cell.muls_per_step
    buf.reserve(muls * buf.rounds * buf.numel)
    buf._bound += muls * buf.rounds * buf.numel
    buf.multiplications += muls
    zprod = buf.zprod if track else None
    if zprod is not None:
        buf.gates_seen += muls * buf.numel
    return buf.head, buf.arena, buf.meta, zprod, buf.fmeta if zprod is not None else None, buf.rounds


def forward_chunk(cell, XP, blocks, Wh, buf, want_y=True, want_states=False, want_saved=False):
    """Run the chunk's steps of one layer forward: (new blocks, outputs [K, B, H] or None, every
    state [K, blocks, B, H/2] or None, (saved activations, left operands) or None)."""
    K = XP.shape[0]
    args = _buffer_args(cell, buf, K, buf is not None and buf.zprod is not None)
    st, Y, states, acts, lefts = torch.ops.revrnn.forward_chunk(
        cell.kind, XP.contiguous(), list(blocks), list(Wh), *args[:5], cell.m, cell.forget, cell.zero_guard,
        args[5], cell.lossy_units, want_y, want_states, want_saved)
    return (list(st.unbind(0)), Y if want_y else None, states if want_states else None,
            (acts, lefts) if want_saved else None)


def reverse_chunk(cell, XP, blocks, Wh, buf, restore=None, want_y=True, want_states=False, want_saved=False):
    """Undo the chunk's steps of one layer: (blocks before the chunk, the outputs at each step before
    undoing it, the state before each step, (saved activations, left operands))."""
    K = XP.shape[0]
    head = arena = meta = None
    rounds = 1
    if buf is not None and cell.forget:
        head, arena, meta, rounds = buf.head, buf.arena, buf.meta, buf.rounds
        buf.multiplications -= K * cell.muls_per_step
    st, Y, states, acts, lefts = torch.ops.revrnn.reverse_chunk(
        cell.kind, XP.contiguous(), list(blocks), list(Wh), head, arena, meta, restore, cell.m, cell.forget,
        cell.zero_guard, rounds, cell.lossy_units, want_y, want_states, want_saved)
    return (list(st.unbind(0)), Y if want_y else None, states if want_states else None,
            (acts, lefts) if want_saved else None)


def backward_chunk(cell, saved, dstate, dY, WhT):
    """The chunk's local backward, given the recurrent weights transposed (contiguous):
    (dL/dXP [K, B, 2 block], dL/d state before the chunk)."""
    acts, lefts = saved
    dXP, ds = torch.ops.revrnn.backward_chunk(cell.kind, acts, lefts, list(dstate), dY, list(WhT), cell.m,
                                              cell.forget, cell.zero_guard)
    return dXP, list(ds.unbind(0))


def recurrent_grads(cell, saved, dXP) -> list:
    """The chunk's gradient of each recurrent weight, left_k^T dXP[:, cols_k]: one matmul per chunk
    (the caller accumulates them over chunks: see :func:`.reversible.accumulate_mm`)."""
    lefts = saved[1]
    flat = dXP.reshape(-1, dXP.shape[-1])
    return [torch.mm(lefts[k].reshape(-1, cell.half).t(), flat[:, cols])
            for k, cols in enumerate(cell.recurrent_columns())]


class StoreChunk(torch.autograd.Function):
    """``store`` mode on the fused path: one autograd node per chunk and layer. Forward runs the chunk
    keeping its activations (as ordinary autograd would); backward is the fused local backward."""

    @staticmethod
    def forward(ctx, cell, buf, out_blocks: list, transposed, blocks, XP, *tensors):
        nb = cell.n_blocks
        Wh = tensors[nb:]
        st, Y, _, saved = forward_chunk(cell, XP, blocks, Wh, buf, want_y=True, want_saved=True)
        out_blocks[:] = st
        ctx.cell, ctx.batch, ctx.transposed = cell, XP.shape[1], transposed
        ctx.save_for_backward(*saved, *Wh)
        return (Y, *[to_float(b) for b in st])

    @staticmethod
    def backward(ctx, dY, *dst):
        cell = ctx.cell
        acts, lefts, *Wh = ctx.saved_tensors
        dstate = [d if d is not None else acts.new_zeros(ctx.batch, cell.half) for d in dst]
        WhT = ctx.transposed()  # made once per pass, shared by its chunks
        dXP, ds = backward_chunk(cell, (acts, lefts), dstate, dY.contiguous() if dY is not None else None, WhT)
        dW = recurrent_grads(cell, (acts, lefts), dXP)
        return (None, None, None, None, None, dXP, *ds, *dW)


__all__ = ["KERNELS_ENV", "KernelsUnavailable", "StoreChunk", "backward_chunk", "build_dir", "describe", "enabled",
           "forward_chunk", "kernels", "load", "mode", "recurrent_grads", "reverse_chunk", "set_device_check"]
