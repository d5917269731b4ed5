// The compressed sparse rows (CSR) of a spike matrix and of its transpose, for the event-driven products of
// sparse_input.cpp: row_start [N+1] int64, column [nnz] int32 (ascending within a row), value [nnz] float32.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "bf16.h"

#include <algorithm>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

constexpr int64_t kSlack = 16;  // a full vector may be stored past a row's last non-zero

#ifdef __AVX512F__
static inline __m512 load_floats(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load_floats(const Bf16* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
#endif

// Row n's non-zeros into cols/vals (at least K + kSlack long); returns their count. With AVX-512, 16 entries at a
// time: the non-zeros are compressed into a register and stored whole (Zen 4's compressing store to memory is
// microcoded and slow), the cursor moves by their count. 0 and -0 are zeros, NaN is not (as v != 0.0f).
template <typename scalar_t>
static int64_t row_nonzeros(const scalar_t* x, int64_t K, int32_t* cols, float* vals) {
  int64_t count = 0, k = 0;
#ifdef __AVX512F__
  const __m512i step = _mm512_set1_epi32(16);
  __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; k + 16 <= K; k += 16, index = _mm512_add_epi32(index, step)) {
    const __m512 v = load_floats(x + k);
    const __mmask16 nonzero = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_si512(cols + count, _mm512_maskz_compress_epi32(nonzero, index));
    _mm512_storeu_ps(vals + count, _mm512_maskz_compress_ps(nonzero, v));
    count += __builtin_popcount(nonzero);
  }
#endif
  for (; k < K; ++k) {  // branch-free: every entry is written, the cursor moves on non-zeros only
    const float v = to_float(x[k]);
    cols[count] = static_cast<int32_t>(k);
    vals[count] = v;
    count += v != 0.0f;
  }
  return count;
}

// x [N, K] float32 or bf16 -> (row_start, column, value). Each thread takes whole rows into its own buffers, once;
// the rows are then copied to their places.
template <typename scalar_t>
static std::vector<torch::Tensor> to_csr_typed(const torch::Tensor& x) {
  const int64_t N = x.size(0), K = x.size(1);
  const scalar_t* xp = static_cast<const scalar_t*>(x.data_ptr());
  auto row_start = torch::empty({N + 1}, torch::kInt64);
  int64_t* rs = row_start.data_ptr<int64_t>();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), N));
  std::vector<std::vector<int32_t>> cols(chunks);
  std::vector<std::vector<float>> vals(chunks);
  const auto rows_of = [&](int64_t c) { return std::make_pair(N * c / chunks, N * (c + 1) / chunks); };
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const auto [first, last] = rows_of(c);
      int64_t used = 0;
      for (int64_t n = first; n < last; ++n) {
        if (cols[c].size() < static_cast<size_t>(used + K + kSlack)) {  // room for a whole row of non-zeros
          const size_t size = std::max<size_t>(2 * cols[c].size(), used + K + kSlack);
          cols[c].resize(size), vals[c].resize(size);
        }
        const int64_t count = row_nonzeros(xp + n * K, K, cols[c].data() + used, vals[c].data() + used);
        rs[n + 1] = count;
        used += count;
      }
    }
  });
  rs[0] = 0;
  for (int64_t n = 0; n < N; ++n) rs[n + 1] += rs[n];
  auto column = torch::empty({rs[N]}, torch::kInt32);
  auto value = torch::empty({rs[N]}, torch::kFloat32);
  int32_t* cp = column.data_ptr<int32_t>();
  float* vp = value.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const auto [first, last] = rows_of(c);
      const int64_t count = rs[last] - rs[first];
      std::copy(cols[c].begin(), cols[c].begin() + count, cp + rs[first]);
      std::copy(vals[c].begin(), vals[c].begin() + count, vp + rs[first]);
    }
  });
  return {row_start, column, value};
}

std::vector<torch::Tensor> to_csr(const torch::Tensor& x_in) {
  const auto dtype = x_in.scalar_type();
  TORCH_CHECK(x_in.dim() == 2 && (dtype == torch::kFloat32 || dtype == torch::kBFloat16),
              "to_csr expects a 2-D float32 or bfloat16 tensor");
  std::vector<torch::Tensor> csr;
  with_element_type(dtype, [&](auto zero) { csr = to_csr_typed<decltype(zero)>(x_in.contiguous()); });
  return csr;
}

// The CSR of x^T (columns of x become rows), by a counting sort that keeps the rows' order within each column (the
// weight gradient then adds up its samples in order, whatever the threads). Each thread counts the columns of a
// range of rows; a column's entries from thread t go after those of threads before t. ones_row: one more row, of N
// ones (a constant input of 1), so that a product with it also returns the column sums of the dense matrix: the
// bias gradient.
std::vector<torch::Tensor> transpose_csr(const torch::Tensor& row_start, const torch::Tensor& column,
                                         const torch::Tensor& value, int64_t columns, bool ones_row) {
  const int64_t N = row_start.size(0) - 1, nnz = column.size(0), extra = ones_row ? N : 0;
  const int64_t* rs = row_start.data_ptr<int64_t>();
  const int32_t* cp = column.data_ptr<int32_t>();
  const float* vp = value.data_ptr<float>();
  auto t_start = torch::empty({columns + 1 + ones_row}, torch::kInt64);
  auto t_column = torch::empty({nnz + extra}, torch::kInt32);
  auto t_value = torch::empty({nnz + extra}, torch::kFloat32);
  int64_t* ts = t_start.data_ptr<int64_t>();
  int32_t* tc = t_column.data_ptr<int32_t>();
  float* tv = t_value.data_ptr<float>();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), N));
  std::vector<int64_t> cursor(chunks * columns, 0);  // counts per chunk and column, then where each chunk writes
  const auto rows_of = [&](int64_t c) { return std::make_pair(N * c / chunks, N * (c + 1) / chunks); };
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const auto [first, last] = rows_of(c);
      int64_t* count = cursor.data() + c * columns;
      for (int64_t p = rs[first]; p < rs[last]; ++p) ++count[cp[p]];
    }
  });
  int64_t at = 0;
  for (int64_t k = 0; k < columns; ++k) {
    ts[k] = at;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t count = cursor[c * columns + k];
      cursor[c * columns + k] = at;
      at += count;
    }
  }
  ts[columns] = nnz;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const auto [first, last] = rows_of(c);
      int64_t* place = cursor.data() + c * columns;
      for (int64_t n = first; n < last; ++n)
        for (int64_t p = rs[n]; p < rs[n + 1]; ++p) {
          const int64_t q = place[cp[p]]++;
          tc[q] = static_cast<int32_t>(n);
          tv[q] = vp[p];
        }
    }
  });
  if (ones_row) {
    ts[columns + 1] = nnz + N;
    for (int64_t n = 0; n < N; ++n) {
      tc[nnz + n] = static_cast<int32_t>(n);
      tv[nnz + n] = 1.0f;
    }
  }
  return {t_start, t_column, t_value};
}
