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
  void mul(int64_t* h, const int64_t* Z, const float* z, int64_t width, int64_t skip, int64_t* scratch) {
    int64_t sat = 0;  // counted only where the optimal bits are (forward passes), as the reference does
    if (rounds == 1) {
      for (int64_t u = 0; u < n; ++u) {
        int64_t Zu = Z[u];
        sat += Zu == FORGET_ONE;
        if (skip && (u % width) < skip) {
          h[u] = floor_mul(h[u], Zu);
          continue;
        }
        int64_t rest;
        if (emit_count(head[u], Zu, 1, &rest)) push(static_cast<uint8_t>(head[u] & 0xFF));
        h[u] = mul_finish(h[u], Zu, rest, &head[u]);
      }
    } else {
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
        sat += Z[u] == FORGET_ONE;
        if (skip && (u % width) < skip)
          h[u] = floor_mul(h[u], Z[u]);
        else
          h[u] = mul_finish(h[u], Z[u], rest[u], &head[u]);
      }
    }
    if (zprod != nullptr) {
      meta[SATURATED] += sat;
      for (int64_t u = 0; u < n; ++u)
        if (!(skip && (u % width) < skip)) zprod[u] *= static_cast<double>(z[u]);
      fold();
    }
  }

  // Inverse of mul; the lossy units are left as they are (the caller restores them).
  void div(int64_t* h, const int64_t* Z, int64_t width, int64_t skip, int64_t* scratch) {
    int64_t qmin = meta[QMIN], qmax = meta[QMAX];
    if (rounds == 1) {
      for (int64_t u = n - 1; u >= 0; --u) {  // descending: the top byte belongs to the last unit
        if (skip && (u % width) < skip) continue;
        int64_t X, qh;
        int64_t hd = div_start(h[u], Z[u], head[u], &X, &qh);
        if (hd < HEAD_FLOOR) hd = (hd << WORD_BITS) + pop();
        head[u] = hd;
        qmin = qh < qmin ? qh : qmin;
        qmax = qh > qmax ? qh : qmax;
        h[u] = div_finish(X, qh);
      }
    } else {
      int64_t* X = scratch;
      int64_t* qh = scratch + n;
      for (int64_t u = 0; u < n; ++u) {
        if (skip && (u % width) < skip) continue;
        head[u] = div_start(h[u], Z[u], head[u], &X[u], &qh[u]);
        qmin = qh[u] < qmin ? qh[u] : qmin;
        qmax = qh[u] > qmax ? qh[u] : qmax;
      }
      for (int r = 0; r < rounds; ++r)
        for (int64_t u = n - 1; u >= 0; --u)
          if (!(skip && (u % width) < skip) && head[u] < HEAD_FLOOR) head[u] = (head[u] << WORD_BITS) + pop();
      for (int64_t u = 0; u < n; ++u)
        if (!(skip && (u % width) < skip)) h[u] = div_finish(X[u], qh[u]);
    }
    meta[QMIN] = qmin;
    meta[QMAX] = qmax;
  }
};

}  // namespace revrnn
