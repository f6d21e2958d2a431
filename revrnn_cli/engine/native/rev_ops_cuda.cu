// CUDA implementation of the fused chunk operators (schemas in rev_ops_cpu.cpp).
//
// The same algorithm, equations and layouts as the CPU file, with the unit loops as kernels and the
// byte stack placed by prefix sums instead of a sequential cursor: a multiplication writes the bytes
// of the units that emit at pos + (emitting units before them), in unit order, exactly as
// InformationBuffer._push does; a division pulls them back the same way. The stack position and
// the counters stay on the device (``meta``), so no kernel result is read on the host inside a
// chunk. Matmuls and activations are the ATen calls of the eager cells, on operands of the same
// shapes, so on one GPU the fused and the reference path follow the same integer trajectory.
//
// This file cannot run on a machine without a GPU. revrnn_cli/engine/native.py therefore checks it
// against the reference path, bit for bit, the first time it is used on a device, and falls back
// to the reference path (with one warning) if they disagree; `make gpu-check` runs the full check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "rev_cell.h"
#include "rev_math.h"

namespace revrnn {
namespace {

using at::Tensor;

constexpr int THREADS = 256;

inline int blocks_for(int64_t n) { return static_cast<int>((n + THREADS - 1) / THREADS); }
inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

#define KERNEL_LOOP(u, n) for (int64_t u = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; u < (n); u += (int64_t)blockDim.x * gridDim.x)

// ---- the buffer ---------------------------------------------------------------------------------

struct GpuBuffer {
  int64_t* head = nullptr;
  uint8_t* arena = nullptr;
  int64_t capacity = 0;
  int64_t* meta = nullptr;
  double* zprod = nullptr;
  double* fmeta = nullptr;
  Tensor zprod_t, fmeta_t;
  int rounds = 1;
  int64_t n = 0;
  int since_fold = 0;
  Tensor count, flag, scan, X, qh;  // per-unit scratch (int64)
};

__global__ void k_emit_count(const int64_t* head, const int64_t* Z, int64_t n, int64_t width, int64_t skip,
                             int rounds, int64_t* count, int64_t* rest, int64_t* meta, bool track) {
  KERNEL_LOOP(u, n) {
    if (track && Z[u] == FORGET_ONE) atomicAdd(reinterpret_cast<unsigned long long*>(meta + SATURATED), 1ull);
    if (skip && (u % width) < skip) {
      count[u] = 0;
      rest[u] = head[u];
      continue;
    }
    int64_t r;
    count[u] = emit_count(head[u], Z[u], rounds, &r);
    rest[u] = r;
  }
}

__global__ void k_flag_ge(const int64_t* count, int64_t j, int64_t n, int64_t* flag) {
  KERNEL_LOOP(u, n) flag[u] = count[u] >= j ? 1 : 0;
}

// incl: inclusive prefix sum of flag. Bytes of group j go to pos + incl[u] - 1.
__global__ void k_push(const int64_t* head, const int64_t* count, const int64_t* flag, const int64_t* incl,
                       int64_t j, int64_t n, uint8_t* arena, int64_t capacity, int64_t* meta) {
  int64_t pos = meta[POS];
  KERNEL_LOOP(u, n) {
    if (!flag[u]) continue;
    int64_t p = pos + incl[u] - 1;
    if (p >= capacity) {
      meta[OVERFLOW] = 1;
      continue;
    }
    arena[p] = emitted_byte(head[u], static_cast<int>(count[u]), static_cast<int>(j));
  }
}

__global__ void k_advance(const int64_t* incl, int64_t n, int64_t sign, int64_t* meta) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    int64_t p = meta[POS] + sign * incl[n - 1];
    if (p < 0) {
      meta[UNDERFLOW] = 1;
      p = 0;
    }
    meta[POS] = p;
  }
}

__global__ void k_mul_finish(int64_t* h, const int64_t* Z, const int64_t* rest, int64_t n, int64_t width,
                             int64_t skip, int64_t* head) {
  KERNEL_LOOP(u, n) {
    if (skip && (u % width) < skip) {
      h[u] = floor_mul(h[u], Z[u]);
      continue;
    }
    int64_t hd;
    h[u] = mul_finish(h[u], Z[u], rest[u], &hd);
    head[u] = hd;
  }
}

