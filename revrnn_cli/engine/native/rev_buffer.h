// The information buffer as the fused CPU steps see it: sequential pushes and pops on the byte stack.
//
// Same layout and order as revrnn_cli/engine/buffer.py: within one multiplication, the bytes of group
// R (deepest) .. 1 (top), each group in unit order; a division pulls the top group back first, in
// unit order. The stack position and the counters live in a small int64 tensor on the device
// (``meta``), so nothing is read on the host inside a step; the host reserves stack capacity once
// per chunk from the bound of `rounds` bytes per unit and multiplication.
#pragma once

#include <math.h>

#include "rev_math.h"

namespace revrnn {

struct CpuBuffer {
  int64_t* head = nullptr;   // [n] per-unit heads
  uint8_t* arena = nullptr;  // the byte stack
  int64_t capacity = 0;
  int64_t* meta = nullptr;   // [META_SIZE]
  double* zprod = nullptr;   // [n] running product of the gates (optimal-bits accounting), or null
  double* fmeta = nullptr;   // [2]: optimal bits folded so far, multiplications since the last fold
  int rounds = 1;
  int64_t n = 0;

  bool active() const { return head != nullptr; }

  void push(uint8_t b) {
    int64_t p = meta[POS];
    if (p >= capacity) {
      meta[OVERFLOW] = 1;
      return;
    }
    arena[p] = b;
    meta[POS] = p + 1;
  }

  uint8_t pop() {
    int64_t p = meta[POS];
    if (p <= 0) {
      meta[UNDERFLOW] = 1;
      return 0;
    }
    meta[POS] = p - 1;
    return arena[p - 1];
  }

  void fold() {  // -log2 of the product every 32 multiplications: float64 cannot underflow before
    if (zprod == nullptr) return;
    fmeta[1] += 1.0;
    if (fmeta[1] < 32.0) return;
    double s = 0.0;
    for (int64_t u = 0; u < n; ++u) {
      s += log2(zprod[u]);
      zprod[u] = 1.0;
    }
    fmeta[0] -= s;
    fmeta[1] = 0.0;
  }

  // h[u] <- h[u] Z[u] / 1024 exactly, storing the lost bits; units with (u % width) < skip are
  // multiplied without storing anything (their values are kept elsewhere). z: the unquantised gate.
  // scratch: at least 2 n int64.
  void mul(int64_t* h, const int64_t* Z, const float* z, int64_t width, int64_t skip, int64_t* scratch) {
    if (rounds == 1) {
      mul1(h, Z, width, skip, scratch);
    } else {
      mul_rounds(h, Z, width, skip, scratch);
    }
    if (zprod != nullptr) {
      int64_t sat = 0;
      for (int64_t u = 0; u < n; ++u) sat += Z[u] == FORGET_ONE;
      meta[SATURATED] += sat;  // counted with the optimal bits (forward passes), as the reference does
      double* __restrict__ zp = zprod;
      const int64_t rows = n / width;
      for (int64_t b = 0; b < rows; ++b)
        for (int64_t j = skip; j < width; ++j) zp[b * width + j] *= static_cast<double>(z[b * width + j]);
      fold();
    }
  }

  // One byte at most per unit. The arithmetic of every unit is independent and branch-free, so it
  // vectorises (its operations are exact integer ones and float64 divisions, which give the same
  // bits in any lane); only the placement of the emitted bytes is sequential: each unit writes its
  // byte at the cursor, which advances only past the units that emit.
  void mul1(int64_t* h_, const int64_t* Z_, int64_t width, int64_t skip, int64_t* scratch) {
    int64_t* __restrict__ bytes = scratch;  // the byte each unit emits, or -1
    int64_t* __restrict__ hp = h_;
    int64_t* __restrict__ hdp = head;
    const int64_t* __restrict__ Zp = Z_;
    const int64_t rows = n / width;
    for (int64_t b = 0; b < rows; ++b) {
      const int64_t o = b * width;
      for (int64_t j = 0; j < width; ++j) {
        const int64_t u = o + j;
        const bool lossy = j < skip;
        const int64_t Zu = Zp[u], hd = hdp[u], hu = hp[u];
        const bool e = !lossy && hd >= (Zu << WORD_BITS);
        const int64_t rest = e ? (hd >> WORD_BITS) : hd;
        bytes[u] = e ? (hd & 0xFF) : -1;
        const int64_t X = (hu & LOW_MASK) + rest * FORGET_ONE;
        const int64_t q = small_div(X, Zu);
        hdp[u] = lossy ? hd : q;
        hp[u] = lossy ? floor_mul(hu, Zu) : (X - q * Zu) + (hu >> FORGET_BITS) * Zu;
      }
    }
    const int64_t nn = n;  // a local: the byte stores below may alias any member (uint8_t)
    int64_t p = meta[POS];
    if (p + nn > capacity) {  // never, with the host's reservation; refuse rather than write past it
      meta[OVERFLOW] = 1;
      return;
    }
    uint8_t* __restrict__ out = arena;
    for (int64_t u = 0; u < nn; ++u) {
      const int64_t byte = bytes[u];
      out[p] = static_cast<uint8_t>(byte);
      p += byte >= 0;
    }
    meta[POS] = p;
  }

