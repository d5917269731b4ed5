// The LIF recurrences of snn/neurons.py in one pass over time per block of neurons (instead of a few tensor ops
// per time step), same operation order as the tensor code so that spikes are bit-identical.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "bf16.h"
#include "surrogate.h"

constexpr int64_t kGrain = 4096;  // neurons per task
constexpr int64_t kBlock = 512;   // neurons taken through all time steps at once: their rows stay in L1

// Runs body(begin, end) over blocks of at most kBlock neurons, the tasks spread over torch's threads.
template <typename F>
static void for_neuron_blocks(int64_t E, const F& body) {
  at::parallel_for(0, E, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += kBlock) body(b, std::min(end, b + kBlock));
  });
}

// current [T or 1, E] (1: the same input at every step) -> spikes [T, E] (current's type), membrane [T, E] (float).
// scalar_t: float, or Bf16 under autocast (the membrane stays float: bf16 would round the sum away).
template <typename scalar_t>
static void forward_through_time(const scalar_t* I, float* U, scalar_t* S, int64_t T, int64_t E, int64_t step, float b,
                                 float th, bool zero_reset, int64_t begin, int64_t end) {
  const scalar_t one = from_float<scalar_t>(1.0f), zero = from_float<scalar_t>(0.0f);
  for (int64_t e = begin; e < end; ++e) {
    U[e] = to_float(I[e]);
    S[e] = U[e] > th ? one : zero;
  }
  for (int64_t t = 1; t < T; ++t) {
    const scalar_t *i = I + t * step, *s0 = S + (t - 1) * E;
    const float* u0 = U + (t - 1) * E;
    float* u = U + t * E;
    scalar_t* s = S + t * E;
    if (zero_reset) {
#pragma omp simd
      for (int64_t e = begin; e < end; ++e) u[e] = u0[e] * (1.0f - to_float(s0[e])) * b + to_float(i[e]);
    } else {
#pragma omp simd
      for (int64_t e = begin; e < end; ++e) u[e] = u0[e] * b + to_float(i[e]) - th * to_float(s0[e]);
    }
#pragma omp simd
    for (int64_t e = begin; e < end; ++e) s[e] = u[e] > th ? one : zero;
  }
}

std::vector<torch::Tensor> lif_forward(const torch::Tensor& current_in, int64_t T, double beta, double threshold,
                                       bool zero_reset) {
  auto current = current_in.contiguous();
  const int64_t E = current.size(1), step = current.size(0) == 1 ? 0 : E;
  auto spikes = torch::empty({T, E}, current.options());
  auto membrane = torch::empty({T, E}, current.options().dtype(torch::kFloat32));
  float* U = membrane.data_ptr<float>();
  const float b = static_cast<float>(beta), th = static_cast<float>(threshold);
  with_element_type(current.scalar_type(), [&](auto zero) {
    using scalar_t = decltype(zero);
    const scalar_t* I = static_cast<const scalar_t*>(current.data_ptr());
    scalar_t* S = static_cast<scalar_t*>(spikes.data_ptr());
    for_neuron_blocks(E, [&](int64_t begin, int64_t end) {
      forward_through_time(I, U, S, T, E, step, b, th, zero_reset, begin, end);
    });
  });
  return {spikes, membrane};
}

