// The neurons of the fused recurrent loop (csrc/recurrent.cpp), one struct each, with the per-step equations and the
// backward of lif.cpp, alif.cpp and synaptic.cpp (and snn/neurons.py, alif.py, synaptic.py's step, whose operation
// order they keep). Members: kStates state variables (state 0 the membrane), kInput the one the current I' flows into,
// kParams per-neuron gradients accumulated by backward, and on one row of n neurons (pointers offset to the row):
//   forward(before or nullptr at t = 0, now, i, feedback, s, n), fired(x, e): whether state x spiked at e,
//   backward<kind>(at, before or nullptr, ds or nullptr, gm or nullptr, later or nullptr, out, acc or nullptr, n).
#pragma once
#include "time_loop.h"  // the surrogate derivatives

using time_loop::surrogate_derivative;

// snnTorch's Leaky: U[t] = beta U[t-1] + I'[t] - threshold S[t-1] (subtract), beta U[t-1] (1 - S[t-1]) + I'[t]
// (zero); S = U > threshold; the reset detached. The same operation order as LIF.step (snn/neurons.py).
struct Lif {
  static constexpr int kStates = 1, kInput = 0, kParams = 0;
  float b, th, slope;
  bool zero_reset;

  void forward(const float* const* before, float* const* now, const float* i, const float* f, float* s,
               int64_t n) const {
    float* u = now[0];
    if (!before) {
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) u[e] = i[e] + f[e];
    } else if (zero_reset) {
      const float* u0 = before[0];
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) u[e] = u0[e] * (1.0f - (u0[e] > th ? 1.0f : 0.0f)) * b + (i[e] + f[e]);
    } else {
      const float* u0 = before[0];
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) u[e] = u0[e] * b + (i[e] + f[e]) - th * (u0[e] > th ? 1.0f : 0.0f);
    }
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) s[e] = u[e] > th ? 1.0f : 0.0f;
  }

  bool fired(const float* const* x, int64_t e) const { return x[0][e] > th; }

  template <int64_t kind>
  void backward(const float* const* at, const float* const*, const float* ds, const float* gm,
                const float* const* later, float* const* out, float*, int64_t n) const {
    const float *u = at[0], *g1 = later ? later[0] : nullptr;
    float* g = out[0];
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      float d = ds ? surrogate_derivative<kind>(u[e] - th, slope) * ds[e] : 0.0f;
      if (gm) d += gm[e];
      if (g1) d += b * (zero_reset ? g1[e] * (u[e] > th ? 0.0f : 1.0f) : g1[e]);
      g[e] = d;
    }
  }
};

// ALIF (snn/alif.py): states U and a, theta = threshold + adaptation a, S = U > theta; beta and rho per neuron (B, R:
// [n]). The backward is alif.cpp's, with the spikes' gradient ds direct plus recurrent; acc: dL/dbeta [n], dL/drho [n].
struct Alif {
  static constexpr int kStates = 2, kInput = 0, kParams = 2;
  const float *B, *R;
  float th, adp, slope;
  bool zero_reset;

