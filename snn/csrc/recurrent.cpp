// A recurrent spiking layer's whole time loop (snn/recurrent_fused.py): I'[t] = I[t] + W s[t-1], then the neuron.
// Forward, event-driven: a batch row adds the rows of W^T (W's columns, contiguous) of the neurons that spiked at
// t-1 only; rows are independent through time, so each task takes its rows through all T steps (no barrier per step).
// Backward through time: dL/ds[t] gets dI'[t+1] W (one dense [rows, n] x [n, n] product per step and block of batch
// rows, into a preallocated buffer), then the neuron's backward for the step; dW = sum_t dI'[t]^T s[t-1] after the
// loop, event-driven too: a spike of neuron j adds a row of dI' to column j of dW. At S-MNIST's rates (a few %)
// that is ~20x fewer operations than the dense GEMM (timed beside it by benchmarks/rsnn_nets.py).
// The neurons (LIF, ALIF, Synaptic) are small structs in recurrent_neurons.h; the loops here are generic over them.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <array>
#include <mutex>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "bf16.h"
#include "recurrent_neurons.h"

using time_loop::with_surrogate;

template <int K>
using Ptrs = std::array<float*, K>;

// Pointers to one row (offset `at`) of each state [T, B, n]; a missing state (nullptr) stays nullptr.
template <int K>
static std::array<const float*, K> row_of(const Ptrs<K>& X, int64_t at) {
  std::array<const float*, K> p;
  for (int q = 0; q < K; ++q) p[q] = X[q] ? X[q] + at : nullptr;
  return p;
}

constexpr int64_t kSlack = 16;  // an index list may be written a whole vector past its last entry

// The indices e in [e0, e1) with s[e] != 0, into out (room for e1 - e0 + kSlack); returns their count. Branch-free
// (a spike is a coin flip to the branch predictor): AVX-512 compresses 16 at a time in a register, stored whole.
static int64_t nonzero_indices(const float* s, int64_t e0, int64_t e1, int32_t* out) {
  int64_t count = 0, e = e0;
#ifdef __AVX512F__
  __m512i index = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                   _mm512_set1_epi32(static_cast<int32_t>(e0)));
  for (; e + 16 <= e1; e += 16, index = _mm512_add_epi32(index, _mm512_set1_epi32(16))) {
    const __mmask16 fired = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + e), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_si512(out + count, _mm512_maskz_compress_epi32(fired, index));
    count += __builtin_popcount(fired);
  }
#endif
  for (; e < e1; ++e) {
    out[count] = static_cast<int32_t>(e);
    count += s[e] != 0.0f;
  }
  return count;
}

