// CPU kernels that compute what a few PyTorch ops compute, with the same float operations in
// the same order (same bits), in one pass (see kernels.py): the attention products
// (contract) and the embedding lookups with their gradients (lookup_forward,
// lookup_backward). Built with -ffp-contract=off: no fused multiply-add.
//
// contract(x, y, out): out[h, a, c, :] = sum over k, in order, of x[h, k, a, :] * y[h, k, c, :]
// (out: a given contiguous tensor, or a new one).
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

torch::Tensor contract(const torch::Tensor& x, const torch::Tensor& y,
                       const std::optional<torch::Tensor>& into) {
  TORCH_CHECK(x.dim() == 4 && y.dim() == 4, "contract: x and y must be 4-d");
  TORCH_CHECK(x.scalar_type() == torch::kFloat && y.scalar_type() == torch::kFloat,
              "contract: x and y must be float32");
  TORCH_CHECK(x.device().is_cpu() && y.device().is_cpu(), "contract: CPU tensors only");
  TORCH_CHECK(x.size(0) == y.size(0) && x.size(1) == y.size(1) && x.size(3) == y.size(3),
              "contract: x (H, K, A, B) and y (H, K, C, B) disagree");
  TORCH_CHECK(x.stride(3) == 1 && y.stride(3) == 1, "contract: the last dim must be contiguous");
  const int64_t H = x.size(0), K = x.size(1), A = x.size(2), B = x.size(3), C = y.size(2);
  torch::Tensor out;
  if (into.has_value()) {
    TORCH_CHECK(into->is_contiguous() && into->scalar_type() == torch::kFloat &&
                    into->sizes() == torch::IntArrayRef({H, A, C, B}),
                "contract: out must be a contiguous float32 (H, A, C, B) tensor");
    out = *into;
  } else {
    out = torch::empty({H, A, C, B}, x.options());
  }
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

// lookup_forward / lookup_backward: every field's lookups of one batch in one pass.
//
// A field's indices are (B,) (a sparse field: one row each) or (B, L) (a sequence field,
// 0-padded), int32 or int64. A sequence field's entry l of batch row b has the weight
// present / max(count, 1) (present = index != 0, count = the row's present entries) and its
// pooled vector is the sum over l of row * weight, added in the order PyTorch's CPU `sum`
// over a short middle dim adds (`slot_sum` in kernels.py): four partial sums (entry l goes
// to partial l % 4, for the first L - L % 4 entries), the last L % 4 entries added to
// partial 0, then partials 1, 2, 3 added to it, every sum starting from 0.
namespace {

// One field's indices, (B,) for a sparse field or (B, slots) for a sequence field.
struct FieldIndex {
  const void* data;
  bool wide;  // int64, else int32
  int64_t slots;
  bool sequence;
};

FieldIndex field_index(const torch::Tensor& index, int64_t batch) {
  TORCH_CHECK(index.dim() == 1 || index.dim() == 2, "lookup: an index is (B,) or (B, L)");
  TORCH_CHECK(index.size(0) == batch, "lookup: one batch size for every field");
  TORCH_CHECK(index.is_contiguous(), "lookup: contiguous indices");
  const bool wide = index.scalar_type() == torch::kLong;
  TORCH_CHECK(wide || index.scalar_type() == torch::kInt, "lookup: int32 or int64 indices");
  return {index.data_ptr(), wide, index.dim() == 2 ? index.size(1) : 1, index.dim() == 2};
}

// A float32 (rows, dim) matrix: its row stride and its step between a row's elements.
struct Matrix {
  float* data;
  int64_t rows, dim, stride, step;

  static Matrix of(const torch::Tensor& tensor) {
    TORCH_CHECK(tensor.dim() == 2 && tensor.scalar_type() == torch::kFloat,
                "lookup: float32 (rows, dim) tables and gradients");
    return {tensor.data_ptr<float>(), tensor.size(0), tensor.size(1), tensor.stride(0),
            tensor.stride(1)};
  }
};

[[noreturn]] void out_of_range(int64_t row, int64_t rows) {
  TORCH_CHECK(false, "index ", row, " out of range for ", rows, " rows");
}

inline int64_t checked(int64_t row, int64_t rows) {
  if (row < 0 || row >= rows) out_of_range(row, rows);
  return row;
}

// Weights of one batch row's entries (the formula of `_Lookup.of`): present / max(count, 1).
template <typename Index>
void slot_weights(const Index* entries, int64_t slots, float* weights) {
  float count = 0.0f;
  for (int64_t l = 0; l < slots; ++l) count += entries[l] != 0 ? 1.0f : 0.0f;
  const float divisor = std::max(count, 1.0f);
  const float present = 1.0f / divisor, absent = 0.0f / divisor;
  for (int64_t l = 0; l < slots; ++l) weights[l] = entries[l] != 0 ? present : absent;
}

// out[0:dim] = the sum over entries of row * weight, in slot_sum's order; partials holds
// 4 * dim floats.
template <typename Index>
void pool(const Index* entries, int64_t slots, const Matrix& table, const float* weights,
          float* partials, float* out) {
  const int64_t dim = table.dim, full = slots / 4 * 4;
  std::fill(partials, partials + 4 * dim, 0.0f);
  for (int64_t l = 0; l < slots; ++l) {
    const float* row = table.data + checked(entries[l], table.rows) * table.stride;
    float* partial = partials + (l < full ? l % 4 : 0) * dim;
    const float w = weights[l];
    for (int64_t j = 0; j < dim; ++j) partial[j] += row[j] * w;
  }
  for (int k = 1; k < 4; ++k)
    for (int64_t j = 0; j < dim; ++j) partials[j] += partials[k * dim + j];
  for (int64_t j = 0; j < dim; ++j) out[j] = 0.0f + partials[j];
}

// Field f's vectors of batch rows [begin, end) into flat (row stride width) and, unless
// copy is null, into copy (row stride copy_stride); its first-order weights added to sums.
template <typename Index>
void forward_field(const FieldIndex& field, const Matrix& table, const Matrix* first,
                   int64_t begin, int64_t end, float* flat, int64_t width, float* sums,
                   float* copy, int64_t copy_stride) {
  const Index* index = static_cast<const Index*>(field.data);
  const int64_t dim = table.dim, slots = field.slots;
  std::vector<float> weights(slots), partials(4 * dim);
  for (int64_t b = begin; b < end; ++b) {
    float* out = flat + b * width;
    const Index* entries = index + b * slots;
    if (field.sequence) {
      slot_weights(entries, slots, weights.data());
      pool(entries, slots, table, weights.data(), partials.data(), out);
      if (first != nullptr) {
        float weight;
        pool(entries, slots, *first, weights.data(), partials.data(), &weight);
        sums[b] += weight;
      }
    } else {
      const int64_t row = checked(entries[0], table.rows);
      const float* source = table.data + row * table.stride;
      for (int64_t j = 0; j < dim; ++j) out[j] = source[j];
      if (first != nullptr) sums[b] += first->data[checked(row, first->rows) * first->stride];
    }
    if (copy != nullptr) std::memcpy(copy + b * copy_stride, out, dim * sizeof(float));
  }
}

// Table t's gradient: each entry's upstream row (times its weight for a sequence field's
// non-padding entries) added to its row in order; row 0 zeroed at the end.
template <typename Index>
void backward_table(const FieldIndex& field, const Matrix& up, Matrix& grad) {
  const Index* index = static_cast<const Index*>(field.data);
  const int64_t dim = up.dim, step = up.step, slots = field.slots, batch = up.rows;
  std::vector<float> weights(slots);
  for (int64_t b = 0; b < batch; ++b) {
    const float* source = up.data + b * up.stride;
    const Index* entries = index + b * slots;
    if (!field.sequence) {
      float* into = grad.data + checked(entries[0], grad.rows) * grad.stride;
      if (step == 1) {
        for (int64_t j = 0; j < dim; ++j) into[j] += source[j];
      } else {
        for (int64_t j = 0; j < dim; ++j) into[j] += source[j * step];
      }
      continue;
    }
    slot_weights(entries, slots, weights.data());
    for (int64_t l = 0; l < slots; ++l) {
      const int64_t row = checked(entries[l], grad.rows);
      if (row == 0) continue;
      float* into = grad.data + row * grad.stride;
      const float w = weights[l];
      for (int64_t j = 0; j < dim; ++j) into[j] += source[j * step] * w;
    }
  }
  std::fill(grad.data, grad.data + dim, 0.0f);
}

std::vector<Matrix> contiguous_tables(const std::vector<torch::Tensor>& tables) {
  std::vector<Matrix> views;
  for (const auto& table : tables) {
    TORCH_CHECK(table.is_contiguous(), "lookup: contiguous tables");
    views.push_back(Matrix::of(table));
  }
  return views;
}

}  // namespace

// (flat (B, sum of dims), first_order (B, 1), empty without first-order tables): each field's
// vector at its columns of flat; first_order = 0 + field 0's weight + field 1's + ...
// With field_vectors (B, F, D), a field D wide is also written at field_vectors[:, f].
std::vector<torch::Tensor> lookup_forward(const std::vector<torch::Tensor>& indices,
                                          const std::vector<torch::Tensor>& tables,
                                          const std::vector<torch::Tensor>& first_order_tables,
                                          const std::optional<torch::Tensor>& field_vectors) {
  const int64_t fields = indices.size();
  TORCH_CHECK(fields > 0 && static_cast<int64_t>(tables.size()) == fields,
              "lookup_forward: one table per field");
  const bool first_order = !first_order_tables.empty();
  TORCH_CHECK(!first_order || static_cast<int64_t>(first_order_tables.size()) == fields,
              "lookup_forward: one first-order table per field, or none");
  const int64_t batch = indices[0].size(0);
  std::vector<FieldIndex> index;
  for (const auto& i : indices) index.push_back(field_index(i, batch));
  const std::vector<Matrix> second = contiguous_tables(tables);
  const std::vector<Matrix> first = contiguous_tables(first_order_tables);
  std::vector<int64_t> offset(fields + 1, 0);
  for (int64_t f = 0; f < fields; ++f) {
    offset[f + 1] = offset[f] + second[f].dim;
    TORCH_CHECK(!first_order || first[f].dim == 1, "lookup_forward: (V, 1) first-order tables");
  }
  const int64_t width = offset[fields];
  float* copies = nullptr;
  int64_t copy_dim = 0;
  if (field_vectors.has_value()) {
    TORCH_CHECK(field_vectors->dim() == 3 && field_vectors->is_contiguous() &&
                    field_vectors->scalar_type() == torch::kFloat &&
                    field_vectors->size(0) == batch && field_vectors->size(1) == fields,
                "lookup_forward: field_vectors is a contiguous float32 (B, F, D) tensor");
    copies = field_vectors->data_ptr<float>();
    copy_dim = field_vectors->size(2);
  }
  auto flat = torch::empty({batch, width}, tables[0].options());
  auto sums = torch::zeros({first_order ? batch : 0, 1}, tables[0].options());
  float* flat_out = flat.data_ptr<float>();
  float* sums_out = sums.data_ptr<float>();
  at::parallel_for(0, batch, 256, [&](int64_t begin, int64_t end) {
    for (int64_t f = 0; f < fields; ++f) {
      const Matrix* weights = first_order ? &first[f] : nullptr;
      float* copy = copies != nullptr && second[f].dim == copy_dim ? copies + f * copy_dim : nullptr;
      if (index[f].wide)
        forward_field<int64_t>(index[f], second[f], weights, begin, end, flat_out + offset[f],
                               width, sums_out, copy, fields * copy_dim);
      else
        forward_field<int32_t>(index[f], second[f], weights, begin, end, flat_out + offset[f],
                               width, sums_out, copy, fields * copy_dim);
    }
  });
  return {flat, sums};
}

// The dense gradients of the tables lookup_forward read: table t (second-order tables of
// fields 0..F-1, then first-order ones) gets, for each entry of each batch row in order,
// grads[f][b] (a sparse field) or grads[f][b] * weight (a sequence field's non-padding
// entries) added to its row, row 0 left zero: what `_Entries.dense_gradient` computes. A
// table whose entry in rows is negative is skipped (None in its place). `grads[f]` may be
// any (B, dim) float32 view; first-order tables read `first_order_grad` (B, 1). Tables are
// split over threads; each table is summed by one thread, in order.
std::vector<torch::Tensor> lookup_backward(const std::vector<torch::Tensor>& indices,
                                           const std::vector<torch::Tensor>& grads,
                                           const torch::Tensor& first_order_grad,
                                           const std::vector<int64_t>& rows) {
  const int64_t fields = indices.size();
  TORCH_CHECK(static_cast<int64_t>(rows.size()) == 2 * fields &&
                  static_cast<int64_t>(grads.size()) == fields,
              "lookup_backward: F indices and gradients, 2F tables");
  const int64_t batch = indices[0].size(0);
  std::vector<FieldIndex> index;
  for (const auto& i : indices) index.push_back(field_index(i, batch));
  std::vector<torch::Tensor> out(2 * fields);
  std::vector<Matrix> upstream(2 * fields), target(2 * fields);
  for (int64_t t = 0; t < 2 * fields; ++t) {
    if (rows[t] < 0) continue;
    upstream[t] = Matrix::of(t < fields ? grads[t] : first_order_grad);
    TORCH_CHECK(upstream[t].rows == batch, "lookup_backward: one gradient row per batch row");
    out[t] = torch::zeros({rows[t], upstream[t].dim}, first_order_grad.options());
    target[t] = Matrix::of(out[t]);
  }
  at::parallel_for(0, 2 * fields, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (rows[t] < 0) continue;
      const FieldIndex& field = index[t % fields];
      if (field.wide)
        backward_table<int64_t>(field, upstream[t], target[t]);
      else
        backward_table<int32_t>(field, upstream[t], target[t]);
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("contract", &contract, "out[h, a, c, :] = sum_k x[h, k, a, :] * y[h, k, c, :]",
        pybind11::arg("x"), pybind11::arg("y"), pybind11::arg("out") = pybind11::none());
  m.def("lookup_forward", &lookup_forward, "every field's lookups: flat vectors, first order");
  m.def("lookup_backward", &lookup_backward, "the dense gradients of lookup_forward's tables");
}
