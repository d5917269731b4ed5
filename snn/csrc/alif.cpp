// The adaptive-threshold LIF recurrences of snn/alif.py in one pass over time per block of neurons, in the tensor
// code's operation order (spikes bit-identical). Stored for backward: the membrane U and the adaptation a (float);
// the spikes are U > threshold + adaptation * a. beta and rho are per element ([E]: learnable per neuron).
#include <torch/extension.h>

#include "bf16.h"
#include "time_loop.h"

using namespace time_loop;

template <typename scalar_t>
static void alif_forward_block(const scalar_t* I, float* U, float* A, scalar_t* S, const float* B, const float* R,
                               int64_t T, int64_t E, int64_t step, float th, float adp, bool zero_reset,
                               int64_t begin, int64_t end) {
  const scalar_t one = from_float<scalar_t>(1.0f), zero = from_float<scalar_t>(0.0f);
  for (int64_t e = begin; e < end; ++e) {
    U[e] = to_float(I[e]);
    A[e] = 0.0f;
    S[e] = U[e] > A[e] * adp + th ? one : zero;
  }
  for (int64_t t = 1; t < T; ++t) {
    const scalar_t *i = I + t * step, *s0 = S + (t - 1) * E;
    const float *u0 = U + (t - 1) * E, *a0 = A + (t - 1) * E;
    float *u = U + t * E, *a = A + t * E;
    scalar_t* s = S + t * E;
#pragma omp simd
    for (int64_t e = begin; e < end; ++e) {
      const float r = to_float(s0[e]);
      a[e] = R[e] * a0[e] + (1.0f - R[e]) * r;
      if (zero_reset)
        u[e] = u0[e] * (1.0f - r) * B[e] + to_float(i[e]);
      else
        u[e] = B[e] * u0[e] + to_float(i[e]) - (a0[e] * adp + th) * r;  // the threshold that was crossed
      s[e] = u[e] > a[e] * adp + th ? one : zero;
    }
  }
}

std::vector<torch::Tensor> alif_forward(const torch::Tensor& current_in, int64_t T, const torch::Tensor& beta_in,
                                        const torch::Tensor& rho_in, double threshold, double adaptation,
                                        bool zero_reset) {
  auto current = current_in.contiguous();
  auto beta = beta_in.to(torch::kFloat32).contiguous(), rho = rho_in.to(torch::kFloat32).contiguous();
  const int64_t E = current.size(1), step = current.size(0) == 1 ? 0 : E;
  auto spikes = torch::empty({T, E}, current.options());
  auto membrane = torch::empty({T, E}, current.options().dtype(torch::kFloat32));
  auto adapt = torch::empty({T, E}, current.options().dtype(torch::kFloat32));
  float *U = membrane.data_ptr<float>(), *A = adapt.data_ptr<float>();
  const float *B = beta.data_ptr<float>(), *R = rho.data_ptr<float>();
  const float th = static_cast<float>(threshold), adp = static_cast<float>(adaptation);
  with_element_type(current.scalar_type(), [&](auto zero) {
    using scalar_t = decltype(zero);
    const scalar_t* I = static_cast<const scalar_t*>(current.data_ptr());
    scalar_t* S = static_cast<scalar_t*>(spikes.data_ptr());
    for_neuron_blocks(E, [&](int64_t begin, int64_t end) {
      alif_forward_block(I, U, A, S, B, R, T, E, step, th, adp, zero_reset, begin, end);
    });
  });
  return {spikes, membrane, adapt};
}