__global__ void k_zprod(double* zprod, const float* z, int64_t n, int64_t width, int64_t skip) {
  KERNEL_LOOP(u, n) if (!(skip && (u % width) < skip)) zprod[u] *= static_cast<double>(z[u]);
}

void scan(GpuBuffer& b) { at::cumsum_out(b.scan, b.flag, 0); }

void fold(GpuBuffer& b) {
  b.fmeta_t.narrow(0, 0, 1).sub_(at::log2(b.zprod_t).sum());
  b.zprod_t.fill_(1.0);
  b.since_fold = 0;
}

void gpu_mul(GpuBuffer& b, int64_t* h, const int64_t* Z, const float* z, int64_t width, int64_t skip) {
  const int64_t n = b.n;
  auto s = stream();
  int64_t* count = b.count.data_ptr<int64_t>();
  int64_t* rest = b.X.data_ptr<int64_t>();
  k_emit_count<<<blocks_for(n), THREADS, 0, s>>>(b.head, Z, n, width, skip, b.rounds, count, rest, b.meta,
                                                 b.zprod != nullptr);
  for (int j = b.rounds; j >= 1; --j) {
    k_flag_ge<<<blocks_for(n), THREADS, 0, s>>>(count, j, n, b.flag.data_ptr<int64_t>());
    scan(b);
    k_push<<<blocks_for(n), THREADS, 0, s>>>(b.head, count, b.flag.data_ptr<int64_t>(), b.scan.data_ptr<int64_t>(),
                                             j, n, b.arena, b.capacity, b.meta);
    k_advance<<<1, 1, 0, s>>>(b.scan.data_ptr<int64_t>(), n, 1, b.meta);
  }
  k_mul_finish<<<blocks_for(n), THREADS, 0, s>>>(h, Z, rest, n, width, skip, b.head);
  if (b.zprod) {
    k_zprod<<<blocks_for(n), THREADS, 0, s>>>(b.zprod, z, n, width, skip);
    if (++b.since_fold == 32) fold(b);
  }
}

__global__ void k_div_start(const int64_t* h, const int64_t* Z, int64_t n, int64_t width, int64_t skip,
                            int64_t* head, int64_t* X, int64_t* qh, int64_t* meta) {
  KERNEL_LOOP(u, n) {
    if (skip && (u % width) < skip) continue;
    int64_t x, q;
    head[u] = div_start(h[u], Z[u], head[u], &x, &q);
    X[u] = x;
    qh[u] = q;
    atomicMin(reinterpret_cast<long long*>(meta + QMIN), static_cast<long long>(q));
    atomicMax(reinterpret_cast<long long*>(meta + QMAX), static_cast<long long>(q));
  }
}

__global__ void k_need(const int64_t* head, int64_t n, int64_t width, int64_t skip, int64_t* flag) {
  KERNEL_LOOP(u, n) flag[u] = (!(skip && (u % width) < skip) && head[u] < HEAD_FLOOR) ? 1 : 0;
}

// the units that need a byte take the top incl[n-1] bytes, in unit order
__global__ void k_pop(const int64_t* flag, const int64_t* incl, int64_t n, const uint8_t* arena, const int64_t* meta,
                      int64_t* head) {
  int64_t start = meta[POS] - incl[n - 1];
  KERNEL_LOOP(u, n) {
    if (!flag[u]) continue;
    int64_t p = start + incl[u] - 1;
    int64_t byte = p >= 0 ? static_cast<int64_t>(arena[p]) : 0;
    head[u] = (head[u] << WORD_BITS) + byte;
  }
}

__global__ void k_div_finish(int64_t* h, const int64_t* X, const int64_t* qh, int64_t n, int64_t width,
                             int64_t skip, const int64_t* restore, int64_t B) {
  KERNEL_LOOP(u, n) {
    int64_t j = u % width;
    if (skip && j < skip) {
      if (restore) h[u] = restore[(u / width) * skip + j];
      continue;
    }
    h[u] = div_finish(X[u], qh[u]);
  }
}

