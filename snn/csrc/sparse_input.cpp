// Event-driven products for mostly-zero inputs (spikes): only the non-zero entries of x do any work.
//   forward:      y = x W^T + b      = sparse_mm(csr(x), W^T) + b
//   weight grad:  dW^T = x^T dy      = sparse_mm(transpose(csr(x)), dy)
// sparse_mm keeps a block of output columns in registers while it adds up the dense rows the sparse row names.
// Under bf16 autocast the dense rows and the output may be bf16 (half the bytes to fetch: the weight gradient, which
// gathers rows of dy [T*B, M], runs about 2x faster, the forward 1.2x); the sums always run in float32.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "bf16.h"

#include <algorithm>
#include <type_traits>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

typedef float vec16 __attribute__((vector_size(64), aligned(4)));  // 16 floats, unaligned loads allowed
typedef uint16_t bf16x16 __attribute__((vector_size(32), aligned(2)));  // 16 bf16 as raw bits
typedef uint32_t u32x16 __attribute__((vector_size(64)));
constexpr int64_t kVectors = 8;   // vectors of 16 columns per block: 8 accumulators in registers
constexpr int64_t kRows = 256;    // rows per task
constexpr int64_t kAhead = 4;     // prefetch distance, in non-zeros

static inline vec16 load16(const float* p) { return *(const vec16*)p; }
static inline vec16 load16(const Bf16* p) {  // bf16 -> float: the bits move to the upper half
#ifdef __AVX512F__  // one widening load (GCC splits the generic conversion into halves)
  return (vec16)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16);
#else
  return (vec16)(__builtin_convertvector(*(const bf16x16*)p, u32x16) << 16);
#endif
}
static inline void store16(float* p, vec16 v) { *(vec16*)p = v; }
static inline void store16(Bf16* p, vec16 v) {  // round to nearest even, as from_float<Bf16>
  const u32x16 u = (u32x16)v;
  *(bf16x16*)p = __builtin_convertvector((u + 0x7FFF + ((u >> 16) & 1)) >> 16, bf16x16);
}

