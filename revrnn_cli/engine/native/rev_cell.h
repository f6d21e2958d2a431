// What the CPU and CUDA implementations share about a cell: its shape constants, the bounded
// update's weight, and the outputs of a chunk operator (host code; the arithmetic is in rev_math.h).
#pragma once

#include <ATen/ATen.h>

#include "rev_math.h"

namespace revrnn {

constexpr int64_t GRU = 0;
constexpr int64_t LSTM = 1;

// Saved per half-step for the local backward (floats per unit): the LSTM's sigmoids [B, (f p) i o]
// row by row as computed, then g, tanh(c), h_old, c_old; the GRU's sigmoids [B, z r], then g, h_old.
// The quantised gates are not saved: the backward recomputes them from the sigmoids, bit for bit.
struct Cell {
  int64_t kind, H2, B, n_gates, blk, nb, W, n_rec;
  float m, omm;
  bool forget, zero_guard, bounded;
  int64_t skip;
  // cell codes: 0 RevGRU, 1 RevLSTM (the paper's update), 2 RevLSTM with the bounded (convex) update
  Cell(int64_t code, int64_t H2_, int64_t B_, double m_, bool forget_, bool zero_guard_, int64_t skip_)
      : kind(code >= 1 ? LSTM : GRU), H2(H2_), B(B_), forget(forget_), zero_guard(zero_guard_),
        bounded(code == 2), skip(skip_) {
    m = static_cast<float>(m_);
    omm = static_cast<float>(1.0 - m_);
    if (kind == LSTM) {
      n_gates = forget ? 5 : 3;
      nb = 4;
      W = (n_gates - 1) + 4;
      n_rec = 2;
    } else {
      n_gates = 3;
      nb = 2;
      W = 4;
      n_rec = 4;
    }
    blk = n_gates * H2;
  }
  REV_HD int64_t n() const { return B * H2; }
  // the bounded update's weight of an additive term, 1 - Z/1024 (exact in float32)
  REV_HD float weight(int64_t Z) const { return static_cast<float>(FORGET_ONE - Z) * INV_FORGET_ONE; }
  REV_HD float weigh(float x, int64_t Z) const { return bounded ? weight(Z) * x : x; }
};

// new state [blocks, B, H2]; outputs [K, B, H]; every state [K, blocks, B, H2]; saved activations
// [2 halves, K, W B H2]; the recurrent weights' left operands [n_rec, K, B, H2] (empty if not asked)
struct Outputs {
  at::Tensor state, y, states, acts, lefts;
};

inline Outputs make_outputs(const Cell& c, int64_t K, at::TensorList state, bool want_y, bool want_states,
                            bool want_saved, const at::TensorOptions& f32) {
  Outputs o;
  auto i64 = f32.dtype(at::kLong);
  o.state = at::empty({c.nb, c.B, c.H2}, i64);
  for (int64_t k = 0; k < c.nb; ++k) o.state[k].copy_(state[k]);
  o.y = want_y ? at::empty({K, c.B, 2 * c.H2}, f32) : at::empty({0}, f32);
  o.states = want_states ? at::empty({K, c.nb, c.B, c.H2}, i64) : at::empty({0}, i64);
  o.acts = want_saved ? at::empty({2, K, c.W * c.B * c.H2}, f32) : at::empty({0}, f32);
  o.lefts = want_saved ? at::empty({c.n_rec, K, c.B, c.H2}, f32) : at::empty({0}, f32);
  return o;
}

// Per-call scratch of the half-steps (allocated once per chunk, on the operator's device).
struct Scratch {
  at::Tensor a, a2, hbf, rh, sg, gt, cf, tc, zi, zf, zh, tmp, mm, drh;
};

inline Scratch make_scratch(const Cell& c, const at::TensorOptions& f32) {
  Scratch s;
  const int64_t B = c.B, H2 = c.H2;
  auto i64 = f32.dtype(at::kLong);
  s.a = at::empty({B, c.kind == LSTM ? c.blk : 2 * H2}, f32);
  s.a2 = at::empty({B, H2}, f32);
  s.hbf = at::empty({B, H2}, f32);
  s.rh = at::empty({B, H2}, f32);
  s.sg = at::empty({B, (c.n_gates - 1) * H2}, f32);
  s.gt = at::empty({B, H2}, f32);
  s.cf = at::empty({B, H2}, f32);
  s.tc = at::empty({B, H2}, f32);
  s.zi = at::empty({2, B, H2}, i64);
  s.zf = at::empty({B, H2}, f32);
  s.zh = at::empty({B, H2}, f32);
  s.tmp = at::empty({3 * B * H2 + 8}, i64);
  s.mm = at::empty({B, H2}, f32);
  s.drh = at::empty({B, H2}, f32);
  return s;
}

// The gates of one half, with the ATen calls of the eager cells on operands of the same shapes, so
// that every value is bit-identical to the reference path on the same device.
// LSTM (RevLSTMCell.gates): a = xp + hbf wh, s = sigmoid(a[:, :nf H2]), g = tanh(a[:, nf H2:]).
inline void lstm_gates(const Cell& c, const at::Tensor& xp, const at::Tensor& wh, Scratch& s) {
  const int64_t ns = (c.n_gates - 1) * c.H2;
  at::addmm_out(s.a, xp, s.hbf, wh);
  at::sigmoid_out(s.sg, s.a.narrow(1, 0, ns));
  at::tanh_out(s.gt, s.a.narrow(1, ns, c.H2));
}

// GRU (RevGRUCell.gates): s = sigmoid(xp[:, :2H2] + hbf wh) = [z r]; rh = r hbf;
// g = tanh(xp[:, 2H2:] + rh vh).
inline void gru_gates(const Cell& c, const at::Tensor& xp, const at::Tensor& wh, const at::Tensor& vh, Scratch& s) {
  const int64_t H2 = c.H2;
  at::addmm_out(s.a, xp.narrow(1, 0, 2 * H2), s.hbf, wh);
  s.a.sigmoid_();
  at::mul_out(s.rh, s.a.narrow(1, H2, H2), s.hbf);
  at::addmm_out(s.a2, xp.narrow(1, 2 * H2, H2), s.rh, vh);
  s.a2.tanh_();
}

// ---- the local backward of one unit of one half-step (straight-through for the quantisation, §3.6)
// The operations and their order of RevLSTMCell._backhalf / RevGRUCell._backhalf; ``acts`` is the
// half-step's saved block (layout above), ``ds`` the [B, 2 block] gradient of the projected inputs.

// LSTM: dc = dc + (dh o)(1 - tc^2); d[i o f p] = [dc g, dh tc, m dc c_old, m dh h_old] (s - s^2);
// d g = (dc i)(1 - g^2); dh <- dh Z_p / 1024, dc <- dc Z_f / 1024. The bounded update weighs the
// additive terms' gradients by 1 - Z/1024 and differentiates the weight (c_old - i g, h_old - o tc).
// FORGET and BOUNDED are the cell's ``forget`` and ``bounded``, as template arguments so that the CPU
// loop over units has no branches and vectorises; lstm_backward_unit dispatches on the cell's values.
template <bool FORGET, bool BOUNDED>
REV_HD void lstm_backward_unit_t(const Cell& c, const float* __restrict__ acts, int64_t b, int64_t j,
                                 float* __restrict__ dh, float* __restrict__ dc, float* __restrict__ ds,
                                 int64_t ds_stride) {
  const int64_t n = c.n(), H2 = c.H2, nsr = (c.n_gates - 1) * H2, of = FORGET ? 2 * H2 : 0;
  const int64_t u = b * H2 + j;
  const float* G = acts + nsr * c.B;
  const float* TC = G + n;
  const float* HO = TC + n;
  const float* CO = HO + n;
  const float* row = acts + b * nsr;
  float si = row[of + j], so = row[of + H2 + j], g = G[u], tc = TC[u];
  float dhv = dh[u];
  int64_t Zc = 0, Zh = 0;
  if (FORGET) {  // Z of the forward, recomputed from the same sigmoids
    Zc = quantize_gate(row[j] * c.m + c.omm, c.zero_guard);
    Zh = quantize_gate(row[H2 + j] * c.m + c.omm, c.zero_guard);
  }
  float dhu = BOUNDED ? dhv * c.weight(Zh) : dhv;  // upstream of h's additive term
  float dcv = dc[u] + (dhu * so) * (1.0f - tc * tc);
  float dcu = BOUNDED ? dcv * c.weight(Zc) : dcv;  // upstream of c's additive term
  float* d = ds + b * ds_stride;
  d[of + j] = (dcu * g) * (si - si * si);
  d[of + H2 + j] = (dhu * tc) * (so - so * so);
  d[of + 2 * H2 + j] = (dcu * si) * (1.0f - g * g);
  if (FORGET) {
    float sf = row[j], sp = row[H2 + j];
    float cterm = BOUNDED ? CO[u] - si * g : CO[u];  // through the multiplication (and the weight)
    float hterm = BOUNDED ? HO[u] - so * tc : HO[u];
    d[j] = ((dcv * cterm) * c.m) * (sf - sf * sf);
    d[H2 + j] = ((dhv * hterm) * c.m) * (sp - sp * sp);
    dhv = dhv * (static_cast<float>(Zh) * INV_FORGET_ONE);
    dcv = dcv * (static_cast<float>(Zc) * INV_FORGET_ONE);
  }
  dh[u] = dhv;
  dc[u] = dcv;
}

REV_HD void lstm_backward_unit(const Cell& c, const float* acts, int64_t b, int64_t j, float* dh, float* dc,
                               float* ds, int64_t ds_stride) {
  if (!c.forget)
    lstm_backward_unit_t<false, false>(c, acts, b, j, dh, dc, ds, ds_stride);
  else if (c.bounded)
    lstm_backward_unit_t<true, true>(c, acts, b, j, dh, dc, ds, ds_stride);
  else
    lstm_backward_unit_t<true, false>(c, acts, b, j, dh, dc, ds, ds_stride);
}

// GRU, before the matmul drh = dg vh^T: dg = (dh (1 - z))(1 - g^2) into ds's g columns.
template <bool FORGET>
REV_HD void gru_backward_g_unit_t(const Cell& c, const float* __restrict__ acts, int64_t b, int64_t j,
                                  const float* __restrict__ dh, float* __restrict__ ds, int64_t ds_stride) {
  const int64_t H2 = c.H2, u = b * H2 + j;
  float sz = acts[b * 2 * H2 + j], g = acts[2 * c.n() + u];
  float z = FORGET ? sz * c.m + c.omm : sz;
  ds[b * ds_stride + 2 * H2 + j] = (dh[u] * (1.0f - z)) * (1.0f - g * g);
}

REV_HD void gru_backward_g_unit(const Cell& c, const float* acts, int64_t b, int64_t j, const float* dh,
                                float* ds, int64_t ds_stride) {
  if (c.forget)
    gru_backward_g_unit_t<true>(c, acts, b, j, dh, ds, ds_stride);
  else
    gru_backward_g_unit_t<false>(c, acts, b, j, dh, ds, ds_stride);
}

// GRU, after it: dz = (dh (h_old - g)) m (or -dh g without forgetting); d[z r] = [dz (s_z (1 - s_z)),
// (drh hb)(r (1 - r))]; dh <- dh Z / 1024. (dhb gets d[z r] wh^T and then drh r: add_drh_r_unit.)
template <bool FORGET>
REV_HD void gru_backward_zr_unit_t(const Cell& c, const float* __restrict__ acts, int64_t b, int64_t j,
                                   const float* __restrict__ left, const float* __restrict__ drh,
                                   float* __restrict__ dh, float* __restrict__ ds, int64_t ds_stride) {
  const int64_t n = c.n(), H2 = c.H2, u = b * H2 + j;
  float sz = acts[b * 2 * H2 + j], r = acts[b * 2 * H2 + H2 + j], g = acts[2 * n + u];
  float dhu = dh[u];
  float dz = FORGET ? (dhu * (acts[3 * n + u] - g)) * c.m : (-dhu) * g;
  float* d = ds + b * ds_stride;
  d[j] = dz * (sz * (1.0f - sz));
  d[H2 + j] = (drh[u] * left[u]) * (r * (1.0f - r));
  if (FORGET) dhu = dhu * (static_cast<float>(quantize_gate(sz * c.m + c.omm, c.zero_guard)) * INV_FORGET_ONE);
  dh[u] = dhu;
}

REV_HD void gru_backward_zr_unit(const Cell& c, const float* acts, int64_t b, int64_t j, const float* left,
                                 const float* drh, float* dh, float* ds, int64_t ds_stride) {
  if (c.forget)
    gru_backward_zr_unit_t<true>(c, acts, b, j, left, drh, dh, ds, ds_stride);
  else
    gru_backward_zr_unit_t<false>(c, acts, b, j, left, drh, dh, ds, ds_stride);
}

REV_HD void add_drh_r_unit(const Cell& c, const float* __restrict__ acts, int64_t b, int64_t j,
                           const float* __restrict__ drh, float* __restrict__ dhb) {
  const int64_t H2 = c.H2, u = b * H2 + j;
  dhb[u] += drh[u] * acts[b * 2 * H2 + H2 + j];  // + drh r
}

}  // namespace revrnn
