// bf16 as raw bits, so that the kernels' loops vectorise (at::BFloat16's conversions do not): the upper half of a
// float, rounded to nearest even (NaN handling left out: spikes and gradients are finite).
#pragma once
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <cstring>

using Bf16 = uint16_t;  // a plain integer type, not a struct: the vectoriser handles selects and stores of it

static inline float to_float(float x) { return x; }
static inline float to_float(Bf16 x) {
  uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T>
static inline T from_float(float x);
template <>
inline float from_float<float>(float x) { return x; }
template <>
inline Bf16 from_float<Bf16>(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

// Calls f(scalar_t{}) with scalar_t = Bf16 for bfloat16 tensors, float otherwise: the one place that maps a tensor's
// dtype to the kernels' element type (callers check the dtype is one of the two).
template <typename F>
static inline void with_element_type(c10::ScalarType dtype, F&& f) {
  if (dtype == c10::kBFloat16)
    f(Bf16{});
  else
    f(float{});
}