// Backwards through time, with theta[t] = threshold + adaptation a[t], S[t] = U[t] > theta[t], x = U[t] - theta[t]:
//   dL/dS[t] = (direct) + (1 - rho) dL/da[t+1]                        (the adaptation path: S[t] raises a[t+1])
//   dL/dU[t] = dL/dS[t] S'(x) + dL/dU[t] (direct) + beta keep[t] dL/dU[t+1]   (keep = 1 - S[t], or 1 for subtract)
//   dL/da[t] = -adaptation dL/dS[t] S'(x) + rho dL/da[t+1]              (the reset's threshold is detached)
//   dL/dbeta += dL/dU[t+1] keep[t] U[t],  dL/drho += dL/da[t+1] (a[t] - S[t])   (per element, when asked)
template <int64_t kind, bool kSumTime, typename scalar_t>
static void alif_backward_block(scalar_t* G, float* GB, float* GR, const scalar_t* GS, const float* GM, const float* U,
                                const float* A, const float* B, const float* R, int64_t T, int64_t E, float th,
                                float adp, float slope, bool zero_reset, int64_t begin, int64_t end) {
  float carry_u[kBlock], carry_a[kBlock], total[kBlock], grad_beta[kBlock], grad_rho[kBlock];
  const int64_t n = end - begin;
  const float *b = B + begin, *r = R + begin;
  for (int64_t e = 0; e < n; ++e) grad_beta[e] = grad_rho[e] = 0.0f;
  for (int64_t t = T - 1; t >= 0; --t) {
    const float *u = U + t * E + begin, *a = A + t * E + begin;
    const scalar_t* gs = GS ? GS + t * E + begin : nullptr;
    const float* gm = GM ? GM + t * E + begin : nullptr;
    const bool later = t + 1 < T;
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) {
      const float theta = a[e] * adp + th;
      const float spiked = u[e] > theta ? 1.0f : 0.0f;
      float g_spike = gs ? to_float(gs[e]) : 0.0f;
      if (later) g_spike += (1.0f - r[e]) * carry_a[e];
      const float d = surrogate_derivative<kind>(u[e] - theta, slope) * g_spike;
      const float keep = zero_reset ? 1.0f - spiked : 1.0f;
      float g_u = d;
      if (gm) g_u += gm[e];
      float g_a = -adp * d;
      if (later) {
        g_u += b[e] * keep * carry_u[e];
        g_a += r[e] * carry_a[e];
        grad_beta[e] += carry_u[e] * keep * u[e];
        grad_rho[e] += carry_a[e] * (a[e] - spiked);
      }
      carry_u[e] = g_u;
      carry_a[e] = g_a;
      if constexpr (kSumTime)
        total[e] = later ? total[e] + g_u : g_u;
      else
        G[t * E + begin + e] = from_float<scalar_t>(g_u);
    }
  }
  if constexpr (kSumTime)
    for (int64_t e = 0; e < n; ++e) G[begin + e] = from_float<scalar_t>(total[e]);
  if (GB)
    for (int64_t e = 0; e < n; ++e) GB[begin + e] = grad_beta[e], GR[begin + e] = grad_rho[e];
}

// Returns {dL/dI ([T, E], or [1, E] summed over time), dL/dbeta [E], dL/drho [E]} (the last two only with
// param_grads, else undefined).
std::vector<torch::Tensor> alif_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                         const c10::optional<torch::Tensor>& grad_membrane,
                                         const torch::Tensor& membrane_in, const torch::Tensor& adapt_in,
                                         const torch::Tensor& beta_in, const torch::Tensor& rho_in, double threshold,
                                         double adaptation, bool zero_reset, int64_t surrogate, double slope,
                                         c10::ScalarType dtype, bool sum_over_time, bool param_grads) {
  auto membrane = membrane_in.contiguous(), adapt = adapt_in.contiguous();
  auto beta = beta_in.to(torch::kFloat32).contiguous(), rho = rho_in.to(torch::kFloat32).contiguous();
  const int64_t T = membrane.size(0), E = membrane.size(1);
  auto gs = grad_spikes.has_value() ? grad_spikes->to(dtype).contiguous() : torch::Tensor();
  auto gm = grad_membrane.has_value() ? grad_membrane->to(torch::kFloat32).contiguous() : torch::Tensor();
  auto grad = torch::empty({sum_over_time ? 1 : T, E}, membrane.options().dtype(dtype));
  torch::Tensor gb, gr;
  if (param_grads) gb = torch::empty({E}, membrane.options()), gr = torch::empty({E}, membrane.options());
  const float th = static_cast<float>(threshold), adp = static_cast<float>(adaptation), k = static_cast<float>(slope);
  const float *U = membrane.data_ptr<float>(), *A = adapt.data_ptr<float>();
  const float *B = beta.data_ptr<float>(), *R = rho.data_ptr<float>();
  const float* GM = gm.defined() ? gm.data_ptr<float>() : nullptr;
  float* GB = param_grads ? gb.data_ptr<float>() : nullptr;
  float* GR = param_grads ? gr.data_ptr<float>() : nullptr;
  with_element_type(dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    scalar_t* G = static_cast<scalar_t*>(grad.data_ptr());
    const scalar_t* GS = gs.defined() ? static_cast<const scalar_t*>(gs.data_ptr()) : nullptr;
    with_surrogate(surrogate, [&](auto kind) {
      for_neuron_blocks(E, [&](int64_t begin, int64_t end) {
        if (sum_over_time)
          alif_backward_block<kind.value, true>(G, GB, GR, GS, GM, U, A, B, R, T, E, th, adp, k, zero_reset, begin,
                                                end);
        else
          alif_backward_block<kind.value, false>(G, GB, GR, GS, GM, U, A, B, R, T, E, th, adp, k, zero_reset, begin,
                                                 end);
      });
    });
  });
  return {grad, gb, gr};
}
