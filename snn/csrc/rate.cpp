// Rate coding's last step, spikes = (uniform < threshold) as floats, in one pass: torch compares the int16 uniforms
// [T, N] with the broadcast int32 thresholds [N] after promoting them, writes a bool tensor and converts it.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "bf16.h"

template <typename out_t>
static void rate_spikes_typed(const int16_t* u, const int32_t* thr, out_t* out, int64_t T, int64_t N) {
  const out_t one = from_float<out_t>(1.0f), zero = from_float<out_t>(0.0f);
  at::parallel_for(0, T, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
#pragma GCC ivdep
      for (int64_t n = 0; n < N; ++n) out[t * N + n] = static_cast<int32_t>(u[t * N + n]) < thr[n] ? one : zero;
  });
}

// uniform [T, ...] int16, threshold [...] int32 (in [-2^15, 2^15]) -> [T, ...] float32 or bf16 spikes
torch::Tensor rate_spikes(const torch::Tensor& uniform_in, const torch::Tensor& threshold_in, c10::ScalarType dtype) {
  TORCH_CHECK(uniform_in.scalar_type() == torch::kInt16 && threshold_in.scalar_type() == torch::kInt32,
              "rate_spikes takes int16 uniforms and int32 thresholds");
  TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kBFloat16, "rate_spikes writes float32 or bfloat16");
  auto uniform = uniform_in.contiguous();
  auto threshold = threshold_in.contiguous();
  const int64_t T = uniform.size(0), N = threshold.numel();
  TORCH_CHECK(uniform.numel() == T * N, "rate_spikes: a threshold per uniform of one step");
  auto out = torch::empty(uniform.sizes(), torch::TensorOptions().dtype(dtype));
  with_element_type(dtype, [&](auto zero) {
    using out_t = decltype(zero);
    rate_spikes_typed<out_t>(uniform.data_ptr<int16_t>(), threshold.data_ptr<int32_t>(),
                             static_cast<out_t*>(out.data_ptr()), T, N);
  });
  return out;
}
