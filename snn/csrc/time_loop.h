// What the neurons' time loops share (lif.cpp, alif.cpp, synaptic.cpp): blocks of neurons spread over torch's threads
// and the surrogate derivatives of snn/surrogates.py.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace time_loop {

// Within its scope, this thread flushes denormal floats to zero (FTZ, DAZ), as a GPU does. A gradient vanishing
// through hundreds of steps turns denormal, and x86 takes ~100 cycles per denormal operand: a fused S-MNIST backward
// went from 1 s to 27 s. Values below 1.2e-38 carry nothing a float32 update can use.
struct FlushDenormals {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040); }  // FTZ (bit 15) and DAZ (bit 6)
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

constexpr int64_t kGrain = 4096;  // neurons per task
constexpr int64_t kBlock = 512;   // neurons taken through all time steps at once: their rows stay in L1

// Runs body(begin, end) over blocks of at most kBlock neurons, the tasks spread over torch's threads.
template <typename F>
static void for_neuron_blocks(int64_t E, const F& body) {
  at::parallel_for(0, E, kGrain, [&](int64_t begin, int64_t end) {
    const FlushDenormals flush;
    for (int64_t b = begin; b < end; b += kBlock) body(b, std::min(end, b + kBlock));
  });
}

// The surrogate derivatives of snn/surrogates.py (their kernel_id), as functions of x = membrane - threshold.
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

// Calls body(std::integral_constant<int64_t, kind>{}) for the surrogate number `surrogate`: one compiled loop each.
template <typename F>
static void with_surrogate(int64_t surrogate, const F& body) {
  switch (surrogate) {
    case kATan: body(std::integral_constant<int64_t, kATan>{}); break;
    case kFastSigmoid: body(std::integral_constant<int64_t, kFastSigmoid>{}); break;
    case kSigmoid: body(std::integral_constant<int64_t, kSigmoid>{}); break;
    case kTriangle: body(std::integral_constant<int64_t, kTriangle>{}); break;
    default: body(std::integral_constant<int64_t, kStraightThrough>{});
  }
}

}  // namespace time_loop