void gpu_div(GpuBuffer& b, int64_t* h, const int64_t* Z, int64_t width, int64_t skip, const int64_t* restore,
             int64_t B) {
  const int64_t n = b.n;
  auto s = stream();
  int64_t* X = b.X.data_ptr<int64_t>();
  int64_t* qh = b.qh.data_ptr<int64_t>();
  k_div_start<<<blocks_for(n), THREADS, 0, s>>>(h, Z, n, width, skip, b.head, X, qh, b.meta);
  for (int r = 0; r < b.rounds; ++r) {
    k_need<<<blocks_for(n), THREADS, 0, s>>>(b.head, n, width, skip, b.flag.data_ptr<int64_t>());
    scan(b);
    k_pop<<<blocks_for(n), THREADS, 0, s>>>(b.flag.data_ptr<int64_t>(), b.scan.data_ptr<int64_t>(), n, b.arena,
                                            b.meta, b.head);
    k_advance<<<1, 1, 0, s>>>(b.scan.data_ptr<int64_t>(), n, -1, b.meta);
  }
  k_div_finish<<<blocks_for(n), THREADS, 0, s>>>(h, X, qh, n, width, skip, restore, B);
}

// ---- cells -----------------------------------------------------------------------------------------

Cell make_cell(int64_t code, int64_t H2, int64_t B, double m, bool forget, bool zero_guard, int64_t skip) {
  return Cell(code, H2, B, m, forget, zero_guard, skip);
}

__global__ void k_to_float(const int64_t* h, float* out, int64_t n, int64_t width, int64_t out_stride,
                           int64_t out_col) {
  KERNEL_LOOP(u, n) out[(u / width) * out_stride + out_col + (u % width)] = to_float(h[u]);
}

void to_float_into(const int64_t* h, float* out, int64_t n, int64_t width, int64_t stride, int64_t col) {
  k_to_float<<<blocks_for(n), THREADS, 0, stream()>>>(h, out, n, width, stride, col);
}

// LSTM: Z for both forget gates from the sigmoids; the old states' floats for the backward
__global__ void k_lstm_gates(Cell c, const float* sg, int64_t* Zc, int64_t* Zh, float* zc, float* zh) {
  const int64_t ns = (c.n_gates - 1) * c.H2;
  KERNEL_LOOP(u, c.n()) {
    int64_t b = u / c.H2, j = u % c.H2;
    zc[u] = sg[b * ns + j] * c.m + c.omm;
    zh[u] = sg[b * ns + c.H2 + j] * c.m + c.omm;
    Zc[u] = quantize_gate(zc[u], c.zero_guard);
    Zh[u] = quantize_gate(zh[u], c.zero_guard);
  }
}

__global__ void k_lstm_c(Cell c, const float* sg, const float* g, const int64_t* Zc, int64_t* cs, float* cf,
                         int64_t sign) {
  const int64_t ns = (c.n_gates - 1) * c.H2, of = c.forget ? 2 * c.H2 : 0;
  KERNEL_LOOP(u, c.n()) {
    int64_t b = u / c.H2, j = u % c.H2;
    cs[u] += sign * quantize(c.weigh(sg[b * ns + of + j], c.bounded ? Zc[u] : 0) * g[u]);
    cf[u] = to_float(cs[u]);
  }
}

__global__ void k_lstm_h(Cell c, const float* sg, const float* tc, const int64_t* Zh, int64_t* h, float* hf,
                         int64_t sign) {
  const int64_t ns = (c.n_gates - 1) * c.H2, of = c.forget ? 2 * c.H2 : 0;
  KERNEL_LOOP(u, c.n()) {
    int64_t b = u / c.H2, j = u % c.H2;
    h[u] += sign * quantize(c.weigh(sg[b * ns + of + c.H2 + j], c.bounded ? Zh[u] : 0) * tc[u]);
    if (hf) hf[u] = to_float(h[u]);
  }
}

__global__ void k_gru_gates(Cell c, const float* s, int64_t* Z, float* z) {
  KERNEL_LOOP(u, c.n()) {
    int64_t b = u / c.H2, j = u % c.H2;
    float sz = s[b * 2 * c.H2 + j];
    z[u] = c.forget ? sz * c.m + c.omm : sz;
    Z[u] = c.forget ? quantize_gate(z[u], c.zero_guard) : FORGET_ONE;
  }
}

