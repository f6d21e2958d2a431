// Fused chunk operators of the reversible GRU and LSTM (paper §3), CPU implementation.
//
// One call runs K steps of one layer: the forward pass, the reversal (with the activations the
// local backward needs), or the local backward. Inside, each half-step is one matmul (ATen's addmm,
// as in the reference path) and one pass over the units that applies the activations, the exact
// multiplications with the buffer and the fixed-point update; so a layer-step costs a handful of
// dispatches instead of the ~300 small tensor operations of the eager reference
// (revrnn_cli/engine/cells.py, whose equations and layouts this file follows). Python drives one
// call per chunk and layer (revrnn_cli/engine/native.py); the schemas are registered with
// torch.library, so autograd, DDP and torch.compile see one operator per call.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "rev_buffer.h"
#include "rev_cell.h"
#include "rev_math.h"

namespace revrnn {
namespace {

using at::Tensor;

CpuBuffer make_buffer(const c10::optional<Tensor>& head, const c10::optional<Tensor>& arena,
                      const c10::optional<Tensor>& meta, const c10::optional<Tensor>& zprod,
                      const c10::optional<Tensor>& fmeta, int64_t rounds, int64_t n) {
  CpuBuffer b;
  if (head.has_value() && head->defined()) {
    TORCH_CHECK(head->is_contiguous() && head->scalar_type() == at::kLong, "revrnn: head must be contiguous int64");
    TORCH_CHECK(head->numel() == n, "revrnn: head has ", head->numel(), " units, expected ", n);
    b.head = head->data_ptr<int64_t>();
    b.arena = arena->data_ptr<uint8_t>();
    b.capacity = arena->numel();
    b.meta = meta->data_ptr<int64_t>();
    if (zprod.has_value() && zprod->defined()) {
      b.zprod = zprod->data_ptr<double>();
      b.fmeta = fmeta->data_ptr<double>();
    }
  }
  b.rounds = static_cast<int>(rounds);
  b.n = n;
  return b;
}

void to_float_into(const int64_t* h, float* out, int64_t n) {
  for (int64_t u = 0; u < n; ++u) out[u] = to_float(h[u]);
}

// Copy [B, H2] float into column block `col` of a [B, width] row-major destination.
void put_cols(float* dst, int64_t width, int64_t col, const float* src, int64_t B, int64_t H2) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H2; ++j) dst[b * width + col + j] = src[b * H2 + j];
}

// ---- one half-step forward ------------------------------------------------------------------------
//
// LSTM (gates [f, p, i, o, g] or, without forgetting, [i, o, g]):
//   c <- Mul(c, Z_f) + round(2^23 i g),   h <- Mul(h, Z_p) + round(2^23 o tanh(c))
// GRU ([z, r | g]): h <- Mul(h, Z_z) + round(2^23 (1 - z) g)
// The matmuls and activations are the ATen calls of RevLSTMCell.gates / RevGRUCell.gates, on
// operands of the same shapes and strides, so every value is bit-identical to the reference path.
// `acts` (if not null) receives the activations the local backward needs, [W, B, H2] per half.

// acts: [sg (B x ns) | g | tanh(c) | h_old | c_old], h_old and c_old written by the caller
void lstm_save(const Cell& c, float* acts, const Scratch& s) {
  const int64_t n = c.n(), ns = (c.n_gates - 1) * c.H2 * c.B;
  std::copy(s.sg.data_ptr<float>(), s.sg.data_ptr<float>() + ns, acts);
  std::copy(s.gt.data_ptr<float>(), s.gt.data_ptr<float>() + n, acts + ns);
  std::copy(s.tc.data_ptr<float>(), s.tc.data_ptr<float>() + n, acts + ns + n);
}