// current [T or 1, B, n] (t_stride 0: the same current at every step), W^T [n, n] -> states, spikes [T, B, n]. A
// task takes its block of batch rows through all T steps, step by step: the feedback W s[t-1] of the block is either
// event-driven (each row adds W's columns of the neurons that spiked, 4 at a time) or, where more than dense_above of
// the block's neurons spiked, one [rows, n] x [n, n] GEMM (blocked, at the machine's GEMM rate: ahead at high rates).
template <typename Neuron>
static void forward_rows(const Neuron& neuron, const float* I, const torch::Tensor& weight_t,
                         const Ptrs<Neuron::kStates>& X, const torch::Tensor& spikes, int64_t T, int64_t B, int64_t n,
                         int64_t t_stride, double dense_above, int64_t b0, int64_t b1) {
  const int64_t rows = b1 - b0;
  const float* Wt = weight_t.data_ptr<float>();
  float* S = spikes.data_ptr<float>();
  auto feedback = torch::empty({rows, n}, weight_t.options());
  const int64_t stride = n + kSlack;
  std::vector<int32_t> fired(rows * stride);  // each row's spikes at t-1, as neuron indices
  std::vector<int64_t> count(rows, 0);
  for (int64_t t = 0; t < T; ++t) {
    int64_t total = 0;
    for (int64_t r = 0; r < rows; ++r) total += count[r];
    const bool dense = t > 0 && static_cast<double>(total) > dense_above * static_cast<double>(rows * n);
    if (dense) at::mm_out(feedback, spikes.select(0, t - 1).slice(0, b0, b1), weight_t);  // s[t-1] W^T
    for (int64_t r = 0; r < rows; ++r) {
      float* f = feedback.data_ptr<float>() + r * n;
      const int32_t* k_fired = fired.data() + r * stride;
      if (!dense) {
        std::fill(f, f + n, 0.0f);
        int64_t k = 0;
        for (; k + 4 <= count[r]; k += 4) {
          const float *w0 = Wt + int64_t{k_fired[k]} * n, *w1 = Wt + int64_t{k_fired[k + 1]} * n;
          const float *w2 = Wt + int64_t{k_fired[k + 2]} * n, *w3 = Wt + int64_t{k_fired[k + 3]} * n;
#pragma omp simd
          for (int64_t e = 0; e < n; ++e) f[e] += (w0[e] + w1[e]) + (w2[e] + w3[e]);
        }
        for (; k < count[r]; ++k) {
          const float* w = Wt + int64_t{k_fired[k]} * n;
#pragma omp simd
          for (int64_t e = 0; e < n; ++e) f[e] += w[e];
        }
      }
      const int64_t row = (t * B + b0 + r) * n;
      std::array<const float*, Neuron::kStates> before;
      std::array<float*, Neuron::kStates> now;
      for (int q = 0; q < Neuron::kStates; ++q) before[q] = X[q] + (t ? row - B * n : row), now[q] = X[q] + row;
      float* s = S + row;
      neuron.forward(t ? before.data() : nullptr, now.data(), I + t * t_stride + (b0 + r) * n, f, s, n);
      count[r] = nonzero_indices(s, 0, n, fired.data() + r * stride);
    }
  }
}

// -> {spikes, then the kStates states}, each [T, B, n] float32.
template <typename Neuron>
static std::vector<torch::Tensor> run_forward(const Neuron& neuron, const torch::Tensor& current_in,
                                              const torch::Tensor& weight, int64_t T, double dense_above) {
  auto current = current_in.contiguous();
  const int64_t B = current.size(1), n = current.size(2), t_stride = current.size(0) == 1 ? 0 : B * n;
  auto Wt = weight.t().contiguous();
  std::vector<torch::Tensor> out{torch::empty({T, B, n}, current.options())};
  Ptrs<Neuron::kStates> X;
  for (int q = 0; q < Neuron::kStates; ++q) {
    out.push_back(torch::empty({T, B, n}, current.options()));
    X[q] = out.back().data_ptr<float>();
  }
  const float* I = current.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    const time_loop::FlushDenormals flush;
    forward_rows(neuron, I, Wt, X, out[0], T, B, n, t_stride, dense_above, b0, b1);
  });
  return out;
}