__global__ void k_gru_update(Cell c, const float* z, const float* g, int64_t* h, float* hf, int64_t sign) {
  KERNEL_LOOP(u, c.n()) {
    h[u] += sign * quantize((1.0f - z[u]) * g[u]);
    if (hf) hf[u] = to_float(h[u]);
  }
}

// acts of one half and step, as a flat tensor [W * B * H2] (layout of rev_ops_cpu.cpp)
void save_lstm(const Cell& c, Tensor acts, const Scratch& s) {
  const int64_t n = c.n(), ns = (c.n_gates - 1) * n;
  acts.narrow(0, 0, ns).copy_(s.sg.reshape({-1}));
  acts.narrow(0, ns, n).copy_(s.gt.reshape({-1}));
  acts.narrow(0, ns + n, n).copy_(s.tc.reshape({-1}));
}

void save_gru(const Cell& c, Tensor acts, const Scratch& s) {
  const int64_t n = c.n();
  acts.narrow(0, 0, 2 * n).copy_(s.a.reshape({-1}));
  acts.narrow(0, 2 * n, n).copy_(s.a2.reshape({-1}));
}

GpuBuffer make_buffer(const c10::optional<Tensor>& head, const c10::optional<Tensor>& arena,
                      const c10::optional<Tensor>& meta, const c10::optional<Tensor>& zprod,
                      const c10::optional<Tensor>& fmeta, int64_t rounds, int64_t n, const at::TensorOptions& f32) {
  GpuBuffer b;
  b.rounds = static_cast<int>(rounds);
  b.n = n;
  if (head.has_value() && head->defined()) {
    b.head = head->data_ptr<int64_t>();
    b.arena = arena->data_ptr<uint8_t>();
    b.capacity = arena->numel();
    b.meta = meta->data_ptr<int64_t>();
    if (zprod.has_value() && zprod->defined()) {
      b.zprod_t = *zprod;
      b.fmeta_t = *fmeta;
      b.zprod = zprod->data_ptr<double>();
      b.fmeta = fmeta->data_ptr<double>();
      fold(b);  // start each call from a folded product, so the host knows when the next fold is due
    }
    auto i64 = f32.dtype(at::kLong);
    b.count = at::empty({n}, i64);
    b.flag = at::empty({n}, i64);
    b.scan = at::empty({n}, i64);
    b.X = at::empty({n}, i64);
    b.qh = at::empty({n}, i64);
  }
  return b;
}

void lstm_forward(const Cell& c, GpuBuffer& buf, const Tensor& xp, const Tensor& wh, Scratch& s, int64_t* h,
                  int64_t* cs, Tensor acts, float* left, int64_t skip) {
  const int64_t n = c.n();
  auto st = stream();
  lstm_gates(c, xp, wh, s);
  if (left) cudaMemcpyAsync(left, s.hbf.data_ptr<float>(), n * sizeof(float), cudaMemcpyDeviceToDevice, st);
  int64_t* Zc = s.zi.data_ptr<int64_t>();
  int64_t* Zh = Zc + n;
  if (acts.defined()) {
    float* old = acts.data_ptr<float>() + (c.n_gates - 1) * n + 2 * n;
    to_float_into(h, old, n, n, 0, 0);
    to_float_into(cs, old + n, n, n, 0, 0);
  }
  if (c.forget) {
    k_lstm_gates<<<blocks_for(n), THREADS, 0, st>>>(c, s.sg.data_ptr<float>(), Zc, Zh, s.zf.data_ptr<float>(),
                                                    s.zh.data_ptr<float>());
    gpu_mul(buf, cs, Zc, s.zf.data_ptr<float>(), c.H2, 0);
  }
  k_lstm_c<<<blocks_for(n), THREADS, 0, st>>>(c, s.sg.data_ptr<float>(), s.gt.data_ptr<float>(), Zc, cs,
                                              s.cf.data_ptr<float>(), 1);
  at::tanh_out(s.tc, s.cf);
  if (c.forget) gpu_mul(buf, h, Zh, s.zh.data_ptr<float>(), c.H2, skip);
  k_lstm_h<<<blocks_for(n), THREADS, 0, st>>>(c, s.sg.data_ptr<float>(), s.tc.data_ptr<float>(), Zh, h, nullptr, 1);
  if (acts.defined()) save_lstm(c, acts, s);
}