void lstm_half_forward(const Cell& c, CpuBuffer& buf, const Tensor& xp, const Tensor& wh, Scratch& s,
                       int64_t* h, int64_t* cs, float* hf_out, float* acts, float* left, int64_t skip) {
  const int64_t n = c.n(), H2 = c.H2, ns = (c.n_gates - 1) * H2, of = c.forget ? 2 * H2 : 0;
  lstm_gates(c, xp, wh, s);
  const float* sg = s.sg.data_ptr<float>();
  const float* g = s.gt.data_ptr<float>();
  if (left) std::copy(s.hbf.data_ptr<float>(), s.hbf.data_ptr<float>() + n, left);
  int64_t* Zc = s.zi.data_ptr<int64_t>();
  int64_t* Zh = Zc + n;
  float* zc = s.zf.data_ptr<float>();
  float* zh = s.zh.data_ptr<float>();
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = 0; j < H2; ++j) {
      int64_t u = b * H2 + j;
      if (acts) {
        acts[(c.n_gates - 1) * n + 2 * n + u] = to_float(h[u]);
        acts[(c.n_gates - 1) * n + 3 * n + u] = to_float(cs[u]);
      }
      if (c.forget) {  // fp = s[:, :2H2] * m + (1 - m), then Z = round(1024 fp)
        zc[u] = sg[b * ns + j] * c.m + c.omm;
        zh[u] = sg[b * ns + H2 + j] * c.m + c.omm;
        Zc[u] = quantize_gate(zc[u], c.zero_guard);
        Zh[u] = quantize_gate(zh[u], c.zero_guard);
      }
    }
  if (c.forget) buf.mul(cs, Zc, zc, H2, 0, s.tmp.data_ptr<int64_t>());
  float* cf = s.cf.data_ptr<float>();
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = 0; j < H2; ++j) {
      int64_t u = b * H2 + j;
      cs[u] += quantize(c.weigh(sg[b * ns + of + j], Zc[u]) * g[u]);  // + round(2^23 i g), i weighed if bounded
      cf[u] = to_float(cs[u]);
    }
  at::tanh_out(s.tc, s.cf);
  const float* tc = s.tc.data_ptr<float>();
  if (c.forget) buf.mul(h, Zh, zh, H2, skip, s.tmp.data_ptr<int64_t>());
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = 0; j < H2; ++j) {
      int64_t u = b * H2 + j;
      h[u] += quantize(c.weigh(sg[b * ns + of + H2 + j], Zh[u]) * tc[u]);  // + round(2^23 o tanh(c))
      hf_out[u] = to_float(h[u]);
    }
  if (acts) lstm_save(c, acts, s);
}

void gru_prepare(const Cell& c, Scratch& s, int64_t* Z, float* z) {
  const int64_t H2 = c.H2;
  const float* a = s.a.data_ptr<float>();
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = 0; j < H2; ++j) {
      int64_t u = b * H2 + j;
      float sz = a[b * 2 * H2 + j];
      z[u] = c.forget ? sz * c.m + c.omm : sz;
      Z[u] = c.forget ? quantize_gate(z[u], c.zero_guard) : FORGET_ONE;
    }
}

// acts: [s (B x [z r]) | g | h_old], h_old written by the caller
void gru_save(const Cell& c, float* acts, const Scratch& s) {
  const int64_t n = c.n();
  std::copy(s.a.data_ptr<float>(), s.a.data_ptr<float>() + 2 * n, acts);
  std::copy(s.a2.data_ptr<float>(), s.a2.data_ptr<float>() + n, acts + 2 * n);
}

void gru_half_forward(const Cell& c, CpuBuffer& buf, const Tensor& xp, const Tensor& wh, const Tensor& vh,
                      Scratch& s, int64_t* h, float* hf_out, float* acts, float* left, float* left_r,
                      int64_t skip) {
  const int64_t n = c.n();
  gru_gates(c, xp, wh, vh, s);
  const float* g = s.a2.data_ptr<float>();
  if (left) {
    std::copy(s.hbf.data_ptr<float>(), s.hbf.data_ptr<float>() + n, left);
    std::copy(s.rh.data_ptr<float>(), s.rh.data_ptr<float>() + n, left_r);
  }
  int64_t* Z = s.zi.data_ptr<int64_t>();
  float* z = s.zf.data_ptr<float>();
  gru_prepare(c, s, Z, z);
  if (acts) to_float_into(h, acts + 3 * n, n);
  if (c.forget) buf.mul(h, Z, z, c.H2, skip, s.tmp.data_ptr<int64_t>());
  for (int64_t u = 0; u < n; ++u) {
    h[u] += quantize((1.0f - z[u]) * g[u]);  // + round(2^23 (1 - z) g)
    hf_out[u] = to_float(h[u]);
  }
  if (acts) gru_save(c, acts, s);
}

