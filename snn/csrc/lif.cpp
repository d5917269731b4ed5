// The LIF recurrences of snn/neurons.py in one pass over time per block of neurons (instead of a few tensor ops
// per time step), same operation order as the tensor code so that spikes are bit-identical.
#include <torch/extension.h>
#include <ATen/Parallel.h>

constexpr int64_t kGrain = 4096;  // neurons per task
constexpr int64_t kBlock = 512;   // neurons taken through all time steps at once: their rows stay in L1

// Runs body(begin, end) over blocks of at most kBlock neurons, the tasks spread over torch's threads.
template <typename F>
static void for_neuron_blocks(int64_t E, const F& body) {
  at::parallel_for(0, E, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += kBlock) body(b, std::min(end, b + kBlock));
  });
}

// current [T or 1, E] (1: the same input at every step) -> spikes, membrane [T, E]
std::vector<torch::Tensor> lif_forward(const torch::Tensor& current_in, int64_t T, double beta, double threshold,
                                       bool zero_reset) {
  auto current = current_in.contiguous();
  const int64_t E = current.size(1), step = current.size(0) == 1 ? 0 : E;
  auto spikes = torch::empty({T, E}, torch::kFloat32), membrane = torch::empty({T, E}, torch::kFloat32);
  const float* I = current.data_ptr<float>();
  float* U = membrane.data_ptr<float>();
  float* S = spikes.data_ptr<float>();
  const float b = static_cast<float>(beta), th = static_cast<float>(threshold);
  for_neuron_blocks(E, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      U[e] = I[e];
      S[e] = U[e] > th ? 1.0f : 0.0f;
    }
    for (int64_t t = 1; t < T; ++t) {
      const float *i = I + t * step, *u0 = U + (t - 1) * E, *s0 = S + (t - 1) * E;
      float *u = U + t * E, *s = S + t * E;
      if (zero_reset) {
#pragma omp simd
        for (int64_t e = begin; e < end; ++e) u[e] = u0[e] * (1.0f - s0[e]) * b + i[e];
      } else {
#pragma omp simd
        for (int64_t e = begin; e < end; ++e) u[e] = u0[e] * b + i[e] - th * s0[e];
      }
#pragma omp simd
      for (int64_t e = begin; e < end; ++e) s[e] = u[e] > th ? 1.0f : 0.0f;
    }
  });
  return {spikes, membrane};
}

// The surrogate derivatives of snn/surrogates.py, as functions of x = membrane - threshold.
enum Surrogate : int64_t { kATan = 0, kFastSigmoid = 1, kSigmoid = 2, kTriangle = 3, kStraightThrough = 4 };

template <int64_t kind>
static inline float surrogate_derivative(float x, float slope) {
  if constexpr (kind == kATan) {
    const float u = x * (static_cast<float>(M_PI) / 2 * slope);
    return 1.0f / (u * u + 1.0f) * (slope / 2);
  } else if constexpr (kind == kFastSigmoid) {
    const float d = std::abs(x) * slope + 1.0f;
    return 1.0f / (d * d);
  } else if constexpr (kind == kSigmoid) {
    const float kx = slope * x;
    return slope / (1.0f + std::exp(-kx)) / (1.0f + std::exp(kx));
  } else if constexpr (kind == kTriangle) {
    return std::max(slope - slope * slope * std::abs(x), 0.0f);
  } else {
    return 1.0f;
  }
}

// dL/dU[t] = dL/dS[t] * S'(U[t] - threshold) + dL/dU[t] (direct) + beta * keep[t] * dL/dU[t+1],
// keep = 1 (subtract reset) or "did not fire" (zero reset); one pass backwards through time.
template <int64_t kind>
static void backward_through_time(float* G, const float* GS, const float* GM, const float* U, int64_t T, int64_t E,
                                  float b, float th, float slope, bool zero_reset, int64_t begin, int64_t end) {
  for (int64_t t = T - 1; t >= 0; --t) {
    float* g = G + t * E;
    const float* u = U + t * E;
    const float* gs = GS ? GS + t * E : nullptr;
    const float* gm = GM ? GM + t * E : nullptr;
    const float* g1 = t + 1 < T ? G + (t + 1) * E : nullptr;
#pragma omp simd
    for (int64_t e = begin; e < end; ++e) {
      float d = gs ? surrogate_derivative<kind>(u[e] - th, slope) * gs[e] : 0.0f;
      if (gm) d += gm[e];
      if (g1) d += b * (zero_reset ? g1[e] * (u[e] > th ? 0.0f : 1.0f) : g1[e]);
      g[e] = d;
    }
  }
}

torch::Tensor lif_backward(const c10::optional<torch::Tensor>& grad_spikes, const c10::optional<torch::Tensor>& grad_membrane,
                           const torch::Tensor& membrane_in, double beta, double threshold, bool zero_reset,
                           int64_t surrogate, double slope) {
  auto membrane = membrane_in.contiguous();
  const int64_t T = membrane.size(0), E = membrane.size(1);
  auto gs = grad_spikes.has_value() ? grad_spikes->contiguous() : torch::Tensor();
  auto gm = grad_membrane.has_value() ? grad_membrane->contiguous() : torch::Tensor();
  auto grad = torch::empty({T, E}, torch::kFloat32);
  float* G = grad.data_ptr<float>();
  const float* GS = gs.defined() ? gs.data_ptr<float>() : nullptr;
  const float* GM = gm.defined() ? gm.data_ptr<float>() : nullptr;
  const float* U = membrane.data_ptr<float>();
  const float b = static_cast<float>(beta), th = static_cast<float>(threshold), k = static_cast<float>(slope);
  for_neuron_blocks(E, [&](int64_t begin, int64_t end) {
    switch (surrogate) {
      case kATan: backward_through_time<kATan>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end); break;
      case kFastSigmoid: backward_through_time<kFastSigmoid>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end); break;
      case kSigmoid: backward_through_time<kSigmoid>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end); break;
      case kTriangle: backward_through_time<kTriangle>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end); break;
      default: backward_through_time<kStraightThrough>(G, GS, GM, U, T, E, b, th, k, zero_reset, begin, end);
    }
  });
  return grad;
}
