"""The fused step operators against the eager reference cells: one integer trajectory, bit for bit;
how many operations a step dispatches; the fallback when they cannot be built; the CUDA source."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from revrnn_cli.engine import RevGRU, RevLSTM, RevState, native
from revrnn_cli.engine.native import KernelsUnavailable
from revrnn_cli.engine.selfcheck import check_device
from revrnn_cli.models.lm import LMConfig, RNNLanguageModel

from .conftest import native_or_skip

IN, H, B = 5, 8, 3


@pytest.fixture(autouse=True)
def _needs_native():
    native_or_skip()


def run(model, x, path, mode, seed=1):
    """One training step; returns loss, outputs, final integer state, every gradient and the stats."""
    with native.kernels(path):
        model.backprop = mode
        model.zero_grad(set_to_none=True)
        xr = x.clone().requires_grad_()
        torch.manual_seed(seed)
        y, state = model(xr)
        loss = y.pow(2).sum() + sum(f.pow(2).sum() for f in state.floats)
        loss.backward()
    return loss.detach(), y.detach(), state.ints, [p.grad for p in model.parameters()] + [xr.grad], model.last_stats


CASES = [
    (RevLSTM, dict()), (RevLSTM, dict(max_forget_bits=None)), (RevLSTM, dict(forget=False)),
    (RevLSTM, dict(max_forget_bits=1, top_size=6)), (RevLSTM, dict(gate_bias=20.0)),
    (RevLSTM, dict(cell_update="bounded")), (RevLSTM, dict(cell_update="bounded", gate_bias=20.0)),
    (RevGRU, dict()), (RevGRU, dict(max_forget_bits=None)), (RevGRU, dict(forget=False)),
    (RevGRU, dict(max_forget_bits=5, top_size=4)), (RevGRU, dict(gate_bias=20.0)),
]


@pytest.mark.parametrize("cls,kw", CASES, ids=lambda v: getattr(v, "__name__", None) or str(v))
def test_fused_and_reference_follow_one_trajectory(cls, kw):
    """Same losses, outputs, states, buffer accounting and every gradient, bit for bit, in both backprop
    modes (the fused store mode uses the same local backward as reversal: equal to reference reversal)."""
    kw = dict(kw)
    bias = kw.pop("gate_bias", 0.0)
    torch.manual_seed(0)
    model = cls(IN, H, 2, dropout=0.25, weight_drop=0.25, chunk=7, **kw)
    with torch.no_grad():
        for c in model.cells:
            c.bx.add_(bias)
    x = torch.randn(40, B, IN) * 2
    ref = run(model, x, "reference", "reverse")
    assert ref[0].isfinite() and (ref[4]["used_bits"] > 0) == kw.get("forget", True)
    for mode in ("reverse", "store"):
        got = run(model, x, "native", mode)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
        assert all(torch.equal(a, b) for a, b in zip(got[2], ref[2]))
        assert all(torch.equal(a, b) for a, b in zip(got[3], ref[3])), f"{mode}: gradients differ"
        for k in ("used_bits", "normal_bits", "saturated_gates", "gates", "max_state"):
            assert got[4][k] == ref[4][k], k
        assert got[4]["optimal_bits"] == pytest.approx(ref[4]["optimal_bits"], rel=1e-12)
    if bias:
        assert ref[4]["saturated_gates"] > 0


@pytest.mark.parametrize("cls", [RevLSTM, RevGRU])
def test_states_at_the_edges_of_the_float_division_follow_the_reference(cls):
    """The fused division takes floor(h / Z) from one float64 division while every |h| < 2^40, and
    integer division beyond. Initial states straddling 2^40 (both signs), at -1, at multiples of 1024
    and just off them drive both ranges and the floor of negative quotients: still one trajectory
    with the reference, bit for bit, and the initial state is recovered by reversal."""
    torch.manual_seed(0)
    model = cls(IN, H, 1, chunk=4)
    edge = 1 << 40
    picks = torch.tensor([edge - 1, edge, edge + 1, 3 * edge, -1, -1023, -1024, -1025, 1024, 5, 0, -(edge - 1)],
                         dtype=torch.int64)
    h0 = picks[torch.randint(0, len(picks), (B, model.cells[0].n_blocks * H // 2))]
    h0 = h0 * torch.where(torch.rand(h0.shape) < 0.5, -1, 1)
    x = torch.randn(6, B, IN)
    out = {}
    for path in ("reference", "native"):
        with native.kernels(path):
            model.zero_grad(set_to_none=True)
            xr = x.clone().requires_grad_()
            y, state = model(xr, RevState([h0.clone()], None))
            y.pow(2).sum().backward()
        out[path] = (y.detach(), state.ints[0], [p.grad for p in model.parameters()] + [xr.grad])
    assert bool((out["native"][1].abs() >= edge).any()) and bool((out["native"][1].abs() < edge).any())
    assert torch.equal(out["native"][0], out["reference"][0])
    assert torch.equal(out["native"][1], out["reference"][1])
    assert all(torch.equal(a, b) for a, b in zip(out["native"][2], out["reference"][2]))


def test_negative_control_a_perturbed_input_changes_the_trajectory():
    """The equality above is not vacuous: a change of 1e-4 in one input moves the loss and the states."""
    torch.manual_seed(0)
    model = RevLSTM(IN, H, 2)
    x = torch.randn(40, B, IN)
    a = run(model, x, "native", "reverse")
    x2 = x.clone()
    x2[3, 1, 2] += 1e-4
    b = run(model, x2, "native", "reverse")
    assert not torch.equal(a[0], b[0]) and not all(torch.equal(u, v) for u, v in zip(a[2], b[2]))


@pytest.mark.parametrize("cell", ["revlstm", "revgru"])
def test_language_model_segment_paths_agree(cell):
    """The LM's segment (inputs rebuilt from token ids, tied softmax recomputed in reverse)."""
    cfg = LMConfig(cell=cell, emb_size=8, hidden_size=12, layers=2, chunk=6, dropout=0.2, dropouth=0.2,
                   dropouti=0.2, dropoute=0.1, wdrop=0.3)
    torch.manual_seed(0)
    lm = RNNLanguageModel(cfg, 30)
    tokens = torch.randint(0, 30, (23, 4))
    targets = torch.randint(0, 30, (23, 4))
    out = {}
    for path in ("reference", "native"):
        with native.kernels(path):
            lm.zero_grad(set_to_none=True)
            torch.manual_seed(3)
            res = lm.segment(tokens, targets)
            res.loss_sum.backward()
        out[path] = (res.loss_sum.detach(), [p.grad.clone() for p in lm.parameters()], res.state.ints)
    assert torch.equal(out["native"][0], out["reference"][0])
    assert all(torch.equal(a, b) for a, b in zip(out["native"][1], out["reference"][1]))
    assert all(torch.equal(a, b) for a, b in zip(out["native"][2], out["reference"][2]))


