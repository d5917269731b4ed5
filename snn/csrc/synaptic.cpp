// The Synaptic (current-based LIF) recurrences of snn/synaptic.py in one pass over time per block of neurons, in the
// tensor code's operation order (spikes bit-identical). Only the membrane is stored: the spikes are U > threshold and
// the synaptic current is not needed by the backward pass.
#include <torch/extension.h>

#include "bf16.h"
#include "time_loop.h"

using namespace time_loop;

// reset: 0 subtract, 1 zero (snnTorch's Synaptic: U[t] = (1 - S[t-1]) * (beta U[t-1] + syn[t])),
//        2 zero_leaky (U[t] = beta U[t-1] (1 - S[t-1]) + syn[t], as LIF's zero reset and NIR's CubaLIF)
enum Reset : int64_t { kSubtract = 0, kZero = 1, kZeroLeaky = 2 };

template <typename scalar_t>
static void synaptic_forward_block(const scalar_t* I, float* U, scalar_t* S, int64_t T, int64_t E, int64_t step,
                                   float a, float b, float th, int64_t reset, int64_t begin, int64_t end) {
  const scalar_t one = from_float<scalar_t>(1.0f), zero = from_float<scalar_t>(0.0f);
  float syn[kBlock];
  const int64_t n = end - begin;
  for (int64_t e = 0; e < n; ++e) {
    syn[e] = to_float(I[begin + e]);
    U[begin + e] = syn[e];  // beta * 0 + syn[0]
    S[begin + e] = U[begin + e] > th ? one : zero;
  }
  for (int64_t t = 1; t < T; ++t) {
    const scalar_t *i = I + t * step + begin, *s0 = S + (t - 1) * E + begin;
    const float* u0 = U + (t - 1) * E + begin;
    float* u = U + t * E + begin;
    scalar_t* s = S + t * E + begin;
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      syn[e] = a * syn[e] + to_float(i[e]);
      const float r = to_float(s0[e]);
      if (reset == kSubtract)
        u[e] = b * u0[e] + syn[e] - r * th;
      else if (reset == kZero)
        u[e] = (b * u0[e] + syn[e]) * (1.0f - r);
      else
        u[e] = u0[e] * (1.0f - r) * b + syn[e];
      s[e] = u[e] > th ? one : zero;
    }
  }
}

std::vector<torch::Tensor> synaptic_forward(const torch::Tensor& current_in, int64_t T, double alpha, double beta,
                                            double threshold, int64_t reset) {
  auto current = current_in.contiguous();
  const int64_t E = current.size(1), step = current.size(0) == 1 ? 0 : E;
  auto spikes = torch::empty({T, E}, current.options());
  auto membrane = torch::empty({T, E}, current.options().dtype(torch::kFloat32));
  float* U = membrane.data_ptr<float>();
  const float a = static_cast<float>(alpha), b = static_cast<float>(beta), th = static_cast<float>(threshold);
  with_element_type(current.scalar_type(), [&](auto zero) {
    using scalar_t = decltype(zero);
    const scalar_t* I = static_cast<const scalar_t*>(current.data_ptr());
    scalar_t* S = static_cast<scalar_t*>(spikes.data_ptr());
    for_neuron_blocks(E, [&](int64_t begin, int64_t end) {
      synaptic_forward_block(I, U, S, T, E, step, a, b, th, reset, begin, end);
    });
  });
  return {spikes, membrane};
}

// Backwards through time, with S[t] = U[t] > threshold and keep[t] = 1 - S[t] (1 for subtract):
//   dL/dU[t]   = dL/dS[t] S'(U[t] - threshold) + dL/dU[t] (direct) + beta keep[t] dL/dU[t+1]
//   dL/dsyn[t] = dL/dU[t] gate[t] + alpha dL/dsyn[t+1],   gate[t] = 1 - S[t-1] for kZero, else 1
//   dL/dI[t]   = dL/dsyn[t]   (summed over t for a repeated input: kSumTime)
template <int64_t kind, bool kSumTime, typename scalar_t>
static void synaptic_backward_block(scalar_t* G, const scalar_t* GS, const float* GM, const float* U, int64_t T,
                                    int64_t E, float a, float b, float th, float slope, int64_t reset, int64_t begin,
                                    int64_t end) {
  float carry_u[kBlock], carry_syn[kBlock], total[kBlock];
  const int64_t n = end - begin;
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* u = U + t * E + begin;
    const float* u_before = t > 0 ? U + (t - 1) * E + begin : nullptr;
    const scalar_t* gs = GS ? GS + t * E + begin : nullptr;
    const float* gm = GM ? GM + t * E + begin : nullptr;
    const bool later = t + 1 < T;
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      float d = gs ? surrogate_derivative<kind>(u[e] - th, slope) * to_float(gs[e]) : 0.0f;
      if (gm) d += gm[e];
      const float keep = reset == kSubtract || u[e] <= th ? 1.0f : 0.0f;
      if (later) d += b * keep * carry_u[e];
      carry_u[e] = d;
      const float gate = reset == kZero && u_before && u_before[e] > th ? 0.0f : 1.0f;
      float g = d * gate;
      if (later) g += a * carry_syn[e];
      carry_syn[e] = g;
      if constexpr (kSumTime)
        total[e] = later ? total[e] + g : g;
      else
        G[t * E + begin + e] = from_float<scalar_t>(g);
    }
  }
  if constexpr (kSumTime)
    for (int64_t e = 0; e < n; ++e) G[begin + e] = from_float<scalar_t>(total[e]);
}

// grad_spikes and the result in `dtype` (the current's); membrane and grad_membrane in float.
torch::Tensor synaptic_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                const c10::optional<torch::Tensor>& grad_membrane, const torch::Tensor& membrane_in,
                                double alpha, double beta, double threshold, int64_t reset, int64_t surrogate,
                                double slope, c10::ScalarType dtype, bool sum_over_time) {
  auto membrane = membrane_in.contiguous();
  const int64_t T = membrane.size(0), E = membrane.size(1);
  auto gs = grad_spikes.has_value() ? grad_spikes->to(dtype).contiguous() : torch::Tensor();
  auto gm = grad_membrane.has_value() ? grad_membrane->to(torch::kFloat32).contiguous() : torch::Tensor();
  auto grad = torch::empty({sum_over_time ? 1 : T, E}, membrane.options().dtype(dtype));
  const float a = static_cast<float>(alpha), b = static_cast<float>(beta), th = static_cast<float>(threshold);
  const float k = static_cast<float>(slope);
  const float* U = membrane.data_ptr<float>();
  const float* GM = gm.defined() ? gm.data_ptr<float>() : nullptr;
  with_element_type(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    scalar_t* G = static_cast<scalar_t*>(grad.data_ptr());
    const scalar_t* GS = gs.defined() ? static_cast<const scalar_t*>(gs.data_ptr()) : nullptr;
    with_surrogate(surrogate, [&](auto kind) {
      for_neuron_blocks(E, [&](int64_t begin, int64_t end) {
        if (sum_over_time)
          synaptic_backward_block<kind.value, true>(G, GS, GM, U, T, E, a, b, th, k, reset, begin, end);
        else
          synaptic_backward_block<kind.value, false>(G, GS, GM, U, T, E, a, b, th, k, reset, begin, end);
      });
    });
  });
  return grad;
}
