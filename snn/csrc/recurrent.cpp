// A recurrent spiking layer's whole time loop (snn/recurrent_fused.py): I'[t] = I[t] + W s[t-1], then the neuron.
// Forward, event-driven: a batch row adds the rows of W^T (W's columns, contiguous) of the neurons that spiked at
// t-1 only; rows are independent through time, so each task takes its rows through all T steps (no barrier per step).
// Backward through time: dL/ds[t] gets dI'[t+1] W (one dense [rows, n] x [n, n] product per step and block of batch
// rows, into a preallocated buffer), then the neuron's backward for the step; dW = sum_t dI'[t]^T s[t-1] after the
// loop, event-driven too: a spike of neuron j adds a row of dI' to column j of dW. At S-MNIST's rates (a few %)
// that is ~20x fewer operations than the dense GEMM (timed beside it by benchmarks/rsnn_nets.py).
// The neuron is a small struct (Lif below): kStates state variables, kInput the one the current flows into, a row
// update forward and an elementwise update backward. Another neuron (ALIF, Synaptic: two states, the same reset) is
// another struct with these members; the loops stay as they are.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "time_loop.h"  // the surrogate derivatives

using time_loop::surrogate_derivative;
using time_loop::with_surrogate;

// snnTorch's Leaky: U[t] = beta U[t-1] + I'[t] - threshold S[t-1] (subtract), beta U[t-1] (1 - S[t-1]) + I'[t]
// (zero); S = U > threshold; the reset detached. The same operation order as LIF.step (snn/neurons.py).
struct Lif {
  static constexpr int kStates = 1, kInput = 0;
  float b, th, slope;
  bool zero_reset;

  // One step for a row of n neurons: now[] from before[] (nullptr at t = 0) and the current i + feedback.
  void forward(const float* const* before, float* const* now, const float* i, const float* feedback, float* s,
               int64_t n) const {
    float* u = now[0];
    if (!before) {
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) u[e] = i[e] + feedback[e];
    } else if (zero_reset) {
      const float* u0 = before[0];
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) u[e] = u0[e] * (1.0f - (u0[e] > th ? 1.0f : 0.0f)) * b + (i[e] + feedback[e]);
    } else {
      const float* u0 = before[0];
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) u[e] = u0[e] * b + (i[e] + feedback[e]) - th * (u0[e] > th ? 1.0f : 0.0f);
    }
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) s[e] = u[e] > th ? 1.0f : 0.0f;
  }

  // Elements [begin, end) of one step backwards: dL/dstate[t] from the spikes' gradient ds (direct + recurrent; may
  // be null), the membrane's direct gradient gm (may be null) and dL/dstate[t+1] (later; null at the last step).
  template <int64_t kind>
  void backward(const float* const* at, const float* ds, const float* gm, const float* const* later,
                float* const* out, int64_t begin, int64_t end) const {
    const float *u = at[0], *g1 = later ? later[0] : nullptr;
    float* g = out[0];
#pragma omp simd
    for (int64_t e = begin; e < end; ++e) {
      float d = ds ? surrogate_derivative<kind>(u[e] - th, slope) * ds[e] : 0.0f;
      if (gm) d += gm[e];
      if (g1) d += b * (zero_reset ? g1[e] * (u[e] > th ? 0.0f : 1.0f) : g1[e]);
      g[e] = d;
    }
  }
};

// current [T or 1, B, n] (1: the same current at every step), W [n, n] -> states [kStates, T, B, n], spikes [T, B, n].
template <typename Neuron>
static void forward_loop(const Neuron& neuron, const float* I, const float* Wt, float* X, float* S, int64_t T,
                         int64_t B, int64_t n, int64_t t_stride, int64_t b0, int64_t b1) {
  const int64_t TBn = T * B * n;
  std::vector<float> feedback(n);
  std::vector<int32_t> fired(n);  // the row's spikes at t-1, as neuron indices
  for (int64_t r = b0; r < b1; ++r) {
    int64_t count = 0;
    for (int64_t t = 0; t < T; ++t) {
      float* f = feedback.data();
      std::fill(f, f + n, 0.0f);
      for (int64_t k = 0; k < count; ++k) {  // event-driven: only the columns of the neurons that spiked
        const float* w = Wt + static_cast<int64_t>(fired[k]) * n;
#pragma omp simd
        for (int64_t e = 0; e < n; ++e) f[e] += w[e];
      }
      const int64_t row = (t * B + r) * n;
      const float* before[Neuron::kStates];
      float* now[Neuron::kStates];
      for (int q = 0; q < Neuron::kStates; ++q) {
        before[q] = X + q * TBn + row - B * n;
        now[q] = X + q * TBn + row;
      }
      float* s = S + row;
      neuron.forward(t ? before : nullptr, now, I + t * t_stride + r * n, f, s, n);
      count = 0;
      for (int64_t e = 0; e < n; ++e)
        if (s[e] != 0.0f) fired[count++] = static_cast<int32_t>(e);
    }
  }
}

static Lif make_lif(double beta, double threshold, double slope, bool zero_reset) {
  return Lif{static_cast<float>(beta), static_cast<float>(threshold), static_cast<float>(slope), zero_reset};
}

