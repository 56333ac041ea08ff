// CPU kernels that compute what a few PyTorch ops compute, with the same float operations in
// the same order (same bits), in one pass (see kernels.py): the attention layer's forward and
// backward (attention_forward, attention_backward), the embedding lookups with their
// gradients (lookup_forward, lookup_backward) and the row-wise Adam step (row_wise_adam,
// with PyTorch's fused Adam kernel's bits). Built with -ffp-contract=off: no fused multiply-add
// but those written out.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

// attention_forward / attention_backward: `_FieldAttention` over 64-sample chunks.
//
// Tensors have the batch innermost: queries, keys and values (H, D, F, B) (stacked as
// (3, H, D, F, B)), attention weights (H, F_query, F_key, B). Every product over fields or
// head dims is 0 plus one product per term, added in order of the term, each product and sum
// rounded to float32: what PyTorch's broadcast product followed by `sum(dim=1)` computes when
// B is a multiple of 64 (kernels.py). The softmax and its backward are PyTorch's own, called
// on each chunk of up to 256 samples (same bits as on the whole tensor: each column is
// computed on its own). A chunk's rows are copied into small buffers, in cache for all of its
// steps.
namespace {

constexpr int64_t kChunk = 256;  // samples per chunk (at most; a multiple of 64)

// out[a][c][:] = sum over k of x[k * xk + a * xa][:] * y[k * yk + c * yc][:], rows of width
// floats (width a multiple of 64, at most kChunk).
void chunk_products(const float* x, int64_t xk, int64_t xa, const float* y, int64_t yk,
                    int64_t yc, int64_t terms, int64_t rows, int64_t columns, int64_t width,
                    float* out) {
  for (int64_t a = 0; a < rows; ++a)
    for (int64_t c = 0; c < columns; ++c)
      for (int64_t b0 = 0; b0 < width; b0 += 64) {
        float sums[64] = {};
        for (int64_t k = 0; k < terms; ++k) {
          const float* xr = x + (k * xk + a * xa) * width + b0;
          const float* yr = y + (k * yk + c * yc) * width + b0;
          for (int64_t b = 0; b < 64; ++b) sums[b] += xr[b] * yr[b];
        }
        std::memcpy(out + (a * columns + c) * width + b0, sums, sizeof sums);
      }
}

// Copies `rows` rows of `width` floats from a (rows, B) layout (row stride B) at sample b0.
void gather_rows(const float* from, int64_t rows, int64_t batch, int64_t b0, int64_t width,
                 float* to) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(to + r * width, from + r * batch + b0, width * sizeof(float));
}

void scatter_rows(const float* from, int64_t rows, int64_t batch, int64_t b0, int64_t width,
                  float* to) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(to + r * batch + b0, from + r * width, width * sizeof(float));
}

void check_attention(const torch::Tensor& qkv) {
  TORCH_CHECK(qkv.dim() == 5 && qkv.size(0) == 3 && qkv.is_contiguous() &&
                  qkv.scalar_type() == torch::kFloat && qkv.device().is_cpu(),
              "attention: a contiguous float32 CPU (3, H, D, F, B) tensor");
  TORCH_CHECK(qkv.size(4) % 64 == 0, "attention: B must be a multiple of 64");
}

torch::Tensor chunk_tensor(float* data, int64_t fields, int64_t width) {
  return torch::from_blob(data, {1, fields, fields, width}, torch::kFloat);
}

}  // namespace