// The loop backwards through time into grad_input = dL/dI' [T, B, n] (the input state's gradient). A bf16 weight (the
// caller's choice under bf16 autocast) makes the products through W bf16 GEMMs: twice the rate here. Batch rows are
// independent here too: each task takes its block of rows through all T steps, its product through W a
// single-threaded GEMM of its rows, so no step waits on a barrier (on a busy machine one costs a time slice). Each
// task sums the neuron's parameter gradients over its rows, then adds them to `acc` ([kParams, n]). The other
// states' gradients (ALIF's a, Synaptic's U), read only by the step before, live in two [rows, n] buffers per task,
// alternating by t: cache-resident, no [T, B, n] written and read back.
template <int64_t kind, typename Neuron>
static void backward_loop(const Neuron& neuron, const float* GS, const float* GM, const Ptrs<Neuron::kStates>& X,
                          const torch::Tensor& grad_input, const torch::Tensor& weight, float* acc, int64_t T,
                          int64_t B, int64_t n) {
  const int64_t Bn = B * n;
  float* G_in = grad_input.data_ptr<float>();
  auto recurrent = torch::empty({B, n}, torch::kFloat32);  // dL/ds[t] through W, then plus the direct one
  float* Rc = recurrent.data_ptr<float>();
  std::mutex adding;
  const bool low = weight.scalar_type() == torch::kBFloat16;
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    const time_loop::FlushDenormals flush;  // its products through W too (the GEMM runs on this thread)
    auto rows = recurrent.slice(0, b0, b1);
    const int64_t size = (b1 - b0) * n;
    torch::Tensor rows16, product16;  // a bf16 weight: dI'[t+1]'s rows and their product in bf16
    if (low) rows16 = torch::empty({b1 - b0, n}, weight.options()), product16 = torch::empty_like(rows16);
    std::vector<float> mine(acc ? Neuron::kParams * n : 0, 0.0f);
    std::vector<float> ring(2 * Neuron::kStates * size);  // [parity][state][rows, n]; the input state's part unused
    for (int64_t t = T - 1; t >= 0; --t) {
      const bool last = t + 1 == T;
      if (!last && low) {
        const float* from = grad_input.data_ptr<float>() + ((t + 1) * B + b0) * n;
        Bf16* a = static_cast<Bf16*>(rows16.data_ptr());
#pragma omp simd
        for (int64_t e = 0; e < size; ++e) a[e] = from_float<Bf16>(from[e]);
        at::mm_out(product16, rows16, weight);  // dI'[t+1] W in bf16 (float32 sums)
        const Bf16* p = static_cast<const Bf16*>(product16.data_ptr());
#pragma omp simd
        for (int64_t e = 0; e < size; ++e) Rc[b0 * n + e] = to_float(p[e]);
      } else if (!last) {
        at::mm_out(rows, grad_input.select(0, t + 1).slice(0, b0, b1), weight);  // dI'[t+1] W
      }
      const float* gs = GS ? GS + t * Bn : nullptr;
      const float* gm = GM ? GM + t * Bn : nullptr;
      if (!last && gs) {
#pragma omp simd
        for (int64_t e = b0 * n; e < b1 * n; ++e) Rc[e] += gs[e];
      }
      const float* ds = last ? gs : Rc;
      for (int64_t r = b0; r < b1; ++r) {
        const int64_t at = t * Bn + r * n;
        auto at_t = row_of<Neuron::kStates>(X, at);
        auto before = row_of<Neuron::kStates>(X, t ? at - Bn : at);
        std::array<const float*, Neuron::kStates> later;
        std::array<float*, Neuron::kStates> out;
        for (int q = 0; q < Neuron::kStates; ++q) {
          float* now = ring.data() + ((t & 1) * Neuron::kStates + q) * size + (r - b0) * n;
          const float* next = ring.data() + ((~t & 1) * Neuron::kStates + q) * size + (r - b0) * n;
          out[q] = q == Neuron::kInput ? G_in + at : now;
          later[q] = q == Neuron::kInput ? G_in + at + Bn : next;
        }
        neuron.template backward<kind>(at_t.data(), t ? before.data() : nullptr, ds ? ds + r * n : nullptr,
                                       gm ? gm + r * n : nullptr, last ? nullptr : later.data(), out.data(),
                                       acc ? mine.data() : nullptr, n);
      }
    }
    if (acc) {
      std::lock_guard<std::mutex> lock(adding);
      for (size_t e = 0; e < mine.size(); ++e) acc[e] += mine[e];
    }
  });
}

