// Per-unit arithmetic of the fused reversible steps, shared by the CPU and CUDA implementations.
//
// Everything here is plain IEEE float32 / int64 arithmetic that the build keeps from being
// contracted or reordered (-ffp-contract=off for g++, --fmad=false for nvcc), written operation for
// operation as the eager cells of revrnn_cli/engine/cells.py compute it, so the fused and the
// reference path round identically. The activations (sigmoid, tanh) are not here: the fused steps
// call the same ATen kernels as the reference, on operands of the same shapes.
//
// The fixed-point conventions are those of revrnn_cli/engine/fixed_point.py: states are int64 with
// 23 fractional bits, forget gates are quantised to Z = round(1024 z), additive terms to
// U = round(2^23 u) (both round half to even), and the exact multiplication h * Z / 1024 stores its
// lost bits in the rANS-style buffer of revrnn_cli/engine/buffer.py: a per-unit head in
// [2^10, 2^18) and a byte stack shared by all units.
#pragma once

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define REV_HD __host__ __device__ __forceinline__
#else
#define REV_HD inline
#endif

namespace revrnn {

constexpr int FORGET_BITS = 10;
constexpr int64_t FORGET_ONE = 1 << FORGET_BITS;

// The layout of the buffer's device counters ``meta`` (revrnn_cli/engine/buffer.py).
enum Meta { POS = 0, SATURATED = 1, QMIN = 2, QMAX = 3, UNDERFLOW = 4, OVERFLOW = 5, META_SIZE = 6 };
constexpr int64_t LOW_MASK = FORGET_ONE - 1;
constexpr int64_t HEAD_FLOOR = FORGET_ONE;  // L: heads live in [L, 256 L)
constexpr int WORD_BITS = 8;
constexpr float HIDDEN_SCALE = 8388608.0f;  // 2^23
constexpr float HIDDEN_UNIT = 1.0f / 8388608.0f;
constexpr float INV_FORGET_ONE = 1.0f / 1024.0f;

// ---- fixed point ------------------------------------------------------------------------------------

REV_HD float to_float(int64_t h) { return static_cast<float>(h) * HIDDEN_UNIT; }

// The rounding and the conversion are two statements: written as one expression, g++ turns them into
// lrintf(), which it cannot vectorise (the value is the same either way).
REV_HD int64_t quantize(float u) {  // U = round(2^23 u), u already rounded to float32
  const float r = rintf(u * HIDDEN_SCALE);
  return static_cast<int64_t>(r);
}

REV_HD int64_t imax(int64_t a, int64_t b) { return a < b ? b : a; }

REV_HD int64_t quantize_gate(float z, bool zero_guard) {  // Z = round(1024 z), 0 -> 1 without a limit
  // max(Z, 1) under the guard, max(Z, INT64_MIN) = Z without: a select the compiler can vectorise,
  // where ``zero_guard && Z < 1`` is a branch
  const float r = rintf(z * 1024.0f);
  const int64_t Z = static_cast<int64_t>(r);
  return imax(Z, zero_guard ? int64_t(1) : INT64_MIN);
}

REV_HD int64_t floor_div_small(int64_t a, int64_t b) {
  // floor(a / b) for |a| < 2^40 and 1 <= b <= 1024, with one float64 division. The quotient is below
  // 2^40 and a non-integer quotient lies at least 1/b >= 2^-10 from the next integer, far more than
  // float64's relative precision 2^-53 times 2^40, so rounding cannot carry it onto or across that
  // integer: the truncated float quotient is the true truncated quotient t, and the floor is t, or
  // t - 1 when t b > a (a negative non-integer quotient). Written with a truncation and an integer
  // correction rather than floor(), which the compiler turns into a call it cannot vectorise.
  const int64_t t = static_cast<int64_t>(static_cast<double>(a) / static_cast<double>(b));
  return t - (t * b > a ? 1 : 0);
}

REV_HD int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  // |a| < 2^40 (every state below a value of 2^17): floor_div_small. Beyond, integer division.
  const int64_t lim = int64_t(1) << 40;
  if (a < lim && a > -lim) return floor_div_small(a, b);
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

REV_HD int64_t small_div(int64_t X, int64_t Z) {
  // floor(X / Z) for 0 <= X < 2^28, 1 <= Z <= 1024, exactly, by the argument of floor_div
  return static_cast<int64_t>(static_cast<double>(X) / static_cast<double>(Z));
}

REV_HD int64_t floor_mul(int64_t h, int64_t Z) {  // floor(h Z / 1024), nothing stored (lossy units)
  return (((h & LOW_MASK) * Z) >> FORGET_BITS) + (h >> FORGET_BITS) * Z;
}

// ---- the exact multiplication, split around the byte stack -----------------------------------------
//
// mul: before it a unit whose head would leave [L, 256 L) emits bytes (emit_count); then
//   X = 1024 head' + (h mod 1024) < 2^28,  q = X / Z,  h' = (h >> 10) Z + (X - q Z),  head = q.
// Bounds: |h >> 10| <= 2^53 and Z <= 1024, so |(h >> 10) Z| <= 2^63; X - q Z < Z.
// div mirrors it: qh = floor(h / Z), X = h - qh Z + Z head, head = X >> 10 (then pulls bytes while
// head < L), h_old = 1024 qh + (X mod 1024).

// Bytes a unit emits before multiplying by Z (0..rounds), and the head left after emitting them.
REV_HD int emit_count(int64_t head, int64_t Z, int rounds, int64_t* rest) {
  int64_t bmax = Z << WORD_BITS;  // below it, the quotient stays under 256 L
  int c = 0;
  int64_t r = head;
  for (int k = 0; k < rounds; ++k) {
    bool e = r >= bmax;
    r = e ? (r >> WORD_BITS) : r;
    c += e ? 1 : 0;
  }
  *rest = r;
  return c;
}

// The byte of group j (1 = pushed last) of a unit that emitted `count` bytes from `head`.
REV_HD uint8_t emitted_byte(int64_t head, int count, int j) {
  return static_cast<uint8_t>((head >> (WORD_BITS * (count - j))) & 0xFF);
}

REV_HD int64_t mul_finish(int64_t h, int64_t Z, int64_t rest, int64_t* head) {
  int64_t X = (h & LOW_MASK) + rest * FORGET_ONE;
  int64_t q = small_div(X, Z);  // X >= 0
  *head = q;
  return (X - q * Z) + (h >> FORGET_BITS) * Z;
}

REV_HD int64_t div_start(int64_t h, int64_t Z, int64_t head, int64_t* X, int64_t* qh) {
  *qh = floor_div(h, Z);
  *X = h - *qh * Z + head * Z;
  return *X >> FORGET_BITS;  // the head before pulling bytes back
}

REV_HD int64_t div_finish(int64_t X, int64_t qh) { return (X & LOW_MASK) + qh * FORGET_ONE; }

}  // namespace revrnn