// (attended (H, D, F, B), weights (H, F, F, B)): weights = softmax over keys of
// (q_i . k_j) * scale, attended[:, d, i] = sum over j of v[d, j] * weights[i, j].
std::vector<torch::Tensor> attention_forward(const torch::Tensor& qkv, double scale) {
  check_attention(qkv);
  const int64_t H = qkv.size(1), D = qkv.size(2), F = qkv.size(3), B = qkv.size(4);
  auto attended = torch::empty({H, D, F, B}, qkv.options());
  auto weights = torch::empty({H, F, F, B}, qkv.options());
  const float* in = qkv.data_ptr<float>();
  float* out = attended.data_ptr<float>();
  float* weights_out = weights.data_ptr<float>();
  const int64_t part = H * D * F * B, chunks = (B + kChunk - 1) / kChunk;
  const float factor = static_cast<float>(scale);
  at::parallel_for(0, H * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> q(D * F * kChunk), k(D * F * kChunk), v(D * F * kChunk);
    std::vector<float> scores(F * F * kChunk), values(D * F * kChunk);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t h = n / chunks, b0 = (n % chunks) * kChunk, head = h * D * F * B;
      const int64_t width = std::min(kChunk, B - b0);
      gather_rows(in + head, D * F, B, b0, width, q.data());
      gather_rows(in + part + head, D * F, B, b0, width, k.data());
      gather_rows(in + 2 * part + head, D * F, B, b0, width, v.data());
      // scores[i][j] = sum over d of q[d][i] * k[d][j]
      chunk_products(q.data(), F, 1, k.data(), F, 1, D, F, F, width, scores.data());
      for (int64_t i = 0; i < F * F * width; ++i) scores[i] *= factor;
      torch::Tensor chunk_weights = at::_softmax(chunk_tensor(scores.data(), F, width), 2, false);
      const float* w = chunk_weights.data_ptr<float>();
      // values[d][i] = sum over j of v[d][j] * w[i][j]
      chunk_products(v.data(), 1, F, w, 1, F, F, D, F, width, values.data());
      scatter_rows(w, F * F, B, b0, width, weights_out + h * F * F * B);
      scatter_rows(values.data(), D * F, B, b0, width, out + head);
    }
  });
  return {attended, weights};
}

// The gradients of attention_forward's input (3, H, D, F, B), given the gradient of attended
// and the weights it returned: what `_FieldAttention.backward` computes with PyTorch ops.
torch::Tensor attention_backward(const torch::Tensor& qkv, const torch::Tensor& weights,
                                 const torch::Tensor& grad, double scale) {
  check_attention(qkv);
  const int64_t H = qkv.size(1), D = qkv.size(2), F = qkv.size(3), B = qkv.size(4);
  TORCH_CHECK(weights.is_contiguous() && weights.sizes() == torch::IntArrayRef({H, F, F, B}),
              "attention_backward: contiguous (H, F, F, B) weights");
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == torch::kFloat &&
                  grad.sizes() == torch::IntArrayRef({H, D, F, B}),
              "attention_backward: a contiguous float32 (H, D, F, B) gradient");
  auto grads = torch::empty_like(qkv);
  const float* in = qkv.data_ptr<float>();
  const float* weights_in = weights.data_ptr<float>();
  const float* grad_in = grad.data_ptr<float>();
  float* out = grads.data_ptr<float>();
  const int64_t part = H * D * F * B, chunks = (B + kChunk - 1) / kChunk;
  const float factor = static_cast<float>(scale);
  at::parallel_for(0, H * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> q(D * F * kChunk), k(D * F * kChunk), v(D * F * kChunk);
    std::vector<float> g(D * F * kChunk), w(F * F * kChunk), grad_w(F * F * kChunk);
    std::vector<float> result(D * F * kChunk);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t h = n / chunks, b0 = (n % chunks) * kChunk, head = h * D * F * B;
      const int64_t width = std::min(kChunk, B - b0);
      gather_rows(in + head, D * F, B, b0, width, q.data());
      gather_rows(in + part + head, D * F, B, b0, width, k.data());
      gather_rows(in + 2 * part + head, D * F, B, b0, width, v.data());
      gather_rows(grad_in + head, D * F, B, b0, width, g.data());
      gather_rows(weights_in + h * F * F * B, F * F, B, b0, width, w.data());
      // grad_w[i][j] = sum over d of g[d][i] * v[d][j]
      chunk_products(g.data(), F, 1, v.data(), F, 1, D, F, F, width, grad_w.data());
      // grad_v[d][j] = sum over i of g[d][i] * w[i][j]
      chunk_products(g.data(), 1, F, w.data(), F, 1, F, D, F, width, result.data());
      scatter_rows(result.data(), D * F, B, b0, width, out + 2 * part + head);
      torch::Tensor scores_grad = at::_softmax_backward_data(
          chunk_tensor(grad_w.data(), F, width), chunk_tensor(w.data(), F, width), 2, torch::kFloat);
      float* gs = scores_grad.data_ptr<float>();
      for (int64_t i = 0; i < F * F * width; ++i) gs[i] *= factor;
      // grad_q[d][i] = sum over j of k[d][j] * gs[i][j]
      chunk_products(k.data(), 1, F, gs, 1, F, F, D, F, width, result.data());
      scatter_rows(result.data(), D * F, B, b0, width, out + head);
      // grad_k[d][j] = sum over i of q[d][i] * gs[i][j]
      chunk_products(q.data(), 1, F, gs, F, 1, F, D, F, width, result.data());
      scatter_rows(result.data(), D * F, B, b0, width, out + part + head);
    }
  });
  return grads;
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