// kUnit: every value is 1 (spikes), so the products are skipped: 1 * w == w exactly, the same sums bit for bit.
template <int V, bool kUnit, typename dense_t, typename out_t>
static void gather_rows(out_t* out, const dense_t* dense, const float* start, int64_t M, const int64_t* offset,
                        const int64_t* rs, const int32_t* cp, const float* vp, int64_t begin, int64_t end) {
  const int64_t last = std::max<int64_t>(rs[end] - 1, 0);
  for (int64_t n = begin; n < end; ++n) {
    vec16 acc[V];
#pragma GCC unroll 8
    for (int i = 0; i < V; ++i) acc[i] = start ? load16(start + offset[i]) : vec16{};
    for (int64_t p = rs[n]; p < rs[n + 1]; ++p) {
      const float v = vp[p];
      const dense_t* row = dense + static_cast<int64_t>(cp[p]) * M;
      // the rows named are scattered, beyond the hardware prefetcher: fetch the one kAhead entries on (in this task)
      const dense_t* ahead = dense + static_cast<int64_t>(cp[std::min(p + kAhead, last)]) * M;
#pragma GCC unroll 8
      for (int i = 0; i < V; ++i) __builtin_prefetch(ahead + offset[i]);
#pragma GCC unroll 8
      for (int i = 0; i < V; ++i) acc[i] += kUnit ? load16(row + offset[i]) : v * load16(row + offset[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < V; ++i) store16(out + n * M + offset[i], acc[i]);
  }
}

// bf16 rows without widening loads: one 64-byte load is 32 bf16 = 16 words; a word's lower half (an even column)
// shifted up and its upper half (the odd column) masked are those columns as floats. Two accumulators per load, one
// for the even and one for the odd columns, add up the same values in the same order as gather_rows (the same
// sums bit for bit) with about half the instructions; they are put back in column order when stored.
typedef uint32_t u32x16u __attribute__((vector_size(64), aligned(2)));  // 32 bf16 as 16 words, unaligned
constexpr int64_t kPairs = 8;  // 64-byte loads per block: 256 columns, 16 accumulators

static inline void load_pair(const Bf16* p, vec16& even, vec16& odd) {
  const u32x16 w = *(const u32x16u*)p;
  even = (vec16)(w << 16);
  odd = (vec16)(w & 0xFFFF0000u);
}
static inline void load_pair(const float* p, vec16& even, vec16& odd) {  // the start row
  const vec16 a = load16(p), b = load16(p + 16);
  even = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  odd = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
static inline void store_pair(float* p, vec16 even, vec16 odd) {
  store16(p, __builtin_shufflevector(even, odd, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23));
  store16(p + 16, __builtin_shufflevector(even, odd, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31));
}
static inline void store_pair(Bf16* p, vec16 even, vec16 odd) {  // round to nearest even, as store16
  const u32x16 e = (u32x16)even, o = (u32x16)odd;
  const u32x16 re = (e + 0x7FFF + ((e >> 16) & 1)) >> 16, ro = (o + 0x7FFF + ((o >> 16) & 1)) & 0xFFFF0000u;
  *(u32x16u*)p = re | ro;
}

template <int P, bool kUnit, typename out_t>
static void gather_pairs(out_t* out, const Bf16* dense, const float* start, int64_t M, const int64_t* offset,
                         const int64_t* rs, const int32_t* cp, const float* vp, int64_t begin, int64_t end) {
  const int64_t last = std::max<int64_t>(rs[end] - 1, 0);
  for (int64_t n = begin; n < end; ++n) {
    vec16 even[P], odd[P];
#pragma GCC unroll 8
    for (int i = 0; i < P; ++i) {
      if (start)
        load_pair(start + offset[i], even[i], odd[i]);
      else
        even[i] = odd[i] = vec16{};
    }
    for (int64_t p = rs[n]; p < rs[n + 1]; ++p) {
      const float v = vp[p];
      const Bf16* row = dense + static_cast<int64_t>(cp[p]) * M;
      const Bf16* ahead = dense + static_cast<int64_t>(cp[std::min(p + kAhead, last)]) * M;
#pragma GCC unroll 8
      for (int i = 0; i < P; ++i) {  // 64 bytes may span two cache lines
        __builtin_prefetch(ahead + offset[i]);
        __builtin_prefetch(ahead + offset[i] + 31);
      }
#pragma GCC unroll 8
      for (int i = 0; i < P; ++i) {
        vec16 e, o;
        load_pair(row + offset[i], e, o);
        even[i] += kUnit ? e : v * e;
        odd[i] += kUnit ? o : v * o;
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < P; ++i) store_pair(out + n * M + offset[i], even[i], odd[i]);
  }
}

template <bool kUnit, typename out_t>
static void sparse_mm_pairs(const torch::Tensor& row_start, const torch::Tensor& column, const torch::Tensor& value,
                            const torch::Tensor& dense, const torch::Tensor& start, torch::Tensor& out) {
  const int64_t N = row_start.size(0) - 1, M = dense.size(1);
  const int64_t loads = (M + 31) / 32, blocks = (loads + kPairs - 1) / kPairs;
  const int64_t chunks = (N + kRows - 1) / kRows;
  at::parallel_for(0, blocks * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task / chunks, chunk = task % chunks;
      const int64_t first = block * kPairs, count = std::min(kPairs, loads - first);
      int64_t offset[kPairs];
      for (int64_t i = 0; i < count; ++i) offset[i] = std::min(32 * (first + i), M - 32);  // the last one overlaps
      const int64_t* rs = row_start.data_ptr<int64_t>();
      const int32_t* cp = column.data_ptr<int32_t>();
      const float* vp = value.data_ptr<float>();
      const float* sp = start.defined() ? start.data_ptr<float>() : nullptr;
      out_t* op = static_cast<out_t*>(out.data_ptr());
      const Bf16* dp = static_cast<const Bf16*>(dense.data_ptr());
      const int64_t r0 = chunk * kRows, r1 = std::min(N, r0 + kRows);
      switch (count) {
        case 1: gather_pairs<1, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 2: gather_pairs<2, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 3: gather_pairs<3, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 4: gather_pairs<4, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 5: gather_pairs<5, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 6: gather_pairs<6, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 7: gather_pairs<7, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        default: gather_pairs<8, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1);
      }
    }
  });
}

template <bool kUnit, typename dense_t, typename out_t>
static void sparse_mm_typed(const torch::Tensor& row_start, const torch::Tensor& column, const torch::Tensor& value,
                            const torch::Tensor& dense, const torch::Tensor& start, torch::Tensor& out) {
  const int64_t N = row_start.size(0) - 1, M = dense.size(1);
  const int64_t vectors = (M + 15) / 16, blocks = (vectors + kVectors - 1) / kVectors;
  const int64_t chunks = (N + kRows - 1) / kRows;
  at::parallel_for(0, blocks * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task / chunks, chunk = task % chunks;
      const int64_t first = block * kVectors, count = std::min(kVectors, vectors - first);
      int64_t offset[kVectors];
      for (int64_t i = 0; i < count; ++i) offset[i] = std::min(16 * (first + i), M - 16);  // the last one overlaps
      const int64_t* rs = row_start.data_ptr<int64_t>();
      const int32_t* cp = column.data_ptr<int32_t>();
      const float* vp = value.data_ptr<float>();
      const float* sp = start.defined() ? start.data_ptr<float>() : nullptr;
      out_t* op = static_cast<out_t*>(out.data_ptr());
      const dense_t* dp = static_cast<const dense_t*>(dense.data_ptr());
      const int64_t r0 = chunk * kRows, r1 = std::min(N, r0 + kRows);
      switch (count) {
        case 1: gather_rows<1, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 2: gather_rows<2, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 3: gather_rows<3, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 4: gather_rows<4, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 5: gather_rows<5, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 6: gather_rows<6, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 7: gather_rows<7, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        default: gather_rows<8, kUnit>(op, dp, sp, M, offset, rs, cp, vp, r0, r1);
      }
    }
  });
}