  void mul_rounds(int64_t* h, const int64_t* Z, int64_t width, int64_t skip, int64_t* scratch) {
    int64_t* rest = scratch;  // [n]
    int8_t* count = reinterpret_cast<int8_t*>(scratch + n);
    for (int64_t u = 0; u < n; ++u) {
      bool lossy = skip && (u % width) < skip;
      count[u] = lossy ? 0 : static_cast<int8_t>(emit_count(head[u], Z[u], rounds, &rest[u]));
    }
    for (int j = rounds; j >= 1; --j)
      for (int64_t u = 0; u < n; ++u)
        if (count[u] >= j) push(emitted_byte(head[u], count[u], j));
    for (int64_t u = 0; u < n; ++u) {
      if (skip && (u % width) < skip)
        h[u] = floor_mul(h[u], Z[u]);
      else
        h[u] = mul_finish(h[u], Z[u], rest[u], &head[u]);
    }
  }

  // Inverse of mul; the lossy units are left as they are (the caller restores them).
  void div(int64_t* h, const int64_t* Z, int64_t width, int64_t skip, int64_t* scratch) {
    if (rounds == 1 && small_states(h)) {
      div1(h, Z, width, skip, scratch);
      return;
    }
    int64_t qmin = meta[QMIN], qmax = meta[QMAX];
    int64_t* X = scratch;
    int64_t* qh = scratch + n;
    for (int64_t u = 0; u < n; ++u) {
      if (skip && (u % width) < skip) continue;
      head[u] = div_start(h[u], Z[u], head[u], &X[u], &qh[u]);
      qmin = qh[u] < qmin ? qh[u] : qmin;
      qmax = qh[u] > qmax ? qh[u] : qmax;
    }
    for (int r = 0; r < rounds; ++r)
      for (int64_t u = n - 1; u >= 0; --u)  // descending: the top byte belongs to the last unit
        if (!(skip && (u % width) < skip) && head[u] < HEAD_FLOOR) head[u] = (head[u] << WORD_BITS) + pop();
    for (int64_t u = 0; u < n; ++u)
      if (!(skip && (u % width) < skip)) h[u] = div_finish(X[u], qh[u]);
    meta[QMIN] = qmin;
    meta[QMAX] = qmax;
  }

  bool small_states(const int64_t* h) const {  // every |h| < 2^40: floor(h / Z) in float64 is exact
    const int64_t lim = int64_t(1) << 40;
    int64_t hi = 0, lo = 0;
    for (int64_t u = 0; u < n; ++u) {
      hi = h[u] > hi ? h[u] : hi;
      lo = h[u] < lo ? h[u] : lo;
    }
    return hi < lim && lo > -lim;
  }

  // One byte at most per unit and small states: the quotients in float64 (exact, see floor_div), all
  // units at once (branch-free, so the loop vectorises); then the units that need a byte take the
  // top ones, in unit order.
  void div1(int64_t* h_, const int64_t* Z_, int64_t width, int64_t skip, int64_t* scratch) {
    int64_t* __restrict__ X = scratch;
    int64_t* __restrict__ qh = scratch + n;
    int64_t* __restrict__ hp = h_;
    int64_t* __restrict__ hdp = head;
    const int64_t* __restrict__ Zp = Z_;
    const int64_t rows = n / width;
    int64_t qmin = meta[QMIN], qmax = meta[QMAX], need = 0;
    for (int64_t b = 0; b < rows; ++b) {
      const int64_t o = b * width;
      for (int64_t j = 0; j < width; ++j) {
        const int64_t u = o + j;
        const bool lossy = j < skip;
        const int64_t Zu = Zp[u], hu = hp[u], hd0 = hdp[u];
        const int64_t q = floor_div_small(hu, Zu);
        const int64_t x = hu - q * Zu + hd0 * Zu;
        const int64_t hd = x >> FORGET_BITS;
        X[u] = x;
        qh[u] = q;
        hdp[u] = lossy ? hd0 : hd;
        need += (!lossy && hd < HEAD_FLOOR) ? 1 : 0;
        const int64_t qlo = lossy ? qmin : q, qhi = lossy ? qmax : q;
        qmin = qlo < qmin ? qlo : qmin;
        qmax = qhi > qmax ? qhi : qmax;
      }
    }
    int64_t start = meta[POS] - need;
    if (start < 0) {
      meta[UNDERFLOW] = 1;
      start = 0;
      need = meta[POS];
    }
    const uint8_t* __restrict__ in = arena;
    int64_t k = start;
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t j = skip; j < width; ++j) {
        const int64_t u = b * width + j;
        const bool nd = hdp[u] < HEAD_FLOOR && k < start + need;
        const int64_t byte = nd ? in[k] : 0;
        hdp[u] = nd ? (hdp[u] << WORD_BITS) + byte : hdp[u];
        k += nd;
      }
    meta[POS] = start;
    for (int64_t b = 0; b < rows; ++b) {
      const int64_t o = b * width;
      for (int64_t j = skip; j < width; ++j) hp[o + j] = div_finish(X[o + j], qh[o + j]);
    }
    meta[QMIN] = qmin;
    meta[QMAX] = qmax;
  }
};

}  // namespace revrnn
