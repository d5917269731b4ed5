// The CPU kernels of snn/kernels.py as one extension module.
#include <torch/extension.h>

std::vector<torch::Tensor> to_csr(const torch::Tensor& x);
torch::Tensor transpose_to(const torch::Tensor& src, c10::ScalarType out_dtype);
std::vector<torch::Tensor> transpose_csr(const torch::Tensor& row_start, const torch::Tensor& column,
                                         const torch::Tensor& value, int64_t columns, bool ones_row);
torch::Tensor rate_spikes(int64_t seed, const torch::Tensor& threshold, int64_t T, c10::ScalarType dtype);
torch::Tensor sparse_mm(const torch::Tensor& row_start, const torch::Tensor& column, const torch::Tensor& value,
                        const torch::Tensor& dense, const c10::optional<torch::Tensor>& start,
                        c10::ScalarType out_dtype);
std::vector<torch::Tensor> lif_forward(const torch::Tensor& current, int64_t T, double beta, double threshold,
                                       bool zero_reset);
torch::Tensor lif_backward(const c10::optional<torch::Tensor>& grad_spikes,
                           const c10::optional<torch::Tensor>& grad_membrane, const torch::Tensor& membrane,
                           double beta, double threshold, bool zero_reset, int64_t surrogate, double slope,
                           c10::ScalarType dtype, bool sum_over_time);

std::vector<torch::Tensor> recurrent_lif_forward(const torch::Tensor& current, const torch::Tensor& weight, int64_t T,
                                                 double beta, double threshold, bool zero_reset, double dense_above);
std::vector<torch::Tensor> recurrent_lif_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                                  const c10::optional<torch::Tensor>& grad_membrane,
                                                  const torch::Tensor& membrane, const torch::Tensor& weight,
                                                  double beta, double threshold, bool zero_reset, int64_t surrogate,
                                                  double slope, bool weight_grad);
std::vector<torch::Tensor> recurrent_alif_forward(const torch::Tensor& current, const torch::Tensor& weight, int64_t T,
                                                  const torch::Tensor& beta, const torch::Tensor& rho,
                                                  double threshold, double adaptation, bool zero_reset,
                                                  double dense_above);
std::vector<torch::Tensor> recurrent_alif_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                                   const c10::optional<torch::Tensor>& grad_membrane,
                                                   const torch::Tensor& membrane, const torch::Tensor& adapt,
                                                   const torch::Tensor& weight, const torch::Tensor& beta,
                                                   const torch::Tensor& rho, double threshold, double adaptation,
                                                   bool zero_reset, int64_t surrogate, double slope, bool weight_grad,
                                                   bool param_grads);
std::vector<torch::Tensor> recurrent_synaptic_forward(const torch::Tensor& current, const torch::Tensor& weight,
                                                      int64_t T, double alpha, double beta, double threshold,
                                                      int64_t reset, double dense_above);
std::vector<torch::Tensor> recurrent_synaptic_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                                       const c10::optional<torch::Tensor>& grad_membrane,
                                                       const torch::Tensor& membrane, const torch::Tensor& weight,
                                                       double alpha, double beta, double threshold, int64_t reset,
                                                       int64_t surrogate, double slope, bool weight_grad);

std::vector<torch::Tensor> max_pool2x2_forward(const torch::Tensor& x);
torch::Tensor max_pool2x2_backward(const torch::Tensor& grad, const torch::Tensor& index, int64_t H, int64_t W);

std::vector<torch::Tensor> alif_forward(const torch::Tensor& current, int64_t T, const torch::Tensor& beta,
                                        const torch::Tensor& rho, double threshold, double adaptation,
                                        bool zero_reset);
std::vector<torch::Tensor> alif_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                         const c10::optional<torch::Tensor>& grad_membrane,
                                         const torch::Tensor& membrane, const torch::Tensor& adapt,
                                         const torch::Tensor& beta, const torch::Tensor& rho,
                                         double threshold, double adaptation, bool zero_reset, int64_t surrogate,
                                         double slope, c10::ScalarType dtype, bool sum_over_time, bool param_grads);
std::vector<torch::Tensor> synaptic_forward(const torch::Tensor& current, int64_t T, double alpha, double beta,
                                            double threshold, int64_t reset);
torch::Tensor synaptic_backward(const c10::optional<torch::Tensor>& grad_spikes,
                                const c10::optional<torch::Tensor>& grad_membrane, const torch::Tensor& membrane,
                                double alpha, double beta, double threshold, int64_t reset, int64_t surrogate,
                                double slope, c10::ScalarType dtype, bool sum_over_time);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("transpose_to", &transpose_to, "the transpose of a 2-D float32 tensor, contiguous, in float32 or bf16");
  m.def("to_csr", &to_csr, "the non-zeros of a 2-D float tensor, row by row");
  m.def("transpose_csr", &transpose_csr, "the CSR of the transposed matrix, optionally with a row of ones appended");
  m.def("rate_spikes", &rate_spikes, "rate coding: counter-based 16-bit uniforms compared with thresholds, as spikes");
  m.def("sparse_mm", &sparse_mm, "sparse (CSR) times dense (float32 or bf16), plus an optional broadcast start row; float32 sums");
  m.def("lif_forward", &lif_forward, "LIF spikes and membrane over all time steps");
  m.def("lif_backward", &lif_backward, "the LIF gradient with respect to its input current, through time (or summed over it)");
  m.def("recurrent_lif_forward", &recurrent_lif_forward, "a recurrent LIF layer through time, event-driven feedback");
  m.def("recurrent_lif_backward", &recurrent_lif_backward, "its input and recurrent weight gradients, through time");
  m.def("recurrent_alif_forward", &recurrent_alif_forward, "a recurrent adaptive LIF layer through time");
  m.def("recurrent_alif_backward", &recurrent_alif_backward, "its input, weight, beta and rho gradients");
  m.def("recurrent_synaptic_forward", &recurrent_synaptic_forward, "a recurrent Synaptic layer through time");
  m.def("recurrent_synaptic_backward", &recurrent_synaptic_backward, "its input and weight gradients");
  m.def("max_pool2x2_forward", &max_pool2x2_forward, "2x2 max-pooling of [N, H, W, C], with a one-byte index");
  m.def("max_pool2x2_backward", &max_pool2x2_backward, "its input gradient");
  m.def("alif_forward", &alif_forward, "adaptive LIF spikes, membrane and adaptation over all time steps");
  m.def("alif_backward", &alif_backward, "the adaptive LIF gradients through time (input, per-element beta and rho)");
  m.def("synaptic_forward", &synaptic_forward, "Synaptic (current-based LIF) spikes and membrane over all time steps");
  m.def("synaptic_backward", &synaptic_backward, "the Synaptic gradient with respect to its input current");
}