// ---- one half-step undone (the inverse, recomputing exactly the forward's gates) ------------------

void lstm_half_reverse(const Cell& c, CpuBuffer& buf, const Tensor& xp, const Tensor& wh, Scratch& s,
                       int64_t* h, int64_t* cs, float* acts, float* left, int64_t skip, const int64_t* restore) {
  const int64_t n = c.n(), H2 = c.H2, ns = (c.n_gates - 1) * H2, of = c.forget ? 2 * H2 : 0;
  lstm_gates(c, xp, wh, s);
  const float* sg = s.sg.data_ptr<float>();
  const float* g = s.gt.data_ptr<float>();
  if (left) std::copy(s.hbf.data_ptr<float>(), s.hbf.data_ptr<float>() + n, left);
  int64_t* Zc = s.zi.data_ptr<int64_t>();
  int64_t* Zh = Zc + n;
  to_float_into(cs, s.cf.data_ptr<float>(), n);
  at::tanh_out(s.tc, s.cf);
  const float* tc = s.tc.data_ptr<float>();
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = 0; j < H2; ++j) {
      int64_t u = b * H2 + j;
      const float* row = sg + b * ns;
      if (c.forget) {
        Zc[u] = quantize_gate(row[j] * c.m + c.omm, c.zero_guard);
        Zh[u] = quantize_gate(row[H2 + j] * c.m + c.omm, c.zero_guard);
      }
      h[u] -= quantize(c.weigh(row[of + H2 + j], Zh[u]) * tc[u]);  // undo h first: it was updated last
      cs[u] -= quantize(c.weigh(row[of + j], Zc[u]) * g[u]);
    }
  if (c.forget) {
    buf.div(h, Zh, H2, skip, s.tmp.data_ptr<int64_t>());
    if (restore)
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t j = 0; j < skip; ++j) h[b * H2 + j] = restore[b * skip + j];
    buf.div(cs, Zc, H2, 0, s.tmp.data_ptr<int64_t>());
  }
  if (acts) {
    lstm_save(c, acts, s);
    float* old = acts + (c.n_gates - 1) * n + 2 * n;
    to_float_into(h, old, n);
    to_float_into(cs, old + n, n);
  }
}

void gru_half_reverse(const Cell& c, CpuBuffer& buf, const Tensor& xp, const Tensor& wh, const Tensor& vh,
                      Scratch& s, int64_t* h, float* acts, float* left, float* left_r, int64_t skip,
                      const int64_t* restore) {
  const int64_t n = c.n(), H2 = c.H2;
  gru_gates(c, xp, wh, vh, s);
  const float* g = s.a2.data_ptr<float>();
  if (left) {
    std::copy(s.hbf.data_ptr<float>(), s.hbf.data_ptr<float>() + n, left);
    std::copy(s.rh.data_ptr<float>(), s.rh.data_ptr<float>() + n, left_r);
  }
  int64_t* Z = s.zi.data_ptr<int64_t>();
  float* z = s.zf.data_ptr<float>();
  gru_prepare(c, s, Z, z);
  for (int64_t u = 0; u < n; ++u) h[u] -= quantize((1.0f - z[u]) * g[u]);
  if (c.forget) {
    buf.div(h, Z, H2, skip, s.tmp.data_ptr<int64_t>());
    if (restore)
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t j = 0; j < skip; ++j) h[b * H2 + j] = restore[b * skip + j];
  }
  if (acts) {
    gru_save(c, acts, s);
    to_float_into(h, acts + 3 * n, n);
  }
}

// ---- local backward of one half-step: the per-unit formulas of rev_cell.h -------------------------

void lstm_half_backward(const Cell& c, const float* acts, float* dh, float* dc, float* ds, int64_t ds_stride) {
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = 0; j < c.H2; ++j) lstm_backward_unit(c, acts, b, j, dh, dc, ds, ds_stride);
}

// ---- the chunk loops ------------------------------------------------------------------------------

