// The surrogate derivatives of snn/surrogates.py for the C++ kernels (csrc/lif.cpp, csrc/recurrent.cpp), and the
// one switch from a surrogate's kernel id to its compiled form.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

// As functions of x = membrane - threshold.
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

// Calls f(std::integral_constant<int64_t, kind>{}) for a surrogate's kernel id (snn/surrogates.py's kernel_id).
template <typename F>
static inline void with_surrogate(int64_t surrogate, F&& f) {
  switch (surrogate) {
    case kATan: f(std::integral_constant<int64_t, kATan>{}); break;
    case kFastSigmoid: f(std::integral_constant<int64_t, kFastSigmoid>{}); break;
    case kSigmoid: f(std::integral_constant<int64_t, kSigmoid>{}); break;
    case kTriangle: f(std::integral_constant<int64_t, kTriangle>{}); break;
    default: f(std::integral_constant<int64_t, kStraightThrough>{});
  }
}