void lstm_reverse(const Cell& c, GpuBuffer& buf, const Tensor& xp, const Tensor& wh, Scratch& s, int64_t* h,
                  int64_t* cs, Tensor acts, float* left, int64_t skip, const int64_t* restore) {
  const int64_t n = c.n();
  auto st = stream();
  lstm_gates(c, xp, wh, s);
  if (left) cudaMemcpyAsync(left, s.hbf.data_ptr<float>(), n * sizeof(float), cudaMemcpyDeviceToDevice, st);
  to_float_into(cs, s.cf.data_ptr<float>(), n, n, 0, 0);
  at::tanh_out(s.tc, s.cf);
  int64_t* Zc = s.zi.data_ptr<int64_t>();
  int64_t* Zh = Zc + n;
  if (c.forget)
    k_lstm_gates<<<blocks_for(n), THREADS, 0, st>>>(c, s.sg.data_ptr<float>(), Zc, Zh, s.zf.data_ptr<float>(),
                                                    s.zh.data_ptr<float>());
  k_lstm_h<<<blocks_for(n), THREADS, 0, st>>>(c, s.sg.data_ptr<float>(), s.tc.data_ptr<float>(), Zh, h, nullptr, -1);
  k_lstm_c<<<blocks_for(n), THREADS, 0, st>>>(c, s.sg.data_ptr<float>(), s.gt.data_ptr<float>(), Zc, cs,
                                              s.cf.data_ptr<float>(), -1);
  if (c.forget) {
    gpu_div(buf, h, Zh, c.H2, skip, restore, c.B);
    gpu_div(buf, cs, Zc, c.H2, 0, nullptr, c.B);
  }
  if (acts.defined()) {
    save_lstm(c, acts, s);
    float* old = acts.data_ptr<float>() + (c.n_gates - 1) * n + 2 * n;
    to_float_into(h, old, n, n, 0, 0);
    to_float_into(cs, old + n, n, n, 0, 0);
  }
}

void gru_forward(const Cell& c, GpuBuffer& buf, const Tensor& xp, const Tensor& wh, const Tensor& vh, Scratch& s,
                 int64_t* h, Tensor acts, float* left, float* left_r, int64_t skip) {
  const int64_t n = c.n();
  auto st = stream();
  gru_gates(c, xp, wh, vh, s);
  if (left) {
    cudaMemcpyAsync(left, s.hbf.data_ptr<float>(), n * sizeof(float), cudaMemcpyDeviceToDevice, st);
    cudaMemcpyAsync(left_r, s.rh.data_ptr<float>(), n * sizeof(float), cudaMemcpyDeviceToDevice, st);
  }
  int64_t* Z = s.zi.data_ptr<int64_t>();
  k_gru_gates<<<blocks_for(n), THREADS, 0, st>>>(c, s.a.data_ptr<float>(), Z, s.zf.data_ptr<float>());
  if (acts.defined()) to_float_into(h, acts.data_ptr<float>() + 3 * n, n, n, 0, 0);
  if (c.forget) gpu_mul(buf, h, Z, s.zf.data_ptr<float>(), c.H2, skip);
  k_gru_update<<<blocks_for(n), THREADS, 0, st>>>(c, s.zf.data_ptr<float>(), s.a2.data_ptr<float>(), h, nullptr,
                                                  1);
  if (acts.defined()) save_gru(c, acts, s);
}