// out [N, M] (out_dtype) = start (broadcast float32 row, optional) + sum over p in row n of value[p] * dense[column[p]]
// dense: float32 or bf16; the sums run in float32 either way.
torch::Tensor sparse_mm(const torch::Tensor& row_start, const torch::Tensor& column, const torch::Tensor& value,
                        const torch::Tensor& dense_in, const c10::optional<torch::Tensor>& start_in,
                        c10::ScalarType out_dtype) {
  auto dense = dense_in.contiguous();
  const int64_t N = row_start.size(0) - 1, M = dense.size(1);
  const auto float_or_bf16 = [](c10::ScalarType t) { return t == torch::kFloat32 || t == torch::kBFloat16; };
  TORCH_CHECK(M >= 16, "sparse_mm needs at least 16 output columns");
  TORCH_CHECK(float_or_bf16(dense.scalar_type()) && float_or_bf16(out_dtype), "sparse_mm takes float32 or bfloat16");
  auto start = start_in.has_value() ? start_in->to(torch::kFloat32).contiguous() : torch::Tensor();
  auto out = torch::empty({N, M}, torch::TensorOptions().dtype(out_dtype));
  const float* vp = value.data_ptr<float>();
  const bool unit = std::all_of(vp, vp + value.numel(), [](float v) { return v == 1.0f; });
  with_element_type(dense.scalar_type(), [&](auto dense_zero) {
    with_element_type(out_dtype, [&](auto out_zero) {
      using dense_t = decltype(dense_zero);
      using out_t = decltype(out_zero);
      if constexpr (std::is_same_v<dense_t, Bf16>) {
        if (M >= 32) {  // narrower rows: one 16-column load at most, nothing to pair
          if (unit)
            sparse_mm_pairs<true, out_t>(row_start, column, value, dense, start, out);
          else
            sparse_mm_pairs<false, out_t>(row_start, column, value, dense, start, out);
          return;
        }
      }
      if (unit)
        sparse_mm_typed<true, dense_t, out_t>(row_start, column, value, dense, start, out);
      else
        sparse_mm_typed<false, dense_t, out_t>(row_start, column, value, dense, start, out);
    });
  });
  return out;
}

// src [R, C] float32 or bf16 -> its transpose [C, R], contiguous, in float32 or bf16: the products' W^T (forward) and
// their weight gradient dW = (dW^T)^T. Tiles of 16 x 16 are turned in registers and L1 (torch's strided copy of a
// transposed view, with the cast, took ~0.8 ms for the MLP's 784 x 1000 weight on 2 threads, this ~0.15).
torch::Tensor transpose_to(const torch::Tensor& src_in, c10::ScalarType out_dtype) {
  const auto float_or_bf16 = [](c10::ScalarType t) { return t == torch::kFloat32 || t == torch::kBFloat16; };
  TORCH_CHECK(src_in.dim() == 2 && float_or_bf16(src_in.scalar_type()) && float_or_bf16(out_dtype),
              "transpose_to takes a 2-D float32 or bf16 tensor and writes float32 or bf16");
  auto src = src_in.contiguous();
  const int64_t R = src.size(0), C = src.size(1);
  auto out = torch::empty({C, R}, torch::TensorOptions().dtype(out_dtype));
  with_element_type(src.scalar_type(), [&](auto src_zero) {
    with_element_type(out_dtype, [&](auto out_zero) {
      using src_t = decltype(src_zero);
      using out_t = decltype(out_zero);
      const src_t* sp = static_cast<const src_t*>(src.data_ptr());
      out_t* op = static_cast<out_t*>(out.data_ptr());
      at::parallel_for(0, (C + 15) / 16, 1, [&](int64_t begin, int64_t end) {
        float tile[16][16];  // whole tiles with fixed bounds (vectorised); the edges one element at a time
        for (int64_t c0 = begin * 16; c0 < std::min(C, end * 16); c0 += 16)
          for (int64_t r0 = 0; r0 < R; r0 += 16) {
            if (c0 + 16 <= C && r0 + 16 <= R) {
              for (int i = 0; i < 16; ++i)
                for (int j = 0; j < 16; ++j) tile[j][i] = to_float(sp[(r0 + i) * C + c0 + j]);
              for (int j = 0; j < 16; ++j)
                for (int i = 0; i < 16; ++i) op[(c0 + j) * R + r0 + i] = from_float<out_t>(tile[j][i]);
            } else {
              for (int64_t c = c0; c < std::min(C, c0 + 16); ++c)
                for (int64_t r = r0; r < std::min(R, r0 + 16); ++r)
                  op[c * R + r] = from_float<out_t>(to_float(sp[r * C + c]));
            }
          }
      });
    });
  });
  return out;
}
