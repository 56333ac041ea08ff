// CPU kernels that compute what a few PyTorch ops compute, with the same float operations in
// the same order (same bits), in one pass (see kernels.py). Built with -ffp-contract=off: no
// fused multiply-add.
//
// contract(x, y): out[h, a, c, :] = sum over k, in order, of x[h, k, a, :] * y[h, k, c, :].
//
// The attention layer's products over fields with the batch innermost. Every output element
// is 0 plus one product per k, added in order of k, each product and each sum rounded to
// float32: what PyTorch's broadcast product followed by `sum(dim=1)` computes. Work is split
// over (h, 64-sample chunk); a chunk's rows of x and y are copied into small buffers first,
// as rows 4 KiB apart in the tensors map to the same cache sets.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

typedef float Lanes __attribute__((vector_size(32)));  // 8 floats

inline Lanes load(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Lanes v) { std::memcpy(p, &v, sizeof v); }

// 8 samples of up to 8 outputs c: out[c * oc] = sum over k of x[k * xk] * y[k * yk + c * yc].
template <int Outputs>
void lanes_block(const float* x, int64_t xk, const float* y, int64_t yk, int64_t yc,
                 int64_t terms, float* out, int64_t oc) {
  Lanes sums[Outputs];
  for (int c = 0; c < Outputs; ++c) sums[c] = Lanes{};
  for (int64_t k = 0; k < terms; ++k) {
    const Lanes xv = load(x + k * xk);
    for (int c = 0; c < Outputs; ++c) sums[c] += xv * load(y + k * yk + c * yc);
  }
  for (int c = 0; c < Outputs; ++c) store(out + c * oc, sums[c]);
}

void lanes_block_of(int64_t outputs, const float* x, int64_t xk, const float* y, int64_t yk,
                    int64_t yc, int64_t terms, float* out, int64_t oc) {
  switch (outputs) {
    case 1: return lanes_block<1>(x, xk, y, yk, yc, terms, out, oc);
    case 2: return lanes_block<2>(x, xk, y, yk, yc, terms, out, oc);
    case 3: return lanes_block<3>(x, xk, y, yk, yc, terms, out, oc);
    case 4: return lanes_block<4>(x, xk, y, yk, yc, terms, out, oc);
    case 5: return lanes_block<5>(x, xk, y, yk, yc, terms, out, oc);
    case 6: return lanes_block<6>(x, xk, y, yk, yc, terms, out, oc);
    case 7: return lanes_block<7>(x, xk, y, yk, yc, terms, out, oc);
    default: return lanes_block<8>(x, xk, y, yk, yc, terms, out, oc);
  }
}

}  // namespace

torch::Tensor contract(const torch::Tensor& x, const torch::Tensor& y) {
  TORCH_CHECK(x.dim() == 4 && y.dim() == 4, "contract: x and y must be 4-d");
  TORCH_CHECK(x.scalar_type() == torch::kFloat && y.scalar_type() == torch::kFloat,
              "contract: x and y must be float32");
  TORCH_CHECK(x.device().is_cpu() && y.device().is_cpu(), "contract: CPU tensors only");
  TORCH_CHECK(x.size(0) == y.size(0) && x.size(1) == y.size(1) && x.size(3) == y.size(3),
              "contract: x (H, K, A, B) and y (H, K, C, B) disagree");
  TORCH_CHECK(x.stride(3) == 1 && y.stride(3) == 1, "contract: the last dim must be contiguous");
  const int64_t H = x.size(0), K = x.size(1), A = x.size(2), B = x.size(3), C = y.size(2);
  auto out = torch::empty({H, A, C, B}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* yp = y.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t xs0 = x.stride(0), xs1 = x.stride(1), xs2 = x.stride(2);
  const int64_t ys0 = y.stride(0), ys1 = y.stride(1), ys2 = y.stride(2);
  constexpr int64_t W = 64;  // samples per chunk, a multiple of the 8 lanes
  const int64_t chunks = (B + W - 1) / W;
  at::parallel_for(0, H * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> xs(K * A * W), ys(K * C * W), outs(A * C * W);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t h = n / chunks, b0 = (n % chunks) * W;
      const float* xh = xp + h * xs0;
      const float* yh = yp + h * ys0;
      if (B - b0 < W) {  // the last, partial chunk: one sample at a time, same order
        for (int64_t a = 0; a < A; ++a)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t b = b0; b < B; ++b) {
              float sum = 0.0f;
              for (int64_t k = 0; k < K; ++k)
                sum += xh[k * xs1 + a * xs2 + b] * yh[k * ys1 + c * ys2 + b];
              op[((h * A + a) * C + c) * B + b] = sum;
            }
        continue;
      }
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t a = 0; a < A; ++a)
          std::memcpy(&xs[(k * A + a) * W], xh + k * xs1 + a * xs2 + b0, W * sizeof(float));
        for (int64_t c = 0; c < C; ++c)
          std::memcpy(&ys[(k * C + c) * W], yh + k * ys1 + c * ys2 + b0, W * sizeof(float));
      }
      for (int64_t a = 0; a < A; ++a)
        for (int64_t c0 = 0; c0 < C; c0 += 8)
          for (int64_t b = 0; b < W; b += 8)
            lanes_block_of(std::min<int64_t>(8, C - c0), &xs[a * W + b], A * W,
                           &ys[c0 * W + b], C * W, W, K, &outs[(a * C + c0) * W + b], W);
      for (int64_t row = 0; row < A * C; ++row)
        std::memcpy(op + (h * A * C + row) * B + b0, &outs[row * W], W * sizeof(float));
    }
  });
  return out;
}

