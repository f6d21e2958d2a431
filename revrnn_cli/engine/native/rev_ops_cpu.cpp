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

// The per-unit loops of an LSTM half-step, each a plain loop over [B, H2] with restrict pointers and
// the cell's flags as template arguments: no branches, so they vectorise (the same IEEE operations
// in every lane, so the same bits as one unit at a time). They are kept out of line: inlined into
// their callers, the restrict qualifiers of their parameters are lost and the loops stay scalar.
#define NOINLINE __attribute__((noinline))

// The forget gates of a half, [f p] of the sigmoids' rows: z = s m + (1 - m), Z = round(1024 z); z
// itself is kept only where the buffer's accounting needs it (KEEP_Z: the forward pass).
template <bool KEEP_Z>
NOINLINE void lstm_forget_gates(const Cell& c, const float* __restrict__ sg, float* __restrict__ zc,
                                float* __restrict__ zh, int64_t* __restrict__ Zc, int64_t* __restrict__ Zh) {
  const int64_t B = c.B, H2 = c.H2, ns = (c.n_gates - 1) * H2;
  const float m = c.m, omm = c.omm;
  const bool zg = c.zero_guard;
  for (int64_t b = 0; b < B; ++b) {
    const float* __restrict__ row = sg + b * ns;
    const int64_t o = b * H2;
    for (int64_t j = 0; j < H2; ++j) {
      const float fc = row[j] * m + omm, fh = row[H2 + j] * m + omm;
      if (KEEP_Z) {
        zc[o + j] = fc;
        zh[o + j] = fh;
      }
      Zc[o + j] = quantize_gate(fc, zg);
      Zh[o + j] = quantize_gate(fh, zg);
    }
  }
}

// x <- x + SIGN round(2^23 w v), w the gate column block at `gate` (row stride `gstride`), weighed by
// 1 - Z/1024 if BOUNDED; and, with xf, xf <- float(x).
template <bool BOUNDED, int SIGN>
NOINLINE void lstm_update(const Cell& c, int64_t* __restrict__ x, const float* __restrict__ gate, int64_t gstride,
                          const float* __restrict__ v, const int64_t* __restrict__ Z, float* __restrict__ xf) {
  const int64_t B = c.B, H2 = c.H2;
  for (int64_t b = 0; b < B; ++b) {
    const float* __restrict__ w = gate + b * gstride;
    const int64_t o = b * H2;
    for (int64_t j = 0; j < H2; ++j) {
      const int64_t u = o + j;
      const float wu = BOUNDED ? c.weight(Z[u]) * w[j] : w[j];
      const int64_t d = quantize(wu * v[u]);
      x[u] = SIGN > 0 ? x[u] + d : x[u] - d;
    }
    if (xf)
      for (int64_t j = 0; j < H2; ++j) xf[o + j] = to_float(x[o + j]);
  }
}

template <int SIGN>
void lstm_update(const Cell& c, int64_t* x, const float* gate, int64_t gstride, const float* v, const int64_t* Z,
                 float* xf) {
  if (c.bounded)
    lstm_update<true, SIGN>(c, x, gate, gstride, v, Z, xf);
  else
    lstm_update<false, SIGN>(c, x, gate, gstride, v, Z, xf);
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
  if (acts) {
    to_float_into(h, acts + (c.n_gates - 1) * n + 2 * n, n);
    to_float_into(cs, acts + (c.n_gates - 1) * n + 3 * n, n);
  }
  if (c.forget) {
    lstm_forget_gates<true>(c, sg, zc, zh, Zc, Zh);
    buf.mul(cs, Zc, zc, H2, 0, s.tmp.data_ptr<int64_t>());
  }
  lstm_update<1>(c, cs, sg + of, ns, g, Zc, s.cf.data_ptr<float>());  // + round(2^23 i g), i weighed if bounded
  at::tanh_out(s.tc, s.cf);
  const float* tc = s.tc.data_ptr<float>();
  if (c.forget) buf.mul(h, Zh, zh, H2, skip, s.tmp.data_ptr<int64_t>());
  lstm_update<1>(c, h, sg + of + H2, ns, tc, Zh, hf_out);  // + round(2^23 o tanh(c))
  if (acts) lstm_save(c, acts, s);
}

template <bool FORGET>
NOINLINE void gru_prepare_t(const Cell& c, const float* __restrict__ a, int64_t* __restrict__ Z,
                            float* __restrict__ z) {
  const int64_t B = c.B, H2 = c.H2;
  const float m = c.m, omm = c.omm;
  const bool zg = c.zero_guard;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H2; ++j) {
      const int64_t u = b * H2 + j;
      const float sz = a[b * 2 * H2 + j];
      const float zu = FORGET ? sz * m + omm : sz;
      z[u] = zu;
      Z[u] = FORGET ? quantize_gate(zu, zg) : FORGET_ONE;
    }
}

// The GRU's update gate and its quantisation: z = s_z m + (1 - m) (s_z without forgetting), Z = round(1024 z).
void gru_prepare(const Cell& c, Scratch& s, int64_t* Z, float* z) {
  if (c.forget)
    gru_prepare_t<true>(c, s.a.data_ptr<float>(), Z, z);
  else
    gru_prepare_t<false>(c, s.a.data_ptr<float>(), Z, z);
}