Cell make_cell(int64_t kind, const Tensor& XP, at::TensorList state, double m, bool forget, bool zero_guard,
               int64_t skip) {
  TORCH_CHECK(XP.dim() == 3 && XP.scalar_type() == at::kFloat, "revrnn: XP must be float [K, B, 2*block]");
  int64_t B = XP.size(1), H2 = state[0].size(1);
  Cell c(kind, H2, B, m, forget, zero_guard, skip);
  TORCH_CHECK(XP.size(2) == 2 * c.blk, "revrnn: XP has ", XP.size(2), " columns, expected ", 2 * c.blk);
  TORCH_CHECK(static_cast<int64_t>(state.size()) == c.nb, "revrnn: expected ", c.nb, " state blocks");
  return c;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_chunk(
    int64_t kind, const Tensor& XP, at::TensorList state, at::TensorList wh, const c10::optional<Tensor>& head,
    const c10::optional<Tensor>& arena, const c10::optional<Tensor>& meta, const c10::optional<Tensor>& zprod,
    const c10::optional<Tensor>& fmeta, double m, bool forget, bool zero_guard, int64_t rounds, int64_t skip,
    bool want_y, bool want_states, bool want_saved) {
  Cell c = make_cell(kind, XP, state, m, forget, zero_guard, skip);
  const int64_t K = XP.size(0), n = c.n(), H2 = c.H2;
  auto f32 = XP.options();
  Outputs o = make_outputs(c, K, state, want_y, want_states, want_saved, f32);
  int64_t* st = o.state.data_ptr<int64_t>();
  CpuBuffer buf = make_buffer(head, arena, meta, zprod, fmeta, rounds, n);
  Scratch s = make_scratch(c, f32);
  Tensor hf = at::empty({2, c.B, H2}, f32);
  float* hf1 = hf[0].data_ptr<float>();
  float* hf2 = hf[1].data_ptr<float>();
  to_float_into(st + n, hf2, n);  // the other half's float state for the first half-step
  float* acts = want_saved ? o.acts.data_ptr<float>() : nullptr;
  float* lefts = want_saved ? o.lefts.data_ptr<float>() : nullptr;
  const int64_t aw = c.W * n;  // saved floats per half and step
  for (int64_t t = 0; t < K; ++t) {
    Tensor xp = XP[t];
    float* a1 = acts ? acts + t * aw : nullptr;
    float* a2 = acts ? acts + (K + t) * aw : nullptr;
    if (c.kind == LSTM) {
      std::copy(hf2, hf2 + n, s.hbf.data_ptr<float>());
      lstm_half_forward(c, buf, xp.narrow(1, 0, c.blk), wh[0], s, st, st + 2 * n, hf1, a1,
                        lefts ? lefts + t * n : nullptr, c.skip);
      std::copy(hf1, hf1 + n, s.hbf.data_ptr<float>());
      lstm_half_forward(c, buf, xp.narrow(1, c.blk, c.blk), wh[1], s, st + n, st + 3 * n, hf2, a2,
                        lefts ? lefts + (K + t) * n : nullptr, 0);
    } else {
      std::copy(hf2, hf2 + n, s.hbf.data_ptr<float>());
      gru_half_forward(c, buf, xp.narrow(1, 0, c.blk), wh[0], wh[1], s, st, hf1, a1,
                       lefts ? lefts + t * n : nullptr, lefts ? lefts + (K + t) * n : nullptr, c.skip);
      std::copy(hf1, hf1 + n, s.hbf.data_ptr<float>());
      gru_half_forward(c, buf, xp.narrow(1, c.blk, c.blk), wh[2], wh[3], s, st + n, hf2, a2,
                       lefts ? lefts + (2 * K + t) * n : nullptr, lefts ? lefts + (3 * K + t) * n : nullptr, 0);
    }
    if (want_y) {
      float* y = o.y.data_ptr<float>() + t * 2 * n;
      put_cols(y, 2 * H2, 0, hf1, c.B, H2);
      put_cols(y, 2 * H2, H2, hf2, c.B, H2);
    }
    if (want_states) std::copy(st, st + c.nb * n, o.states.data_ptr<int64_t>() + t * c.nb * n);
  }
  return {o.state, o.y, o.states, o.acts, o.lefts};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> reverse_chunk(
    int64_t kind, const Tensor& XP, at::TensorList state, at::TensorList wh, const c10::optional<Tensor>& head,
    const c10::optional<Tensor>& arena, const c10::optional<Tensor>& meta, const c10::optional<Tensor>& restore,
    double m, bool forget, bool zero_guard, int64_t rounds, int64_t skip, bool want_y, bool want_states,
    bool want_saved) {
  Cell c = make_cell(kind, XP, state, m, forget, zero_guard, skip);
  const int64_t K = XP.size(0), n = c.n(), H2 = c.H2;
  auto f32 = XP.options();
  Outputs o = make_outputs(c, K, state, want_y, want_states, want_saved, f32);
  int64_t* st = o.state.data_ptr<int64_t>();
  CpuBuffer buf = make_buffer(head, arena, meta, c10::nullopt, c10::nullopt, rounds, n);
  Scratch s = make_scratch(c, f32);
  Tensor hf = at::empty({c.B, H2}, f32);
  const int64_t* rs = nullptr;
  Tensor rcont;
  if (restore.has_value() && restore->defined() && skip > 0) {
    rcont = restore->contiguous();
    TORCH_CHECK(rcont.numel() == K * c.B * skip, "revrnn: restore must be [K, B, skip]");
    rs = rcont.data_ptr<int64_t>();
  }
  float* acts = want_saved ? o.acts.data_ptr<float>() : nullptr;
  float* lefts = want_saved ? o.lefts.data_ptr<float>() : nullptr;
  const int64_t aw = c.W * n;
  for (int64_t t = K - 1; t >= 0; --t) {
    Tensor xp = XP[t];
    if (want_y) {  // the layer's output at step t, before undoing it
      float* y = o.y.data_ptr<float>() + t * 2 * n;
      to_float_into(st, hf.data_ptr<float>(), n);
      put_cols(y, 2 * H2, 0, hf.data_ptr<float>(), c.B, H2);
      to_float_into(st + n, hf.data_ptr<float>(), n);
      put_cols(y, 2 * H2, H2, hf.data_ptr<float>(), c.B, H2);
    }
    float* a1 = acts ? acts + t * aw : nullptr;
    float* a2 = acts ? acts + (K + t) * aw : nullptr;
    const int64_t* rt = rs ? rs + t * c.B * skip : nullptr;
    // half 2 from the new h1, then half 1 from the recovered h2
    to_float_into(st, s.hbf.data_ptr<float>(), n);
    if (c.kind == LSTM) {
      lstm_half_reverse(c, buf, xp.narrow(1, c.blk, c.blk), wh[1], s, st + n, st + 3 * n, a2,
                        lefts ? lefts + (K + t) * n : nullptr, 0, nullptr);
      to_float_into(st + n, s.hbf.data_ptr<float>(), n);
      lstm_half_reverse(c, buf, xp.narrow(1, 0, c.blk), wh[0], s, st, st + 2 * n, a1,
                        lefts ? lefts + t * n : nullptr, c.skip, rt);
    } else {
      gru_half_reverse(c, buf, xp.narrow(1, c.blk, c.blk), wh[2], wh[3], s, st + n, a2,
                       lefts ? lefts + (2 * K + t) * n : nullptr, lefts ? lefts + (3 * K + t) * n : nullptr, 0,
                       nullptr);
      to_float_into(st + n, s.hbf.data_ptr<float>(), n);
      gru_half_reverse(c, buf, xp.narrow(1, 0, c.blk), wh[0], wh[1], s, st, a1, lefts ? lefts + t * n : nullptr,
                       lefts ? lefts + (K + t) * n : nullptr, c.skip, rt);
    }
    if (want_states) std::copy(st, st + c.nb * n, o.states.data_ptr<int64_t>() + t * c.nb * n);
  }
  return {o.state, o.y, o.states, o.acts, o.lefts};
}

std::tuple<Tensor, Tensor> backward_chunk(int64_t kind, const Tensor& acts, const Tensor& lefts,
                                          at::TensorList dstate, const c10::optional<Tensor>& dY,
                                          at::TensorList wh, double m, bool forget, bool zero_guard) {
  const int64_t K = acts.size(1), B = dstate[0].size(0), H2 = dstate[0].size(1);
  Cell c(kind, H2, B, m, forget, zero_guard, 0);
  const int64_t n = c.n();
  auto f32 = acts.options();
  Tensor dXP = at::empty({K, B, 2 * c.blk}, f32);
  Tensor ds = at::empty({c.nb, B, H2}, f32);
  for (int64_t k = 0; k < c.nb; ++k) ds[k].copy_(dstate[k]);
  float* d = ds.data_ptr<float>();
  const float* A = acts.data_ptr<float>();
  const float* Lf = lefts.data_ptr<float>();
  Tensor dYc;
  if (dY.has_value() && dY->defined()) dYc = dY->contiguous();
  const int64_t aw = c.W * n;
  Tensor drh = at::empty({B, H2}, f32);
  Tensor mmo = at::empty({B, H2}, f32);
  at::TensorList whT = wh;  // the recurrent weights, transposed and contiguous
  for (int64_t t = K - 1; t >= 0; --t) {
    if (dYc.defined()) {  // the output's gradient joins the h blocks' gradients at this step
      const float* y = dYc.data_ptr<float>() + t * B * 2 * H2;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < H2; ++j) {
          d[b * H2 + j] += y[b * 2 * H2 + j];
          d[n + b * H2 + j] += y[b * 2 * H2 + H2 + j];
        }
    }
    Tensor dxp = dXP[t];
    float* dx = dxp.data_ptr<float>();
    const int64_t stride = 2 * c.blk;
    if (c.kind == LSTM) {
      // half 2 (updated last), then half 1; each adds ds wh^T to the other half's h gradient
      lstm_half_backward(c, A + (K + t) * aw, d + n, d + 3 * n, dx + c.blk, stride);
      at::mm_out(mmo, dxp.narrow(1, c.blk, c.blk), whT[1]);
      ds[0].add_(mmo);
      lstm_half_backward(c, A + t * aw, d, d + 2 * n, dx, stride);
      at::mm_out(mmo, dxp.narrow(1, 0, c.blk), whT[0]);
      ds[1].add_(mmo);
    } else {
      // half 2 (h2 from h1): wh[2], vh[3]; then half 1: wh[0], vh[1]
      for (int half = 1; half >= 0; --half) {
        float* dha = d + half * n;
        Tensor dhb = ds[1 - half];
        const float* a = A + (half * K + t) * aw;
        const float* left = Lf + ((2 * half) * K + t) * n;
        const float* rr = a;  // the sigmoids [z r] row by row
        float* dsx = dx + half * c.blk;
        for (int64_t b = 0; b < B; ++b)
          for (int64_t j = 0; j < H2; ++j) gru_backward_g_unit(c, a, b, j, dha, dsx, stride);
        at::mm_out(drh, dxp.narrow(1, half * c.blk + 2 * H2, H2), whT[2 * half + 1]);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t j = 0; j < H2; ++j) gru_backward_zr_unit(c, a, b, j, left, drh.data_ptr<float>(), dha, dsx, stride);
        at::mm_out(mmo, dxp.narrow(1, half * c.blk, 2 * H2), whT[2 * half]);
        dhb.add_(mmo);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t j = 0; j < H2; ++j) add_drh_r_unit(c, a, b, j, drh.data_ptr<float>(), dhb.data_ptr<float>());
      }
    }
  }
  return {dXP, ds};
}

}  // namespace
}  // namespace revrnn

TORCH_LIBRARY(revrnn, m) {
  m.def(
      "forward_chunk(int cell, Tensor XP, Tensor[] state, Tensor[] wh, Tensor(a!)? head, Tensor(b!)? arena, "
      "Tensor(c!)? meta, Tensor(d!)? zprod, Tensor(e!)? fmeta, float m, bool forget, bool zero_guard, int rounds, "
      "int skip, bool want_y, bool want_states, bool want_saved) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "reverse_chunk(int cell, Tensor XP, Tensor[] state, Tensor[] wh, Tensor(a!)? head, Tensor(b!)? arena, "
      "Tensor(c!)? meta, Tensor? restore, float m, bool forget, bool zero_guard, int rounds, int skip, "
      "bool want_y, bool want_states, bool want_saved) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "backward_chunk(int cell, Tensor acts, Tensor lefts, Tensor[] dstate, Tensor? dY, Tensor[] whT, float m, "
      "bool forget, bool zero_guard) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(revrnn, CPU, m) {
  m.impl("forward_chunk", &revrnn::forward_chunk);
  m.impl("reverse_chunk", &revrnn::reverse_chunk);
  m.impl("backward_chunk", &revrnn::backward_chunk);
}