// table_gradient: the dense gradient (num_rows, dim) of one embedding table. Entry i adds
// upstream[i] (a sparse field) or upstream[batch_rows[i]] * weights[i] (a sequence field's
// non-padding entries) to row index[i], in order of i, as `index_add_` does; row 0 (OOV,
// padding) is zero.
torch::Tensor table_gradient(int64_t num_rows, const torch::Tensor& index,
                             const torch::Tensor& upstream,
                             const std::optional<torch::Tensor>& batch_rows,
                             const std::optional<torch::Tensor>& weights) {
  TORCH_CHECK(upstream.dim() == 2 && upstream.is_contiguous(), "upstream: contiguous (B, dim)");
  TORCH_CHECK(upstream.scalar_type() == torch::kFloat, "upstream: float32");
  TORCH_CHECK(index.dim() == 1 && index.is_contiguous() && index.scalar_type() == torch::kLong,
              "index: contiguous int64 (N,)");
  const bool pooled = batch_rows.has_value();
  TORCH_CHECK(pooled == weights.has_value(), "batch_rows and weights come together");
  const int64_t entries = index.size(0), dim = upstream.size(1);
  TORCH_CHECK(pooled || entries == upstream.size(0), "one upstream row per entry");
  auto grad = torch::zeros({num_rows, dim}, upstream.options());
  float* out = grad.data_ptr<float>();
  const float* up = upstream.data_ptr<float>();
  const int64_t* rows = index.data_ptr<int64_t>();
  const int64_t* from = nullptr;
  const float* scale = nullptr;
  if (pooled) {
    TORCH_CHECK(batch_rows->is_contiguous() && batch_rows->scalar_type() == torch::kLong &&
                    batch_rows->numel() == entries,
                "batch_rows: contiguous int64 (N,)");
    TORCH_CHECK(weights->is_contiguous() && weights->scalar_type() == torch::kFloat &&
                    weights->numel() == entries,
                "weights: contiguous float32 (N,)");
    from = batch_rows->data_ptr<int64_t>();
    scale = weights->data_ptr<float>();
  }
  for (int64_t i = 0; i < entries; ++i) {
    const int64_t row = rows[i];
    TORCH_CHECK(row >= 0 && row < num_rows, "index ", row, " out of range for ", num_rows,
                " rows");
    float* target = out + row * dim;
    if (pooled) {
      const float* source = up + from[i] * dim;
      const float w = scale[i];
      for (int64_t j = 0; j < dim; ++j) target[j] += source[j] * w;
    } else {
      const float* source = up + i * dim;
      for (int64_t j = 0; j < dim; ++j) target[j] += source[j];
    }
  }
  std::fill(out, out + dim, 0.0f);
  return grad;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("contract", &contract, "out[h, a, c, :] = sum_k x[h, k, a, :] * y[h, k, c, :]");
  m.def("table_gradient", &table_gradient, "one embedding table's dense gradient");
}