void gru_reverse(const Cell& c, GpuBuffer& buf, const Tensor& xp, const Tensor& wh, const Tensor& vh, Scratch& s,
                 int64_t* h, Tensor acts, float* left, float* left_r, int64_t skip, const int64_t* restore) {
  const int64_t n = c.n();
  auto st = stream();
  gru_gates(c, xp, wh, vh, s);
  if (left) {
    cudaMemcpyAsync(left, s.hbf.data_ptr<float>(), n * sizeof(float), cudaMemcpyDeviceToDevice, st);
    cudaMemcpyAsync(left_r, s.rh.data_ptr<float>(), n * sizeof(float), cudaMemcpyDeviceToDevice, st);
  }
  int64_t* Z = s.zi.data_ptr<int64_t>();
  k_gru_gates<<<blocks_for(n), THREADS, 0, st>>>(c, s.a.data_ptr<float>(), Z, s.zf.data_ptr<float>());
  k_gru_update<<<blocks_for(n), THREADS, 0, st>>>(c, s.zf.data_ptr<float>(), s.a2.data_ptr<float>(), h, nullptr,
                                                  -1);
  if (c.forget) gpu_div(buf, h, Z, c.H2, skip, restore, c.B);
  if (acts.defined()) {
    save_gru(c, acts, s);
    to_float_into(h, acts.data_ptr<float>() + 3 * n, n, n, 0, 0);
  }
}

// ---- local backward kernels (the CPU file's loops, one thread per unit) ------------------------------

__global__ void k_lstm_backward(Cell c, const float* acts, float* dh, float* dc, float* ds, int64_t ds_stride) {
  KERNEL_LOOP(u, c.n()) lstm_backward_unit(c, acts, u / c.H2, u % c.H2, dh, dc, ds, ds_stride);
}

__global__ void k_gru_backward_g(Cell c, const float* acts, const float* dh, float* ds, int64_t ds_stride) {
  KERNEL_LOOP(u, c.n()) gru_backward_g_unit(c, acts, u / c.H2, u % c.H2, dh, ds, ds_stride);
}

__global__ void k_gru_backward_zr(Cell c, const float* acts, const float* left, const float* drh, float* dh,
                                  float* ds, int64_t ds_stride) {
  KERNEL_LOOP(u, c.n()) gru_backward_zr_unit(c, acts, u / c.H2, u % c.H2, left, drh, dh, ds, ds_stride);
}

__global__ void k_add_drh_r(Cell c, const float* acts, const float* drh, float* dhb) {
  KERNEL_LOOP(u, c.n()) add_drh_r_unit(c, acts, u / c.H2, u % c.H2, drh, dhb);
}

__global__ void k_add_dy(const float* y, float* d, int64_t n, int64_t H2) {
  KERNEL_LOOP(u, 2 * n) {
    int64_t half = u / n, v = u % n, b = v / H2, j = v % H2;
    d[u] += y[b * 2 * H2 + half * H2 + j];
  }
}

