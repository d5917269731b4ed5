// 2x2 max-pooling with stride 2 on channels-last tensors [N, H, W, C] (odd H, W: the last row/column is dropped, as
// nn.MaxPool2d does). The window's first maximum wins, in nn.MaxPool2d's order, so gradients match it exactly; the
// index kept for backward is one byte (0-3) instead of torch's int64, and backward writes every input gradient once
// (no zero fill first).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "bf16.h"

namespace {


template <typename scalar_t>
void pool_forward(const scalar_t* x, scalar_t* y, uint8_t* index, int64_t N, int64_t H, int64_t W, int64_t C) {
  const int64_t Ho = H / 2, Wo = W / 2;
  at::parallel_for(0, N * Ho, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho, ho = row % Ho;
      for (int64_t wo = 0; wo < Wo; ++wo) {
        const scalar_t* a = x + ((n * H + 2 * ho) * W + 2 * wo) * C;
        const scalar_t *b = a + C, *c = a + W * C, *d = c + C;
        scalar_t* out = y + (row * Wo + wo) * C;
        uint8_t* idx = index + (row * Wo + wo) * C;
#pragma omp simd
        for (int64_t k = 0; k < C; ++k) {
          float best = to_float(a[k]);
          uint8_t i = 0;
          if (to_float(b[k]) > best) best = to_float(b[k]), i = 1;
          if (to_float(c[k]) > best) best = to_float(c[k]), i = 2;
          if (to_float(d[k]) > best) best = to_float(d[k]), i = 3;
          idx[k] = i;
          out[k] = from_float<scalar_t>(best);  // exact: best is one of the inputs
        }
      }
    }
  });
}

template <typename scalar_t>
void pool_backward(const scalar_t* gy, const uint8_t* index, scalar_t* gx, int64_t N, int64_t H, int64_t W, int64_t C) {
  const int64_t Ho = H / 2, Wo = W / 2;
  at::parallel_for(0, N * H, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, h = row % H, ho = h / 2;
      scalar_t* g = gx + row * W * C;
      if (ho >= Ho) {  // the dropped last row
        std::fill(g, g + W * C, scalar_t(0));
        continue;
      }
      const uint8_t dh = static_cast<uint8_t>(2 * (h % 2));
      for (int64_t w = 0; w < W; ++w) {
        scalar_t* out = g + w * C;
        const int64_t wo = w / 2;
        if (wo >= Wo) {
          std::fill(out, out + C, scalar_t(0));
          continue;
        }
        const uint8_t slot = dh + static_cast<uint8_t>(w % 2);
        const scalar_t* in = gy + ((n * Ho + ho) * Wo + wo) * C;
        const uint8_t* idx = index + ((n * Ho + ho) * Wo + wo) * C;
#pragma omp simd
        for (int64_t k = 0; k < C; ++k) out[k] = idx[k] == slot ? in[k] : scalar_t(0);
      }
    }
  });
}

}  // namespace

// x [N, H, W, C] contiguous (a channels-last [N, C, H, W] seen through permute) -> (y [N, H/2, W/2, C], index uint8)
std::vector<torch::Tensor> max_pool2x2_forward(const torch::Tensor& x_in) {
  auto x = x_in.contiguous();
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  auto y = torch::empty({N, H / 2, W / 2, C}, x.options());
  auto index = torch::empty({N, H / 2, W / 2, C}, x.options().dtype(torch::kUInt8));
  with_element_type(x.scalar_type(), [&](auto zero) {
    using scalar_t = decltype(zero);
    pool_forward(static_cast<const scalar_t*>(x.data_ptr()), static_cast<scalar_t*>(y.data_ptr()),
                 index.data_ptr<uint8_t>(), N, H, W, C);
  });
  return {y, index};
}

torch::Tensor max_pool2x2_backward(const torch::Tensor& grad_in, const torch::Tensor& index, int64_t H, int64_t W) {
  auto grad = grad_in.contiguous();
  const int64_t N = grad.size(0), C = grad.size(3);
  auto gx = torch::empty({N, H, W, C}, grad.options());
  with_element_type(grad.scalar_type(), [&](auto zero) {
    using scalar_t = decltype(zero);
    pool_backward(static_cast<const scalar_t*>(grad.data_ptr()), index.data_ptr<uint8_t>(),
                  static_cast<scalar_t*>(gx.data_ptr()), N, H, W, C);
  });
  return gx;
}