// dL/dU[t] = dL/dS[t] * S'(U[t] - threshold) + dL/dU[t] (direct) + beta * keep[t] * dL/dU[t+1],
// keep = 1 (subtract reset) or "did not fire" (zero reset); one pass backwards through time. The running gradient is
// carried in float (`carry`) whatever the gradients' type, so that bf16 rounds each output once, not T times.
// kSumTime: the current was one step repeated over time (direct input), so its gradient is the sum over t, written
// once as [1, E]: that saves writing [T, E] here and reading it back to sum it.
template <int64_t kind, bool kSumTime, typename scalar_t>
static void backward_through_time(scalar_t* G, const scalar_t* GS, const float* GM, const float* U, int64_t T,
                                  int64_t E, float b, float th, float slope, bool zero_reset, int64_t begin,
                                  int64_t end) {
  float carry[kBlock], total[kBlock];
  const int64_t n = end - begin;
  for (int64_t t = T - 1; t >= 0; --t) {
    scalar_t* g = kSumTime ? nullptr : G + t * E + begin;  // kSumTime: G is [1, E], written after the loop
    const float* u = U + t * E + begin;
    const scalar_t* gs = GS ? GS + t * E + begin : nullptr;
    const float* gm = GM ? GM + t * E + begin : nullptr;
    const bool later = t + 1 < T;
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      float d = gs ? surrogate_derivative<kind>(u[e] - th, slope) * to_float(gs[e]) : 0.0f;
      if (gm) d += gm[e];
      if (later) d += b * (zero_reset ? carry[e] * (u[e] > th ? 0.0f : 1.0f) : carry[e]);
      carry[e] = d;
      if constexpr (kSumTime)
        total[e] = later ? total[e] + d : d;
      else
        g[e] = from_float<scalar_t>(d);
    }
  }
  if constexpr (kSumTime) {
    scalar_t* g = G + begin;
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) g[e] = from_float<scalar_t>(total[e]);
  }
}

template <bool kSumTime, typename scalar_t>
static void backward_blocks(torch::Tensor& grad, const torch::Tensor& gs, const torch::Tensor& gm, const float* U,
                            int64_t T, float b, float th, float k, bool zero_reset, int64_t surrogate) {
  const int64_t E = grad.size(1);
  scalar_t* G = static_cast<scalar_t*>(grad.data_ptr());
  const scalar_t* GS = gs.defined() ? static_cast<const scalar_t*>(gs.data_ptr()) : nullptr;
  const float* GM = gm.defined() ? gm.data_ptr<float>() : nullptr;
  for_neuron_blocks(E, [&](int64_t begin, int64_t end) {
    switch (surrogate) {
      case kATan: backward_through_time<kATan, kSumTime>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end); break;
      case kFastSigmoid:
        backward_through_time<kFastSigmoid, kSumTime>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end);
        break;
      case kSigmoid:
        backward_through_time<kSigmoid, kSumTime>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end);
        break;
      case kTriangle:
        backward_through_time<kTriangle, kSumTime>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end);
        break;
      default:
        backward_through_time<kStraightThrough, kSumTime>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end);
    }
  });
}

// grad_spikes and the result in `dtype` (the current's: float or BFloat16); membrane and grad_membrane in float.
// The result is [T, E], or [1, E] (summed over time) with sum_over_time.
torch::Tensor lif_backward(const c10::optional<torch::Tensor>& grad_spikes, const c10::optional<torch::Tensor>& grad_membrane,
                           const torch::Tensor& membrane_in, double beta, double threshold, bool zero_reset,
                           int64_t surrogate, double slope, c10::ScalarType dtype, bool sum_over_time) {
  auto membrane = membrane_in.contiguous();
  const int64_t T = membrane.size(0), E = membrane.size(1);
  auto gs = grad_spikes.has_value() ? grad_spikes->to(dtype).contiguous() : torch::Tensor();
  auto gm = grad_membrane.has_value() ? grad_membrane->to(torch::kFloat32).contiguous() : torch::Tensor();
  auto grad = torch::empty({sum_over_time ? 1 : T, E}, membrane.options().dtype(dtype));
  const float b = static_cast<float>(beta), th = static_cast<float>(threshold), k = static_cast<float>(slope);
  const float* U = membrane.data_ptr<float>();
  with_element_type(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    if (sum_over_time)
      backward_blocks<true, scalar_t>(grad, gs, gm, U, T, b, th, k, zero_reset, surrogate);
    else
      backward_blocks<false, scalar_t>(grad, gs, gm, U, T, b, th, k, zero_reset, surrogate);
  });
  return grad;
}
