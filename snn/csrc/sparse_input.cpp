// Event-driven products for mostly-zero inputs (spikes): only the non-zero entries of x do any work.
//   forward:      y = x W^T + b      = sparse_mm(csr(x), W^T) + b
//   weight grad:  dW^T = x^T dy      = sparse_mm(transpose(csr(x)), dy)
// sparse_mm keeps a block of output columns in registers while it adds up the dense rows the sparse row names.
#include <torch/extension.h>
#include <ATen/Parallel.h>

typedef float vec16 __attribute__((vector_size(64), aligned(4)));  // 16 floats, unaligned loads allowed
constexpr int64_t kVectors = 8;   // vectors of 16 columns per block: 8 accumulators in registers
constexpr int64_t kRows = 256;    // rows per task

// x [N, K] float32 -> (row_start [N+1] int64, column [nnz] int32, value [nnz] float32)
std::vector<torch::Tensor> to_csr(const torch::Tensor& x_in) {
  TORCH_CHECK(x_in.dim() == 2 && x_in.scalar_type() == torch::kFloat32, "to_csr expects a 2-D float32 tensor");
  auto x = x_in.contiguous();
  const int64_t N = x.size(0), K = x.size(1);
  const float* xp = x.data_ptr<float>();
  auto row_start = torch::empty({N + 1}, torch::kInt64);
  int64_t* rs = row_start.data_ptr<int64_t>();
  rs[0] = 0;
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      int64_t count = 0;
      for (int64_t k = 0; k < K; ++k) count += xp[n * K + k] != 0.0f;
      rs[n + 1] = count;
    }
  });
  for (int64_t n = 0; n < N; ++n) rs[n + 1] += rs[n];
  auto column = torch::empty({rs[N]}, torch::kInt32);
  auto value = torch::empty({rs[N]}, torch::kFloat32);
  int32_t* cp = column.data_ptr<int32_t>();
  float* vp = value.data_ptr<float>();
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> cols(K + 1);  // branch-free: every entry is written, the cursor moves on non-zeros only
    std::vector<float> vals(K + 1);
    for (int64_t n = begin; n < end; ++n) {
      int64_t count = 0;
      for (int64_t k = 0; k < K; ++k) {
        const float v = xp[n * K + k];
        cols[count] = static_cast<int32_t>(k);
        vals[count] = v;
        count += v != 0.0f;
      }
      std::copy(cols.begin(), cols.begin() + count, cp + rs[n]);
      std::copy(vals.begin(), vals.begin() + count, vp + rs[n]);
    }
  });
  return {row_start, column, value};
}

// The CSR of x^T (columns of x become rows), by counting sort.
std::vector<torch::Tensor> transpose_csr(const torch::Tensor& row_start, const torch::Tensor& column,
                                         const torch::Tensor& value, int64_t columns) {
  const int64_t N = row_start.size(0) - 1, nnz = column.size(0);
  const int64_t* rs = row_start.data_ptr<int64_t>();
  const int32_t* cp = column.data_ptr<int32_t>();
  const float* vp = value.data_ptr<float>();
  auto t_start = torch::zeros({columns + 1}, torch::kInt64);
  auto t_column = torch::empty({nnz}, torch::kInt32);
  auto t_value = torch::empty({nnz}, torch::kFloat32);
  int64_t* ts = t_start.data_ptr<int64_t>();
  int32_t* tc = t_column.data_ptr<int32_t>();
  float* tv = t_value.data_ptr<float>();
  for (int64_t p = 0; p < nnz; ++p) ++ts[cp[p] + 1];
  for (int64_t k = 0; k < columns; ++k) ts[k + 1] += ts[k];
  std::vector<int64_t> cursor(ts, ts + columns);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = rs[n]; p < rs[n + 1]; ++p) {
      const int64_t q = cursor[cp[p]]++;
      tc[q] = static_cast<int32_t>(n);
      tv[q] = vp[p];
    }
  return {t_start, t_column, t_value};
}

template <int V>
static void gather_rows(float* out, const float* dense, const float* start, int64_t M, const int64_t* offset,
                        const int64_t* rs, const int32_t* cp, const float* vp, int64_t begin, int64_t end) {
  for (int64_t n = begin; n < end; ++n) {
    vec16 acc[V];
#pragma GCC unroll 8
    for (int i = 0; i < V; ++i) acc[i] = start ? *(const vec16*)(start + offset[i]) : vec16{};
    for (int64_t p = rs[n]; p < rs[n + 1]; ++p) {
      const float v = vp[p];
      const float* row = dense + static_cast<int64_t>(cp[p]) * M;
#pragma GCC unroll 8
      for (int i = 0; i < V; ++i) acc[i] += v * *(const vec16*)(row + offset[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < V; ++i) *(vec16*)(out + n * M + offset[i]) = acc[i];
  }
}

// out [N, M] = start (broadcast row, optional) + sum over p in row n of value[p] * dense[column[p], :]
torch::Tensor sparse_mm(const torch::Tensor& row_start, const torch::Tensor& column, const torch::Tensor& value,
                        const torch::Tensor& dense_in, const c10::optional<torch::Tensor>& start_in) {
  auto dense = dense_in.contiguous();
  const int64_t N = row_start.size(0) - 1, M = dense.size(1);
  TORCH_CHECK(M >= 16, "sparse_mm needs at least 16 output columns");
  auto start = start_in.has_value() ? start_in->contiguous() : torch::Tensor();
  auto out = torch::empty({N, M}, torch::kFloat32);
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
      float* op = out.data_ptr<float>();
      const float* dp = dense.data_ptr<float>();
      const int64_t r0 = chunk * kRows, r1 = std::min(N, r0 + kRows);
      switch (count) {
        case 1: gather_rows<1>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 2: gather_rows<2>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 3: gather_rows<3>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 4: gather_rows<4>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 5: gather_rows<5>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 6: gather_rows<6>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        case 7: gather_rows<7>(op, dp, sp, M, offset, rs, cp, vp, r0, r1); break;
        default: gather_rows<8>(op, dp, sp, M, offset, rs, cp, vp, r0, r1);
      }
    }
  });
  return out;
}
