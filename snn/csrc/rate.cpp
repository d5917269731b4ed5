// Rate coding in one pass: the 16-bit uniforms come from a counter-based generator (SplitMix64 of the word index:
// word k = mix(seed + (k + 1) * golden), four int16 lanes per word, the lowest first) and are compared with the
// thresholds as they are made. torch's CPU generator (Mersenne Twister) draws serially, ~4 ns a word: 2.8 ms of a
// 26 ms MLP training step; this runs in parallel and vectorises. snn/encoders.py computes the same words with tensor
// ops on other devices and without the kernels, so the spikes do not depend on the path.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "bf16.h"

static inline uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

constexpr int64_t kWords = 256;  // words per block: 1024 uniforms made on the stack, then compared

template <typename out_t>
static void rate_spikes_typed(uint64_t seed, const int32_t* thr, out_t* out, int64_t total, int64_t N) {
  const out_t one = from_float<out_t>(1.0f), zero = from_float<out_t>(0.0f);
  const int64_t blocks = (total + 4 * kWords - 1) / (4 * kWords);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    uint64_t words[kWords];
    for (int64_t b = begin; b < end; ++b) {
      const uint64_t first = static_cast<uint64_t>(b * kWords) + 1;
      for (int64_t k = 0; k < kWords; ++k) words[k] = splitmix64(seed + (first + k) * 0x9E3779B97F4A7C15ULL);
      const int16_t* u = reinterpret_cast<const int16_t*>(words);  // little-endian: lane 0 is the lowest 16 bits
      int64_t i = b * 4 * kWords;
      const int64_t stop = std::min(total, i + 4 * kWords);
      int64_t m = 0, n = i % N;
      while (i < stop) {  // runs that do not cross the end of a step's thresholds
        const int64_t len = std::min(stop - i, N - n);
#pragma GCC ivdep
        for (int64_t j = 0; j < len; ++j) out[i + j] = static_cast<int32_t>(u[m + j]) < thr[n + j] ? one : zero;
        i += len, m += len, n = 0;
      }
    }
  });
}

// seed: a 64-bit integer drawn from torch's generator; threshold [...] int32 (in [-2^15, 2^15]) -> [T, ...] float32
// or bf16 spikes
torch::Tensor rate_spikes(int64_t seed, const torch::Tensor& threshold_in, int64_t T, c10::ScalarType dtype) {
  TORCH_CHECK(threshold_in.scalar_type() == torch::kInt32, "rate_spikes takes int32 thresholds");
  TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kBFloat16, "rate_spikes writes float32 or bfloat16");
  TORCH_CHECK(T >= 1 && threshold_in.numel() >= 1, "rate_spikes: T >= 1 steps of at least one threshold");
  auto threshold = threshold_in.contiguous();
  std::vector<int64_t> shape{T};
  shape.insert(shape.end(), threshold.sizes().begin(), threshold.sizes().end());
  auto out = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  with_element_type(dtype, [&](auto zero) {
    using out_t = decltype(zero);
    rate_spikes_typed<out_t>(static_cast<uint64_t>(seed), threshold.data_ptr<int32_t>(),
                             static_cast<out_t*>(out.data_ptr()), out.numel(), threshold.numel());
  });
  return out;
}