// dW^T[j, :] = sum over (t, b) with s[t-1, b, j] = 1 of dI'[t, b, :]; each task owns a range of j (rows of dW^T).
// The spikes are recomputed from the stored states into a row, then listed (nonzero_indices) before the adds.
template <typename Neuron>
static torch::Tensor event_driven_weight_grad(const Neuron& neuron, const Ptrs<Neuron::kStates>& X, const float* G,
                                              int64_t T, int64_t B, int64_t n) {
  auto grad_t = torch::zeros({n, n}, torch::kFloat32);
  float* D = grad_t.data_ptr<float>();
  at::parallel_for(0, n, 8, [&](int64_t j0, int64_t j1) {
    const time_loop::FlushDenormals flush;
    std::vector<float> spiked(n);
    std::vector<int32_t> fired(j1 - j0 + kSlack);
    for (int64_t row = 0; row < (T - 1) * B; ++row) {  // row = t * B + b: the spikes at t, the gradient at t + 1
      auto x = row_of<Neuron::kStates>(X, row * n);
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) spiked[j] = neuron.fired(x.data(), j) ? 1.0f : 0.0f;
      const int64_t count = nonzero_indices(spiked.data(), j0, j1, fired.data());
      const float* g = G + (row + B) * n;
      for (int64_t k = 0; k < count; ++k) {
        float* d = D + int64_t{fired[k]} * n;
#pragma omp simd
        for (int64_t e = 0; e < n; ++e) d[e] += g[e];
      }
    }
  });
  return grad_t.t().contiguous();
}

// -> {dL/dI' [T, B, n], dL/dW [n, n] (undefined without weight_grad), the parameter gradients [kParams, n] (or
// undefined)}. states: the stored ones (a state the backward does not read may be undefined).
template <typename Neuron>
static std::vector<torch::Tensor> run_backward(const Neuron& neuron, const c10::optional<torch::Tensor>& grad_spikes,
                                               const c10::optional<torch::Tensor>& grad_membrane,
                                               const std::vector<torch::Tensor>& states_in,
                                               const torch::Tensor& weight_in, int64_t surrogate, bool weight_grad,
                                               bool param_grads) {
  std::vector<torch::Tensor> states;
  Ptrs<Neuron::kStates> X;
  for (int q = 0; q < Neuron::kStates; ++q) {
    states.push_back(states_in[q].defined() ? states_in[q].contiguous() : torch::Tensor());
    X[q] = states[q].defined() ? states[q].data_ptr<float>() : nullptr;
  }
  auto weight = weight_in.contiguous();
  const int64_t T = states[0].size(0), B = states[0].size(1), n = states[0].size(2);
  auto grad = torch::empty({T, B, n}, states[0].options());  // dL/dI' (the other states' gradients: per task)
  auto gs = grad_spikes.has_value() ? grad_spikes->to(torch::kFloat32).contiguous() : torch::Tensor();
  auto gm = grad_membrane.has_value() ? grad_membrane->to(torch::kFloat32).contiguous() : torch::Tensor();
  torch::Tensor params;
  if (param_grads && Neuron::kParams) params = torch::zeros({Neuron::kParams, n}, states[0].options());
  float* acc = params.defined() ? params.data_ptr<float>() : nullptr;
  const float* GS = gs.defined() ? gs.data_ptr<float>() : nullptr;
  const float* GM = gm.defined() ? gm.data_ptr<float>() : nullptr;
  with_surrogate(surrogate, [&](auto kind) {
    backward_loop<decltype(kind)::value>(neuron, GS, GM, X, grad, weight, acc, T, B, n);
  });
  torch::Tensor grad_weight;
  if (weight_grad)  // dW[i, j] = sum over t >= 1 and the batch of dI'[t, b, i] s[t-1, b, j]
    grad_weight = event_driven_weight_grad(neuron, X, grad.data_ptr<float>(), T, B, n);
  return {grad, grad_weight, params};
}

static float f32(double x) { return static_cast<float>(x); }

// dense_above: the share of a block's neurons spiking above which its feedback is one GEMM. -> {spikes [T, B, n],
// membrane [T, B, n]} (float32).
std::vector<torch::Tensor> recurrent_lif_forward(const torch::Tensor& current, const torch::Tensor& weight, int64_t T,
                                                 double beta, double threshold, bool zero_reset,
                                                 double dense_above) {
  return run_forward(Lif{f32(beta), f32(threshold), 1.0f, zero_reset}, current, weight, T, dense_above);
}