  void forward(const float* const* before, float* const* now, const float* i, const float* f, float* s,
               int64_t n) const {
    float *u = now[0], *a = now[1];
    if (!before) {
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) u[e] = i[e] + f[e], a[e] = 0.0f;
    } else {
      const float *u0 = before[0], *a0 = before[1];
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) {
        const float r = u0[e] > a0[e] * adp + th ? 1.0f : 0.0f;
        a[e] = R[e] * a0[e] + (1.0f - R[e]) * r;
        if (zero_reset)
          u[e] = u0[e] * (1.0f - r) * B[e] + (i[e] + f[e]);
        else
          u[e] = B[e] * u0[e] + (i[e] + f[e]) - (a0[e] * adp + th) * r;  // the threshold that was crossed
      }
    }
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) s[e] = u[e] > a[e] * adp + th ? 1.0f : 0.0f;
  }

  bool fired(const float* const* x, int64_t e) const { return x[0][e] > x[1][e] * adp + th; }

  template <int64_t kind>
  void backward(const float* const* at, const float* const*, const float* ds, const float* gm,
                const float* const* later, float* const* out, float* acc, int64_t n) const {
    if (!later)
      row_backward<kind, false, false>(at, ds, gm, later, out, acc, n);
    else if (acc)
      row_backward<kind, true, true>(at, ds, gm, later, out, acc, n);
    else
      row_backward<kind, true, false>(at, ds, gm, later, out, acc, n);
  }

  // The branches on a later step and on the parameter gradients resolved at compile time: the loop vectorises.
  template <int64_t kind, bool kLater, bool kAcc>
  void row_backward(const float* const* at, const float* ds, const float* gm, const float* const* later,
                    float* const* out, float* acc, int64_t n) const {
    const float *u = at[0], *a = at[1];
    const float *gu1 = kLater ? later[0] : nullptr, *ga1 = kLater ? later[1] : nullptr;
    float *gu = out[0], *ga = out[1];
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      const float theta = a[e] * adp + th;
      const float spiked = u[e] > theta ? 1.0f : 0.0f;
      float g_spike = ds ? ds[e] : 0.0f;
      if constexpr (kLater) g_spike += (1.0f - R[e]) * ga1[e];  // S[t] raises a[t+1]
      const float d = surrogate_derivative<kind>(u[e] - theta, slope) * g_spike;
      const float keep = zero_reset ? 1.0f - spiked : 1.0f;
      float g_u = d, g_a = -adp * d;
      if (gm) g_u += gm[e];
      if constexpr (kLater) {
        g_u += B[e] * keep * gu1[e];
        g_a += R[e] * ga1[e];
        if constexpr (kAcc) acc[e] += gu1[e] * keep * u[e], acc[n + e] += ga1[e] * (a[e] - spiked);
      }
      gu[e] = g_u;
      ga[e] = g_a;
    }
  }
};

// Synaptic (snn/synaptic.py): states U and syn, the current flows into syn: syn[t] = alpha syn[t-1] + I'[t]; reset 0
// subtract, 1 zero (snnTorch's: U[t] = (beta U[t-1] + syn[t]) (1 - S[t-1])), 2 zero_leaky. The backward is
// synaptic.cpp's; dL/dI'[t] = dL/dsyn[t].
struct Synaptic {
  static constexpr int kStates = 2, kInput = 1, kParams = 0;
  enum : int64_t { kSubtract = 0, kZero = 1, kZeroLeaky = 2 };
  float al, b, th, slope;
  int64_t reset;

  void forward(const float* const* before, float* const* now, const float* i, const float* f, float* s,
               int64_t n) const {
    float *u = now[0], *syn = now[1];
    if (!before) {
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) syn[e] = i[e] + f[e], u[e] = syn[e];
    } else {
      const float *u0 = before[0], *syn0 = before[1];
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) {
        syn[e] = al * syn0[e] + (i[e] + f[e]);
        const float r = u0[e] > th ? 1.0f : 0.0f;
        if (reset == kSubtract)
          u[e] = b * u0[e] + syn[e] - r * th;
        else if (reset == kZero)
          u[e] = (b * u0[e] + syn[e]) * (1.0f - r);
        else
          u[e] = u0[e] * (1.0f - r) * b + syn[e];
      }
    }
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) s[e] = u[e] > th ? 1.0f : 0.0f;
  }

  bool fired(const float* const* x, int64_t e) const { return x[0][e] > th; }

  template <int64_t kind>
  void backward(const float* const* at, const float* const* before, const float* ds, const float* gm,
                const float* const* later, float* const* out, float*, int64_t n) const {
    const float *u = at[0], *u_before = before ? before[0] : nullptr;
    const float *gu1 = later ? later[0] : nullptr, *gs1 = later ? later[1] : nullptr;
    float *gu = out[0], *gsyn = out[1];
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      float d = ds ? surrogate_derivative<kind>(u[e] - th, slope) * ds[e] : 0.0f;
      if (gm) d += gm[e];
      const float keep = reset == kSubtract || u[e] <= th ? 1.0f : 0.0f;
      if (gu1) d += b * keep * gu1[e];
      gu[e] = d;
      const float gate = reset == kZero && u_before && u_before[e] > th ? 0.0f : 1.0f;
      float g = d * gate;
      if (gs1) g += al * gs1[e];
      gsyn[e] = g;
    }
  }
};