// Rows ahead to prefetch where rows of a large table are read at random (cache misses).
constexpr int64_t kAhead = 32;
// Batch rows ahead to prefetch for a sequence field (each reads `slots` rows at random).
constexpr int64_t kAheadBatchRows = 4;

// Calls run(task) for every task in [0, tasks) on all threads, each task on whichever thread
// is free next (tasks of uneven cost balance; each task runs on one thread).
template <typename Run>
void for_each_task(size_t tasks, const Run& run) {
  std::atomic<size_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (size_t task = next++; task < tasks; task = next++) run(task);
  });
}

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
      if (b + kAheadBatchRows < end) {
        const Index* ahead = entries + kAheadBatchRows * slots;
        for (int64_t l = 0; l < slots; ++l) {
          if (ahead[l] < 0 || ahead[l] >= table.rows) continue;  // checked when it is read
          __builtin_prefetch(table.data + ahead[l] * table.stride);
          if (first != nullptr) __builtin_prefetch(first->data + ahead[l] * first->stride);
        }
      }
      slot_weights(entries, slots, weights.data());
      pool(entries, slots, table, weights.data(), partials.data(), out);
      if (first != nullptr) {
        float weight;
        pool(entries, slots, *first, weights.data(), partials.data(), &weight);
        sums[b] += weight;
      }
    } else {
      if (b + kAhead < end) __builtin_prefetch(table.data + index[b + kAhead] * table.stride);
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

// The distinct rows of a table a field looked up, as a bitmap over the table's rows: sorted by
// scanning its words (O(V / 64 + entries), no sort); a row's slot among them is its rank.
class RowSet {
 public:
  explicit RowSet(int64_t rows) : words_((rows + 63) / 64, 0), before_(words_.size() + 1, 0) {}

  void add(int64_t row) { words_[row >> 6] |= uint64_t{1} << (row & 63); }

  // Call once every row is added: the rows, ascending (int64).
  torch::Tensor sorted() {
    for (size_t w = 0; w < words_.size(); ++w)
      before_[w + 1] = before_[w] + __builtin_popcountll(words_[w]);
    torch::Tensor rows = torch::empty({before_.back()}, torch::kLong);
    int64_t* out = rows.data_ptr<int64_t>();
    for (size_t w = 0; w < words_.size(); ++w)
      for (uint64_t bits = words_[w]; bits != 0; bits &= bits - 1)
        *out++ = static_cast<int64_t>(w) * 64 + __builtin_ctzll(bits);
    return rows;
  }

  int64_t slot(int64_t row) const {
    const uint64_t below = words_[row >> 6] & ((uint64_t{1} << (row & 63)) - 1);
    return before_[row >> 6] + __builtin_popcountll(below);
  }

 private:
  std::vector<uint64_t> words_;
  std::vector<int64_t> before_;
};

// A row-wise field's looked-up rows: its distinct rows (int64, ascending) and, for each entry,
// its row's slot among them (-1: a sequence field's padding, not an entry) and its weight.
struct FieldRows {
  torch::Tensor distinct;
  std::vector<int32_t> slot;
  std::vector<float> weight;
};

template <typename Index>
FieldRows find_rows(const FieldIndex& field, int64_t batch, int64_t table_rows) {
  const Index* index = static_cast<const Index*>(field.data);
  const int64_t slots = field.slots, entries = batch * slots;
  RowSet set(table_rows);
  for (int64_t e = 0; e < entries; ++e) {
    const int64_t row = checked(index[e], table_rows);
    if (row != 0 || !field.sequence) set.add(row);
  }
  FieldRows found{set.sorted(), std::vector<int32_t>(entries), std::vector<float>(entries, 1.0f)};
  for (int64_t b = 0; b < batch; ++b) {
    if (field.sequence) slot_weights(index + b * slots, slots, found.weight.data() + b * slots);
    for (int64_t e = b * slots; e < (b + 1) * slots; ++e)
      found.slot[e] = index[e] == 0 && field.sequence ? -1 : set.slot(index[e]);
  }
  return found;
}

// A table's gradient at its field's distinct rows (found by find_rows), given its upstream
// (B, dim) gradient: each entry's upstream row (times its weight for a sequence field) added
// to its row's sum from 0 in entry order, then row 0's sum times 0 (a sparse field's OOV row).
// What `_TableLookup.backward` computes with `torch.unique` and `index_add_`.
torch::Tensor sum_rows(const FieldIndex& field, const FieldRows& found, const Matrix& up) {
  const int64_t count = found.distinct.size(0), dim = up.dim, step = up.step;
  torch::Tensor sums = torch::zeros({count, dim}, torch::kFloat);
  float* out = sums.data_ptr<float>();
  for (int64_t b = 0; b < up.rows; ++b) {
    const float* source = up.data + b * up.stride;
    for (int64_t e = b * field.slots; e < (b + 1) * field.slots; ++e) {
      if (found.slot[e] < 0) continue;
      float* into = out + found.slot[e] * dim;
      if (field.sequence) {
        const float w = found.weight[e];
        for (int64_t j = 0; j < dim; ++j) into[j] += source[j * step] * w;
      } else {
        for (int64_t j = 0; j < dim; ++j) into[j] += source[j * step];
      }
    }
  }
  if (count > 0 && found.distinct.data_ptr<int64_t>()[0] == 0)
    for (int64_t j = 0; j < dim; ++j) out[j] *= 0.0f;
  return sums;
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

// The gradients of the tables lookup_forward read (table t: field t % F's second-order table
// for t < F, then its first-order one), in one call: table t is skipped where rows[t] < 0 (an
// undefined tensor in its places), else it gets
// - where row_wise[t] is false, its dense gradient dense[t] (rows[t], dim): for each entry of
//   each batch row in order, grads[f][b] (a sparse field) or grads[f][b] * weight (a sequence
//   field's non-padding entries) added to its row, row 0 left zero: what
//   `_Entries.dense_gradient` computes;
// - where row_wise[t] is true, its sparse gradient: distinct[f], the distinct rows its field
//   looked up (int64, ascending; found once for both of a field's tables, find_rows), and
//   sums[t], its gradient at those rows (sum_rows).
// `grads[f]` may be any (B, dim) float32 view; first-order tables read `first_order_grad`
// (B, 1). The tasks go to whichever thread is free, in two rounds (the row-wise fields' rows
// and the dense tables' gradients, then the row-wise tables' sums); each is computed by one
// thread, in order, so the bits do not depend on the threads.
std::tuple<std::vector<torch::Tensor>, std::vector<torch::Tensor>, std::vector<torch::Tensor>>
lookup_backward(const std::vector<torch::Tensor>& indices, const std::vector<torch::Tensor>& grads,
                const torch::Tensor& first_order_grad, const std::vector<int64_t>& rows,
                const std::vector<bool>& row_wise) {
  const int64_t fields = indices.size();
  TORCH_CHECK(static_cast<int64_t>(rows.size()) == 2 * fields &&
                  static_cast<int64_t>(row_wise.size()) == 2 * fields &&
                  static_cast<int64_t>(grads.size()) == fields,
              "lookup_backward: F indices and gradients, 2F row counts and choices");
  const int64_t batch = indices[0].size(0);
  std::vector<FieldIndex> index;
  for (const auto& i : indices) index.push_back(field_index(i, batch));
  std::vector<torch::Tensor> dense(2 * fields), distinct(fields), sums(2 * fields);
  std::vector<Matrix> upstream(2 * fields), target(2 * fields);
  // Round one: every row-wise field's rows (the larger tasks, first) and every dense table's
  // gradient; round two: every row-wise table's sums. A task: -1 - f (field f's rows) or t.
  std::vector<int64_t> tasks, row_wise_tables;
  for (int64_t t = 0; t < 2 * fields; ++t) {
    if (rows[t] < 0) continue;
    upstream[t] = Matrix::of(t < fields ? grads[t] : first_order_grad);
    TORCH_CHECK(upstream[t].rows == batch, "lookup_backward: one gradient row per batch row");
    if (row_wise[t]) {
      const int64_t f = t % fields;
      if (std::find(tasks.begin(), tasks.end(), -1 - f) == tasks.end())
        tasks.insert(tasks.begin(), -1 - f);
      row_wise_tables.push_back(t);
      continue;
    }
    dense[t] = torch::zeros({rows[t], upstream[t].dim}, first_order_grad.options());
    target[t] = Matrix::of(dense[t]);
    tasks.push_back(t);
  }
  // Tables by their entries times width, most first (the fields' rows stay in front).
  const auto work = [&](int64_t t) { return index[t % fields].slots * (upstream[t].dim + 1); };
  const auto most_first = [&](int64_t a, int64_t b) { return work(a) > work(b); };
  std::stable_sort(std::find_if(tasks.begin(), tasks.end(), [](int64_t t) { return t >= 0; }),
                   tasks.end(), most_first);
  std::stable_sort(row_wise_tables.begin(), row_wise_tables.end(), most_first);
  std::vector<FieldRows> found(fields);
  for_each_task(tasks.size(), [&](size_t task) {
    const int64_t t = tasks[task];
    if (t >= 0) {
      if (index[t % fields].wide)
        backward_table<int64_t>(index[t % fields], upstream[t], target[t]);
      else
        backward_table<int32_t>(index[t % fields], upstream[t], target[t]);
      return;
    }
    const int64_t f = -1 - t;
    const int64_t table_rows = rows[f] >= 0 && row_wise[f] ? rows[f] : rows[fields + f];
    found[f] = index[f].wide ? find_rows<int64_t>(index[f], batch, table_rows)
                             : find_rows<int32_t>(index[f], batch, table_rows);
    distinct[f] = found[f].distinct;
  });
  for_each_task(row_wise_tables.size(), [&](size_t task) {
    const int64_t t = row_wise_tables[task];
    sums[t] = sum_rows(index[t % fields], found[t % fields], upstream[t]);
  });
  return {dense, distinct, sums};
}

// Copies `dim` floats, inlined for the pipeline's widths: a call to memcpy per row costs more
// than copying a short row.
inline void copy_row(float* to, const float* from, int64_t dim) {
  switch (dim) {
    case 1: *to = *from; return;
    case 8: std::memcpy(to, from, 8 * sizeof(float)); return;
    case 16: std::memcpy(to, from, 16 * sizeof(float)); return;
    default: std::memcpy(to, from, dim * sizeof(float));
  }
}

// Copies rows rows[0:count] of `from` into the contiguous `into` (count, dim).
static void take_rows(const Matrix& from, const int64_t* rows, int64_t count, float* into) {
  for (int64_t r = 0; r < count; ++r)
    copy_row(into + r * from.dim, from.data + rows[r] * from.stride, from.dim);
}

// The reverse of take_rows: writes the rows of `from` back to rows rows[0:count] of `to`.
static void put_rows(const float* from, const int64_t* rows, int64_t count, const Matrix& to) {
  for (int64_t r = 0; r < count; ++r)
    copy_row(to.data + rows[r] * to.stride, from + r * to.dim, to.dim);
}

// Whether `index` (int64, 1-D) is strictly ascending: a sparse gradient's indices that need
// no coalescing.
bool strictly_ascending(const torch::Tensor& index) {
  TORCH_CHECK(index.dim() == 1 && index.scalar_type() == torch::kLong && index.is_contiguous(),
              "strictly_ascending: a contiguous int64 vector");
  const int64_t* rows = index.data_ptr<int64_t>();
  for (int64_t r = 1; r < index.size(0); ++r)
    if (rows[r] <= rows[r - 1]) return false;
  return true;
}

// The constants of one Adam step as PyTorch's fused CPU kernel (FusedAdamKernel.cpp) has
// them: computed in double, then rounded to float.
struct AdamStep {
  float lerp_weight, decay, beta2, square_weight, correction2_sqrt, eps, minus_step_size;
  bool lerp_from_grad;  // |1 - beta1| >= 0.5: exp_avg = grad + (w - 1) * (grad - exp_avg)
  bool decays;          // weight_decay != 0: grad + param * decay

  AdamStep(double step, double lr, double beta1, double beta2_, double weight_decay,
           double eps_) {
    const double correction1 = 1 - std::pow(beta1, step), correction2 = 1 - std::pow(beta2_, step);
    lerp_weight = static_cast<float>(1 - beta1);
    lerp_from_grad = !(std::abs(lerp_weight) < 0.5f);
    if (lerp_from_grad) lerp_weight = lerp_weight - 1.0f;
    decays = weight_decay != 0.f;
    decay = static_cast<float>(weight_decay);
    beta2 = static_cast<float>(beta2_);
    square_weight = static_cast<float>(1 - beta2_);
    correction2_sqrt = static_cast<float>(std::sqrt(correction2));
    eps = static_cast<float>(eps_);
    minus_step_size = static_cast<float>(-(lr / correction1));
  }
};

// One row's Adam step in place: each element with the float operations of the fused kernel's
// vector loop, in its order, with the three fused multiply-adds PyTorch's build makes of it
// (the exp_avg lerp's, and the compiler's contraction of `grad + param * decay` and of
// `exp_avg_sq * beta2 + (square_weight * grad) * grad`); tests/test_kernels.py checks the bits.
// Its scalar tail loop rounds otherwise; row_wise_adam leaves the rows that fall there to it.
__attribute__((target("avx2,fma"))) inline void adam_row(float* __restrict param,
                                                        float* __restrict exp_avg,
                                                        float* __restrict exp_avg_sq,
                                                        const float* __restrict grad,
                                                        int64_t dim, const AdamStep& s) {
  int64_t j = 0;
  for (; j + 8 <= dim; j += 8) {  // eight elements at a time, each with the ops below
    const __m256 p = _mm256_loadu_ps(param + j), m = _mm256_loadu_ps(exp_avg + j);
    __m256 g = _mm256_loadu_ps(grad + j);
    if (s.decays) g = _mm256_fmadd_ps(p, _mm256_set1_ps(s.decay), g);
    const __m256 m1 = _mm256_fmadd_ps(_mm256_set1_ps(s.lerp_weight), _mm256_sub_ps(g, m),
                                      s.lerp_from_grad ? g : m);
    const __m256 v1 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(s.square_weight), g), g,
                                      _mm256_mul_ps(_mm256_loadu_ps(exp_avg_sq + j),
                                                    _mm256_set1_ps(s.beta2)));
    const __m256 denom =
        _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v1), _mm256_set1_ps(s.correction2_sqrt)),
                      _mm256_set1_ps(s.eps));
    const __m256 p1 =
        _mm256_add_ps(p, _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(s.minus_step_size), m1), denom));
    _mm256_storeu_ps(exp_avg + j, m1);
    _mm256_storeu_ps(exp_avg_sq + j, v1);
    _mm256_storeu_ps(param + j, p1);
  }
  for (; j < dim; ++j) {
    float g = grad[j];
    if (s.decays) g = __builtin_fmaf(param[j], s.decay, g);
    const float m = exp_avg[j];
    exp_avg[j] = __builtin_fmaf(s.lerp_weight, g - m, s.lerp_from_grad ? g : m);
    exp_avg_sq[j] = __builtin_fmaf(s.square_weight * g, g, exp_avg_sq[j] * s.beta2);
    const float denom = std::sqrt(exp_avg_sq[j]) / s.correction2_sqrt + s.eps;
    param[j] = param[j] + s.minus_step_size * exp_avg[j] / denom;
  }
}