// -> {dL/dcurrent [T, B, n], dL/dW [n, n] (undefined without weight_grad)}.
std::vector<torch::Tensor> recurrent_lif_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                                  const c10::optional<torch::Tensor>& grad_membrane,
                                                  const torch::Tensor& membrane, const torch::Tensor& weight,
                                                  double beta, double threshold, bool zero_reset, int64_t surrogate,
                                                  double slope, bool weight_grad) {
  const Lif neuron{f32(beta), f32(threshold), f32(slope), zero_reset};
  auto out = run_backward(neuron, grad_spikes, grad_membrane, {membrane}, weight, surrogate, weight_grad, false);
  return {out[0], out[1]};
}

// beta, rho: [n] float32. -> {spikes, membrane, adaptation}, each [T, B, n].
std::vector<torch::Tensor> recurrent_alif_forward(const torch::Tensor& current, const torch::Tensor& weight, int64_t T,
                                                  const torch::Tensor& beta_in, const torch::Tensor& rho_in,
                                                  double threshold, double adaptation, bool zero_reset,
                                                  double dense_above) {
  auto beta = beta_in.to(torch::kFloat32).contiguous(), rho = rho_in.to(torch::kFloat32).contiguous();
  const Alif neuron{beta.data_ptr<float>(), rho.data_ptr<float>(), f32(threshold), f32(adaptation), 1.0f, zero_reset};
  return run_forward(neuron, current, weight, T, dense_above);
}

// -> {dL/dcurrent, dL/dW (or undefined), dL/dbeta and dL/drho as [2, n] (or undefined without param_grads)}.
std::vector<torch::Tensor> recurrent_alif_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                                   const c10::optional<torch::Tensor>& grad_membrane,
                                                   const torch::Tensor& membrane, const torch::Tensor& adapt,
                                                   const torch::Tensor& weight, const torch::Tensor& beta_in,
                                                   const torch::Tensor& rho_in, double threshold, double adaptation,
                                                   bool zero_reset, int64_t surrogate, double slope, bool weight_grad,
                                                   bool param_grads) {
  auto beta = beta_in.to(torch::kFloat32).contiguous(), rho = rho_in.to(torch::kFloat32).contiguous();
  const Alif neuron{beta.data_ptr<float>(), rho.data_ptr<float>(), f32(threshold), f32(adaptation), f32(slope),
                    zero_reset};
  return run_backward(neuron, grad_spikes, grad_membrane, {membrane, adapt}, weight, surrogate, weight_grad,
                      param_grads);
}

// reset: 0 subtract, 1 zero, 2 zero_leaky. -> {spikes, membrane, synaptic current}, each [T, B, n].
std::vector<torch::Tensor> recurrent_synaptic_forward(const torch::Tensor& current, const torch::Tensor& weight,
                                                      int64_t T, double alpha, double beta, double threshold,
                                                      int64_t reset, double dense_above) {
  return run_forward(Synaptic{f32(alpha), f32(beta), f32(threshold), 1.0f, reset}, current, weight, T, dense_above);
}

// Only the membrane is stored (the backward does not read the synaptic current). -> {dL/dcurrent, dL/dW}.
std::vector<torch::Tensor> recurrent_synaptic_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                                       const c10::optional<torch::Tensor>& grad_membrane,
                                                       const torch::Tensor& membrane, const torch::Tensor& weight,
                                                       double alpha, double beta, double threshold, int64_t reset,
                                                       int64_t surrogate, double slope, bool weight_grad) {
  const Synaptic neuron{f32(alpha), f32(beta), f32(threshold), f32(slope), reset};
  auto out = run_backward(neuron, grad_spikes, grad_membrane, {membrane, torch::Tensor()}, weight, surrogate,
                          weight_grad, false);
  return {out[0], out[1]};
}