// ---- the chunk operators ---------------------------------------------------------------------------

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_chunk(
    int64_t kind, const Tensor& XP, at::TensorList state, at::TensorList wh, const c10::optional<Tensor>& head,
    const c10::optional<Tensor>& arena, const c10::optional<Tensor>& meta, const c10::optional<Tensor>& zprod,
    const c10::optional<Tensor>& fmeta, double m, bool forget, bool zero_guard, int64_t rounds, int64_t skip,
    bool want_y, bool want_states, bool want_saved) {
  const int64_t K = XP.size(0), B = XP.size(1), H2 = state[0].size(1);
  Cell c = make_cell(kind, H2, B, m, forget, zero_guard, skip);
  const int64_t n = c.n();
  auto f32 = XP.options();
  Outputs o = make_outputs(c, K, state, want_y, want_states, want_saved, f32);
  Tensor st = o.state, Y = o.y, states = o.states, acts = o.acts, lefts = o.lefts;
  GpuBuffer buf = make_buffer(head, arena, meta, zprod, fmeta, rounds, n, f32);
  Scratch s = make_scratch(c, f32);
  int64_t* p = st.data_ptr<int64_t>();
  to_float_into(p + n, s.hbf.data_ptr<float>(), n, n, 0, 0);
  float* L = want_saved ? lefts.data_ptr<float>() : nullptr;
  for (int64_t t = 0; t < K; ++t) {
    Tensor xp = XP[t];
    Tensor a1 = want_saved ? acts[0][t] : Tensor();
    Tensor a2 = want_saved ? acts[1][t] : Tensor();
    if (c.kind == LSTM) {
      lstm_forward(c, buf, xp.narrow(1, 0, c.blk), wh[0], s, p, p + 2 * n, a1, L ? L + t * n : nullptr, skip);
      to_float_into(p, s.hbf.data_ptr<float>(), n, n, 0, 0);
      lstm_forward(c, buf, xp.narrow(1, c.blk, c.blk), wh[1], s, p + n, p + 3 * n, a2, L ? L + (K + t) * n : nullptr,
                   0);
    } else {
      gru_forward(c, buf, xp.narrow(1, 0, c.blk), wh[0], wh[1], s, p, a1, L ? L + t * n : nullptr,
                  L ? L + (K + t) * n : nullptr, skip);
      to_float_into(p, s.hbf.data_ptr<float>(), n, n, 0, 0);
      gru_forward(c, buf, xp.narrow(1, c.blk, c.blk), wh[2], wh[3], s, p + n, a2, L ? L + (2 * K + t) * n : nullptr,
                  L ? L + (3 * K + t) * n : nullptr, 0);
    }
    to_float_into(p + n, s.hbf.data_ptr<float>(), n, n, 0, 0);  // the next step's first half reads h2
    if (want_y) {
      float* y = Y.data_ptr<float>() + t * 2 * n;
      to_float_into(p, y, n, H2, 2 * H2, 0);
      to_float_into(p + n, y, n, H2, 2 * H2, H2);
    }
    if (want_states) states[t].copy_(st);
  }
  return {st, Y, states, acts, lefts};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> reverse_chunk(
    int64_t kind, const Tensor& XP, at::TensorList state, at::TensorList wh, const c10::optional<Tensor>& head,
    const c10::optional<Tensor>& arena, const c10::optional<Tensor>& meta, const c10::optional<Tensor>& restore,
    double m, bool forget, bool zero_guard, int64_t rounds, int64_t skip, bool want_y, bool want_states,
    bool want_saved) {
  const int64_t K = XP.size(0), B = XP.size(1), H2 = state[0].size(1);
  Cell c = make_cell(kind, H2, B, m, forget, zero_guard, skip);
  const int64_t n = c.n();
  auto f32 = XP.options();
  Outputs o = make_outputs(c, K, state, want_y, want_states, want_saved, f32);
  Tensor st = o.state, Y = o.y, states = o.states, acts = o.acts, lefts = o.lefts;
  GpuBuffer buf = make_buffer(head, arena, meta, c10::nullopt, c10::nullopt, rounds, n, f32);
  Scratch s = make_scratch(c, f32);
  Tensor rcont;
  const int64_t* rs = nullptr;
  if (restore.has_value() && restore->defined() && skip > 0) {
    rcont = restore->contiguous();
    rs = rcont.data_ptr<int64_t>();
  }
  int64_t* p = st.data_ptr<int64_t>();
  float* L = want_saved ? lefts.data_ptr<float>() : nullptr;
  for (int64_t t = K - 1; t >= 0; --t) {
    Tensor xp = XP[t];
    if (want_y) {
      float* y = Y.data_ptr<float>() + t * 2 * n;
      to_float_into(p, y, n, H2, 2 * H2, 0);
      to_float_into(p + n, y, n, H2, 2 * H2, H2);
    }
    Tensor a1 = want_saved ? acts[0][t] : Tensor();
    Tensor a2 = want_saved ? acts[1][t] : Tensor();
    const int64_t* rt = rs ? rs + t * B * skip : nullptr;
    to_float_into(p, s.hbf.data_ptr<float>(), n, n, 0, 0);
    if (c.kind == LSTM) {
      lstm_reverse(c, buf, xp.narrow(1, c.blk, c.blk), wh[1], s, p + n, p + 3 * n, a2, L ? L + (K + t) * n : nullptr,
                   0, nullptr);
      to_float_into(p + n, s.hbf.data_ptr<float>(), n, n, 0, 0);
      lstm_reverse(c, buf, xp.narrow(1, 0, c.blk), wh[0], s, p, p + 2 * n, a1, L ? L + t * n : nullptr, skip, rt);
    } else {
      gru_reverse(c, buf, xp.narrow(1, c.blk, c.blk), wh[2], wh[3], s, p + n, a2, L ? L + (2 * K + t) * n : nullptr,
                  L ? L + (3 * K + t) * n : nullptr, 0, nullptr);
      to_float_into(p + n, s.hbf.data_ptr<float>(), n, n, 0, 0);
      gru_reverse(c, buf, xp.narrow(1, 0, c.blk), wh[0], wh[1], s, p, a1, L ? L + t * n : nullptr,
                  L ? L + (K + t) * n : nullptr, skip, rt);
    }
    if (want_states) states[t].copy_(st);
  }
  return {st, Y, states, acts, lefts};
}

std::tuple<Tensor, Tensor> backward_chunk(int64_t kind, const Tensor& acts, const Tensor& lefts,
                                          at::TensorList dstate, const c10::optional<Tensor>& dY,
                                          at::TensorList whT, double m, bool forget, bool zero_guard) {
  const int64_t K = acts.size(1), B = dstate[0].size(0), H2 = dstate[0].size(1);
  Cell c = make_cell(kind, H2, B, m, forget, zero_guard, 0);
  const int64_t n = c.n();
  auto f32 = acts.options();
  auto st = stream();
  Tensor dXP = at::empty({K, B, 2 * c.blk}, f32);
  Tensor ds = at::empty({c.nb, B, H2}, f32);
  for (int64_t k = 0; k < c.nb; ++k) ds[k].copy_(dstate[k]);
  float* d = ds.data_ptr<float>();
  Tensor dYc;
  if (dY.has_value() && dY->defined()) dYc = dY->contiguous();
  Scratch s = make_scratch(c, f32);
  const int64_t stride = 2 * c.blk;
  for (int64_t t = K - 1; t >= 0; --t) {
    if (dYc.defined()) k_add_dy<<<blocks_for(2 * n), THREADS, 0, st>>>(dYc[t].data_ptr<float>(), d, n, H2);
    Tensor dxp = dXP[t];
    float* dx = dxp.data_ptr<float>();
    if (c.kind == LSTM) {
      k_lstm_backward<<<blocks_for(n), THREADS, 0, st>>>(c, acts[1][t].data_ptr<float>(), d + n, d + 3 * n,
                                                         dx + c.blk, stride);
      at::mm_out(s.mm, dxp.narrow(1, c.blk, c.blk), whT[1]);
      ds[0].add_(s.mm);
      k_lstm_backward<<<blocks_for(n), THREADS, 0, st>>>(c, acts[0][t].data_ptr<float>(), d, d + 2 * n, dx, stride);
      at::mm_out(s.mm, dxp.narrow(1, 0, c.blk), whT[0]);
      ds[1].add_(s.mm);
    } else {
      for (int half = 1; half >= 0; --half) {
        const float* a = acts[half][t].data_ptr<float>();
        const float* left = lefts[2 * half][t].data_ptr<float>();
        float* dha = d + half * n;
        Tensor dhb = ds[1 - half];
        float* dsx = dx + half * c.blk;
        k_gru_backward_g<<<blocks_for(n), THREADS, 0, st>>>(c, a, dha, dsx, stride);
        at::mm_out(s.drh, dxp.narrow(1, half * c.blk + 2 * H2, H2), whT[2 * half + 1]);
        k_gru_backward_zr<<<blocks_for(n), THREADS, 0, st>>>(c, a, left, s.drh.data_ptr<float>(), dha, dsx, stride);
        at::mm_out(s.mm, dxp.narrow(1, half * c.blk, 2 * H2), whT[2 * half]);
        dhb.add_(s.mm);
        k_add_drh_r<<<blocks_for(n), THREADS, 0, st>>>(c, a, s.drh.data_ptr<float>(), dhb.data_ptr<float>());
      }
    }
  }
  return {dXP, ds};
}

}  // namespace
}  // namespace revrnn

TORCH_LIBRARY_IMPL(revrnn, CUDA, m) {
  m.impl("forward_chunk", &revrnn::forward_chunk);
  m.impl("reverse_chunk", &revrnn::reverse_chunk);
  m.impl("backward_chunk", &revrnn::backward_chunk);
}