def test_translation_with_padding_and_slice_paths_agree():
    """The encoder's padded steps and its slice units (multiplied without the buffer, restored from
    their stored copy in reversal) through the fused operators."""
    from tests.models.test_nmt import make_batch, model as nmt_model

    for cell in ("revgru", "revlstm"):
        out = {}
        m = nmt_model(cell, "emb+slice:3", layers=2)
        batch = make_batch(B=5, S=9, T=7)
        for path in ("reference", "native"):
            with native.kernels(path):
                m.train()
                m.zero_grad(set_to_none=True)
                torch.manual_seed(1)
                res = m.loss(batch)
                res.loss_sum.backward()
            out[path] = (res.loss_sum.detach(), [p.grad.clone() for p in m.parameters()])
        assert torch.equal(out["native"][0], out["reference"][0])
        assert all(torch.equal(a, b) for a, b in zip(out["native"][1], out["reference"][1]))


# ---- what a step dispatches ---------------------------------------------------------------------------

SYNCS = {"_local_scalar_dense", "nonzero", "masked_select", "masked_scatter", "is_nonzero", "equal", "item",
         "unique", "_unique2", "unique_consecutive", "repeat_interleave"}
"""Operators that make the host read a device value (on a GPU, each one stalls it)."""


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        name = func.__name__.split(".")[0]
        if name in SYNCS:
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


def _count(path, T, layers=2):
    torch.manual_seed(0)
    model = RevLSTM(16, 16, layers, dropout=0.2, weight_drop=0.2, chunk=16)
    x = torch.randn(T, 2, 16)
    with native.kernels(path), Count() as c:
        y, _ = model(x)
        y.pow(2).sum().backward()
    return c