// -> {spikes [T, B, n], membrane [T, B, n]} (float32).
std::vector<torch::Tensor> recurrent_lif_forward(const torch::Tensor& current_in, const torch::Tensor& weight,
                                                 int64_t T, double beta, double threshold, bool zero_reset) {
  auto current = current_in.contiguous();
  const int64_t B = current.size(1), n = current.size(2), t_stride = current.size(0) == 1 ? 0 : B * n;
  auto Wt = weight.t().contiguous();
  auto spikes = torch::empty({T, B, n}, current.options());
  auto membrane = torch::empty({T, B, n}, current.options());
  const Lif neuron = make_lif(beta, threshold, 1.0, zero_reset);
  const float *I = current.data_ptr<float>(), *W = Wt.data_ptr<float>();
  float *X = membrane.data_ptr<float>(), *S = spikes.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    forward_loop(neuron, I, W, X, S, T, B, n, t_stride, b0, b1);
  });
  return {spikes, membrane};
}

// The loop backwards through time. G: dL/dstate [kStates, T, B, n]; its kInput entry is dL/dI'[t], the result.
// Batch rows are independent here too: each task takes its block of rows through all T steps, its product through W
// a single-threaded GEMM of its rows, so no step waits on a barrier (on a busy machine one costs a time slice).
template <int64_t kind, typename Neuron>
static void backward_loop(const Neuron& neuron, const float* GS, const float* GM, const float* X, float* G,
                          const torch::Tensor& grad_input, const torch::Tensor& weight, int64_t T, int64_t B,
                          int64_t n) {
  const int64_t Bn = B * n, TBn = T * Bn;
  auto recurrent = torch::empty({B, n}, weight.options());  // dL/ds[t] through W, then plus the direct one
  float* R = recurrent.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    auto rows = recurrent.slice(0, b0, b1);
    const int64_t begin = b0 * n, end = b1 * n;
    for (int64_t t = T - 1; t >= 0; --t) {
      const bool last = t + 1 == T;
      if (!last) at::mm_out(rows, grad_input.select(0, t + 1).slice(0, b0, b1), weight);  // dI'[t+1] W
      const float* gs = GS ? GS + t * Bn : nullptr;
      const float* gm = GM ? GM + t * Bn : nullptr;
      if (!last && gs) {
#pragma omp simd
        for (int64_t e = begin; e < end; ++e) R[e] += gs[e];
      }
      const float* at_t[Neuron::kStates];
      const float* later[Neuron::kStates];
      float* out[Neuron::kStates];
      for (int q = 0; q < Neuron::kStates; ++q) {
        at_t[q] = X + q * TBn + t * Bn;
        later[q] = G + q * TBn + (t + 1) * Bn;
        out[q] = G + q * TBn + t * Bn;
      }
      neuron.template backward<kind>(at_t, last ? gs : R, gm, last ? nullptr : later, out, begin, end);
    }
  });
}

// dW^T[j, :] = sum over (t, b) with s[t-1, b, j] = 1 of dI'[t, b, :]; each task owns a range of j (rows of dW^T).
static torch::Tensor event_driven_weight_grad(const float* U, const float* G, int64_t T, int64_t B, int64_t n,
                                              float th) {
  auto grad_t = torch::zeros({n, n}, torch::kFloat32);
  float* D = grad_t.data_ptr<float>();
  at::parallel_for(0, n, 8, [&](int64_t j0, int64_t j1) {
    for (int64_t row = 0; row < (T - 1) * B; ++row) {  // row = t * B + b: the spikes at t, the gradient at t + 1
      const float *u = U + row * n, *g = G + (row + B) * n;
      for (int64_t j = j0; j < j1; ++j) {
        if (u[j] <= th) continue;
        float* d = D + j * n;
#pragma omp simd
        for (int64_t e = 0; e < n; ++e) d[e] += g[e];
      }
    }
  });
  return grad_t.t().contiguous();
}

// -> {dL/dcurrent [T, B, n], dL/dW [n, n] (undefined without weight_grad)}.
std::vector<torch::Tensor> recurrent_lif_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                                  const c10::optional<torch::Tensor>& grad_membrane,
                                                  const torch::Tensor& membrane_in, const torch::Tensor& weight_in,
                                                  double beta, double threshold, bool zero_reset, int64_t surrogate,
                                                  double slope, bool weight_grad) {
  auto membrane = membrane_in.contiguous();
  auto weight = weight_in.contiguous();
  const int64_t T = membrane.size(0), B = membrane.size(1), n = membrane.size(2);
  auto gs = grad_spikes.has_value() ? grad_spikes->to(torch::kFloat32).contiguous() : torch::Tensor();
  auto gm = grad_membrane.has_value() ? grad_membrane->to(torch::kFloat32).contiguous() : torch::Tensor();
  auto grad = torch::empty({T, B, n}, membrane.options());
  const Lif neuron = make_lif(beta, threshold, slope, zero_reset);
  const float* GS = gs.defined() ? gs.data_ptr<float>() : nullptr;
  const float* GM = gm.defined() ? gm.data_ptr<float>() : nullptr;
  with_surrogate(surrogate, [&](auto kind) {
    backward_loop<decltype(kind)::value>(neuron, GS, GM, membrane.data_ptr<float>(), grad.data_ptr<float>(), grad,
                                         weight, T, B, n);
  });
  torch::Tensor grad_weight;
  if (weight_grad)  // dW[i, j] = sum over t >= 1 and the batch of dI'[t, b, i] s[t-1, b, j]
    grad_weight = event_driven_weight_grad(membrane.data_ptr<float>(), grad.data_ptr<float>(), T, B, n,
                                           static_cast<float>(threshold));
  return {grad, grad_weight};
}