// One row-wise Adam step of float32 CPU tables: each table's step count `steps[t]` goes up by
// 1 and its rows `indices[t]` (distinct) of the weights and both moments are stepped with
// gradient rows `grads[t]` (count, dim): the bits of `RowWiseAdam`'s PyTorch ops, which
// gather the rows (index_select), step them with PyTorch's fused Adam kernel and write them
// back (index_copy_). Here each row is stepped where it lies (adam_row), on all threads, each
// thread a contiguous share of every table's rows, prefetching ahead; only the last few rows,
// whose elements the fused kernel's scalar tail loop steps (the gathered length modulo its
// vector width, 8 or 16 floats), are gathered, stepped by that kernel and written back. Every
// index is checked before anything changes. Each array's rows must be contiguous, not the
// array: a table's two moments may be the halves [:, 0] and [:, 1] of one (V, 2, dim) block.
void row_wise_adam(const std::vector<torch::Tensor>& params,
                   const std::vector<torch::Tensor>& indices,
                   const std::vector<torch::Tensor>& grads,
                   const std::vector<torch::Tensor>& exp_avgs,
                   const std::vector<torch::Tensor>& exp_avg_sqs,
                   const std::vector<torch::Tensor>& steps, double lr, double beta1, double beta2,
                   double weight_decay, double eps) {
  const int64_t tables = params.size();
  // Array a of table t (0: weights, 1: exp_avg, 2: exp_avg_sq) is arrays[3t + a].
  std::vector<Matrix> arrays, gradients;
  std::vector<torch::Tensor> contiguous_grads;
  std::vector<int64_t> counts, in_place;
  for (int64_t t = 0; t < tables; ++t) {
    for (const auto* array : {&params[t], &exp_avgs[t], &exp_avg_sqs[t]}) {
      TORCH_CHECK(array->dim() == 2 && array->stride(1) == 1,
                  "row_wise_adam: tables and moments with contiguous rows");
      arrays.push_back(Matrix::of(*array));
    }
    const int64_t count = indices[t].size(0), dim = arrays.back().dim;
    contiguous_grads.push_back(grads[t].contiguous());
    gradients.push_back(Matrix::of(contiguous_grads.back()));
    TORCH_CHECK(gradients.back().rows == count && gradients.back().dim == dim,
                "row_wise_adam: one gradient row per index");
    const int64_t* rows = indices[t].data_ptr<int64_t>();
    for (int64_t r = 0; r < count; ++r) checked(rows[r], arrays.back().rows);
    // The gathered rows' tail: count * dim modulo 16 floats, the last `count % period` rows.
    const int64_t period = 16 / std::gcd(dim, int64_t{16});
    counts.push_back(count);
    in_place.push_back(count - count % period);
  }
  std::vector<AdamStep> constants;
  for (const auto& step : steps) {
    *step.data_ptr<float>() += 1.0f;  // as Adam's step += 1
    constants.emplace_back(*step.data_ptr<float>(), lr, beta1, beta2, weight_decay, eps);
  }
  const int64_t shares = at::get_num_threads();
  at::parallel_for(0, shares, 1, [&](int64_t begin, int64_t end) {
    for (int64_t share = begin; share < end; ++share)
      for (int64_t t = 0; t < tables; ++t) {
        const int64_t first = in_place[t] * share / shares;
        const int64_t last = in_place[t] * (share + 1) / shares;
        const int64_t* rows = indices[t].data_ptr<int64_t>();
        const Matrix &weights = arrays[3 * t], &firsts = arrays[3 * t + 1],
                     &seconds = arrays[3 * t + 2];
        for (int64_t r = first; r < last; ++r) {
          if (r + kAhead < last) {
            const int64_t ahead = rows[r + kAhead];
            __builtin_prefetch(weights.data + ahead * weights.stride, 1);
            __builtin_prefetch(firsts.data + ahead * firsts.stride, 1);
            __builtin_prefetch(seconds.data + ahead * seconds.stride, 1);
          }
          const int64_t row = rows[r];
          adam_row(weights.data + row * weights.stride, firsts.data + row * firsts.stride,
                   seconds.data + row * seconds.stride,
                   gradients[t].data + r * gradients[t].stride, weights.dim, constants[t]);
        }
      }
  });
  // The tails: gathered, stepped by the fused kernel (the same elements in its tail loop),
  // written back.
  std::vector<torch::Tensor> tail_steps, tail_grads, gathered[3];
  std::vector<int64_t> tail_tables;
  for (int64_t t = 0; t < tables; ++t) {
    const int64_t tail = counts[t] - in_place[t];
    if (tail == 0) continue;
    tail_tables.push_back(t);
    tail_steps.push_back(steps[t]);
    tail_grads.push_back(contiguous_grads[t].narrow(0, in_place[t], tail));
    for (int64_t a = 0; a < 3; ++a) {
      gathered[a].push_back(torch::empty({tail, arrays[3 * t + a].dim}, params[t].options()));
      take_rows(arrays[3 * t + a], indices[t].data_ptr<int64_t>() + in_place[t], tail,
                gathered[a].back().data_ptr<float>());
    }
  }
  if (tail_tables.empty()) return;
  at::_fused_adam_(gathered[0], tail_grads, gathered[1], gathered[2], {}, tail_steps, lr, beta1,
                   beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
  for (size_t k = 0; k < tail_tables.size(); ++k) {
    const int64_t t = tail_tables[k];
    for (int64_t a = 0; a < 3; ++a)
      put_rows(gathered[a][k].data_ptr<float>(), indices[t].data_ptr<int64_t>() + in_place[t],
               counts[t] - in_place[t], arrays[3 * t + a]);
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_forward", &attention_forward, "field attention: attended, weights");
  m.def("attention_backward", &attention_backward, "field attention: q, k, v gradients");
  m.def("lookup_forward", &lookup_forward, "every field's lookups: flat vectors, first order");
  m.def("lookup_backward", &lookup_backward, "the dense and sparse gradients of the tables");
  m.def("row_wise_adam", &row_wise_adam, "row-wise Adam: each row stepped in place");
  m.def("strictly_ascending", &strictly_ascending, "whether an index vector needs no coalescing");
}