def test_a_reverse_mode_step_dispatches_few_ops_and_no_host_read():
    """Per layer-step, a reverse-mode training step (forward, reversal, local backward) dispatches at
    most 40 operators on the fused path and none that reads a device value on the host: the marginal
    counts between T = 32 and T = 64, which leave out the once-per-pass work (finiteness and range
    checks, the buffers' sealing). The reference path dispatches several hundred per layer-step."""
    short, long = _count("native", 32), _count("native", 64)
    per_layer_step = (long.ops - short.ops) / (2 * 32)
    assert per_layer_step <= 40, per_layer_step
    assert len(long.syncs) == len(short.syncs), (short.syncs, long.syncs)
    ref_short, ref_long = _count("reference", 32), _count("reference", 64)
    assert (ref_long.ops - ref_short.ops) / (2 * 32) > 5 * per_layer_step  # what the fusion saves
    assert len(ref_long.syncs) == len(ref_short.syncs)  # the reference path is sync-free per step too


# ---- fallback and self-check ----------------------------------------------------------------------------

def test_without_a_compiler_runs_fall_back_with_one_warning(monkeypatch):
    monkeypatch.setitem(native._state, "loaded", False)
    monkeypatch.setitem(native._state, "error", "RuntimeError: Ninja is required to load C++ extensions")
    monkeypatch.setitem(native._state, "warned", False)
    with native.kernels("auto"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert not native.enabled("cpu")
        assert not native.enabled("cpu")
        y, _ = RevGRU(IN, H)(torch.randn(9, B, IN))
        assert "reference PyTorch cells" in native.describe("cpu") and "Ninja" in native.describe("cpu")
    assert len([w for w in seen if "could not be built" in str(w.message)]) == 1
    assert y.shape == (9, B, H)
    with native.kernels("native"), pytest.raises(KernelsUnavailable, match="Ninja"):
        native.enabled("cpu")


def test_a_failed_build_is_caught_and_explained(monkeypatch):
    monkeypatch.setitem(native._state, "loaded", None)
    monkeypatch.setattr(native, "_build", lambda: (_ for _ in ()).throw(OSError("g++: command not found")))
    assert native.load() is False
    assert "g++" in native._state["error"]


def test_an_unknown_kernels_setting_is_refused(monkeypatch):
    monkeypatch.setenv(native.KERNELS_ENV, "fastest")
    with pytest.raises(KernelsUnavailable, match="auto, native, reference"):
        native.mode()


def test_the_device_check_passes_on_cpu_and_catches_a_wrong_operator(monkeypatch):
    assert check_device("cpu") == (True, "")
    real = native.forward_chunk

    def off_by_one(*a, **k):
        blocks, *rest = real(*a, **k)
        return [blocks[0] + 1, *blocks[1:]], *rest

    monkeypatch.setattr(native, "forward_chunk", off_by_one)
    ok, why = check_device("cpu")
    assert not ok and "differ" in why or "Reversal" in why


def test_fake_tensors_see_one_operator_with_the_right_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        XP = torch.empty(5, 3, 40)
        state = [torch.zeros(3, 4, dtype=torch.int64) for _ in range(4)]
        W = [torch.empty(4, 20), torch.empty(4, 20)]
        st, Y, states, acts, lefts = torch.ops.revrnn.forward_chunk(1, XP, state, W, None, None, None, None, None,
                                                                    0.875, True, False, 1, 0, True, True, True)
        assert (st.shape, Y.shape, states.shape, lefts.shape) == ((4, 3, 4), (5, 3, 8), (5, 4, 3, 4), (2, 5, 3, 4))
        dXP, ds = torch.ops.revrnn.backward_chunk(1, acts, lefts, [torch.empty(3, 4)] * 4, None, W, 0.875, True, False)
        assert dXP.shape == XP.shape and ds.shape == (4, 3, 4)


# ---- the CUDA source ---------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed: the CUDA source cannot be compiled")
def test_the_cuda_operators_compile(tmp_path):
    """No GPU here, but nvcc is: compile (not link) the CUDA file against torch's headers. A CPU-only
    torch lacks one generated header, which a stub stands in for."""
    inc = Path(torch.__file__).parent / "include"
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    src = Path(native.__file__).parent / "native" / "rev_ops_cuda.cu"
    cmd = ["nvcc", "-c", "-std=c++17", "-O0", "--fmad=false", f"-I{tmp_path / 'stub'}", f"-I{inc}",
           f"-I{inc / 'torch' / 'csrc' / 'api' / 'include'}", f"-I{src.parent}", "--expt-relaxed-constexpr",
           "-Xcompiler", "-fPIC", str(src), "-o", str(tmp_path / "ops.o")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "ops.o").stat().st_size > 0