// h <- h + SIGN round(2^23 (1 - z) g); and, with hf, hf <- float(h).
template <int SIGN>
NOINLINE void gru_update(int64_t n, int64_t* __restrict__ h, const float* __restrict__ z,
                         const float* __restrict__ g, float* __restrict__ hf) {
  for (int64_t u = 0; u < n; ++u) {
    const int64_t d = quantize((1.0f - z[u]) * g[u]);
    h[u] = SIGN > 0 ? h[u] + d : h[u] - d;
  }
  if (hf)
    for (int64_t u = 0; u < n; ++u) hf[u] = to_float(h[u]);
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
  gru_update<1>(n, h, z, g, hf_out);  // + round(2^23 (1 - z) g)
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
  if (c.forget) lstm_forget_gates<false>(c, sg, nullptr, nullptr, Zc, Zh);
  lstm_update<-1>(c, h, sg + of + H2, ns, tc, Zh, nullptr);  // undo h first: it was updated last
  lstm_update<-1>(c, cs, sg + of, ns, g, Zc, nullptr);
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
  gru_update<-1>(n, h, z, g, nullptr);
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

template <bool FORGET, bool BOUNDED>
NOINLINE void lstm_half_backward_t(const Cell& c, const float* __restrict__ acts, float* __restrict__ dh,
                                   float* __restrict__ dc, float* __restrict__ ds, int64_t ds_stride) {
  const Cell cc = c;  // a local copy: the stores below cannot change its fields
  for (int64_t b = 0; b < cc.B; ++b)
    for (int64_t j = 0; j < cc.H2; ++j) lstm_backward_unit_t<FORGET, BOUNDED>(cc, acts, b, j, dh, dc, ds, ds_stride);
}

void lstm_half_backward(const Cell& c, const float* acts, float* dh, float* dc, float* ds, int64_t ds_stride) {
  if (!c.forget)
    lstm_half_backward_t<false, false>(c, acts, dh, dc, ds, ds_stride);
  else if (c.bounded)
    lstm_half_backward_t<true, true>(c, acts, dh, dc, ds, ds_stride);
  else
    lstm_half_backward_t<true, false>(c, acts, dh, dc, ds, ds_stride);
}

template <bool FORGET>
NOINLINE void gru_half_backward_g_t(const Cell& c, const float* __restrict__ acts, const float* __restrict__ dh,
                                    float* __restrict__ ds, int64_t ds_stride) {
  const Cell cc = c;
  for (int64_t b = 0; b < cc.B; ++b)
    for (int64_t j = 0; j < cc.H2; ++j) gru_backward_g_unit_t<FORGET>(cc, acts, b, j, dh, ds, ds_stride);
}

template <bool FORGET>
NOINLINE void gru_half_backward_zr_t(const Cell& c, const float* __restrict__ acts, const float* __restrict__ left,
                                     const float* __restrict__ drh, float* __restrict__ dh, float* __restrict__ ds,
                                     int64_t ds_stride) {
  const Cell cc = c;
  for (int64_t b = 0; b < cc.B; ++b)
    for (int64_t j = 0; j < cc.H2; ++j) gru_backward_zr_unit_t<FORGET>(cc, acts, b, j, left, drh, dh, ds, ds_stride);
}

void gru_half_backward_g(const Cell& c, const float* acts, const float* dh, float* ds, int64_t ds_stride) {
  if (c.forget)
    gru_half_backward_g_t<true>(c, acts, dh, ds, ds_stride);
  else
    gru_half_backward_g_t<false>(c, acts, dh, ds, ds_stride);
}

void gru_half_backward_zr(const Cell& c, const float* acts, const float* left, const float* drh, float* dh, float* ds,
                          int64_t ds_stride) {
  if (c.forget)
    gru_half_backward_zr_t<true>(c, acts, left, drh, dh, ds, ds_stride);
  else
    gru_half_backward_zr_t<false>(c, acts, left, drh, dh, ds, ds_stride);
}

NOINLINE void gru_add_drh_r(const Cell& c, const float* __restrict__ acts, const float* __restrict__ drh,
                            float* __restrict__ dhb) {
  const Cell cc = c;
  for (int64_t b = 0; b < cc.B; ++b)
    for (int64_t j = 0; j < cc.H2; ++j) add_drh_r_unit(cc, acts, b, j, drh, dhb);
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
        float* dsx = dx + half * c.blk;
        gru_half_backward_g(c, a, dha, dsx, stride);
        at::mm_out(drh, dxp.narrow(1, half * c.blk + 2 * H2, H2), whT[2 * half + 1]);
        gru_half_backward_zr(c, a, left, drh.data_ptr<float>(), dha, dsx, stride);
        at::mm_out(mmo, dxp.narrow(1, half * c.blk, 2 * H2), whT[2 * half]);
        dhb.add_(mmo);
        gru_add_drh_r(c, a, drh.data_ptr<float>(), dhb.data_ptr<float>());
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
