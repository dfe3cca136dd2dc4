// Each query's k highest-scoring catalogue candidates, best first: the
// indices `tf.math.top_k(queries @ candidates^T, k, sorted=True)` returns
// (a tie goes to the lower index), for the top-K lists of every evaluation
// (recsys_ablate/evaluation/catalogue.py `top_lists`).
//
// Why hand-written: TensorFlow's CPU TopK over a 2,048 x 6,000 score block
// took about four times as long as the matmul that made it, and every
// evaluation pays it for every held-out user; here each block of 16 queries
// scores the catalogue into a cache-resident buffer and one pass per row
// keeps the best k: a candidate costs one comparison with the k-th best so
// far unless it enters (BENCHMARKS.md, session 19).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "kernel_types.h"

namespace {

using namespace kernel_types;  // NOLINT: the types every kernel here uses

// Queries per block, as in count_higher_scores.cc: 16 rows of scores stay in L2.
constexpr int64_t kTopBlockRows = 16;

REGISTER_OP("TopScores")
    .Input("queries: float")
    .Input("candidates: float")
    .Input("k: int32")
    .Output("indices: int32")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Matrix(c->Dim(c->input(0), 0), c->UnknownDim()));
      return tensorflow::OkStatus();
    });

// A candidate's rank as one integer: a higher key is a higher score, or the
// same score and a lower index (TopK's order), so selection and sorting
// compare one uint64 (twice as fast as comparing (score, index) pairs,
// measured). The score's bits are mapped to an unsigned integer of the same
// order (negative floats reversed). Scores reach it with NaN already -inf.
inline uint64_t Key(float score, int64_t index) {
  uint32_t bits;
  std::memcpy(&bits, &score, sizeof bits);
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(bits) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(index));
}

inline int32_t IndexOf(uint64_t key) { return static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(key)); }

// NaN ranks as -inf, below every number.
inline float Ranked(float score) { return std::isnan(score) ? -std::numeric_limits<float>::infinity() : score; }

class TopScoresOp : public OpKernel {
 public:
  explicit TopScoresOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& queries = context->input(0);
    const Tensor& candidates = context->input(1);
    const Tensor& k_in = context->input(2);
    OP_REQUIRES(context, queries.dims() == 2 && candidates.dims() == 2 &&
                             queries.dim_size(1) == candidates.dim_size(1) && k_in.NumElements() == 1,
                tensorflow::errors::InvalidArgument("queries [u, d], candidates [m, d] and a scalar k expected"));
    const int64_t u = queries.dim_size(0), m = candidates.dim_size(0), d = queries.dim_size(1);
    const int64_t k = k_in.flat<int32_t>()(0);
    OP_REQUIRES(context, k >= 1 && k <= m,
                tensorflow::errors::InvalidArgument("k must be between 1 and the number of candidates"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, tensorflow::TensorShape({u, k}), &out));
    MapConst q(queries.flat<float>().data(), u, d);
    MapConst c(candidates.flat<float>().data(), m, d);
    int32_t* indices = out->flat<int32_t>().data();

    auto work = [&](int64_t first_block, int64_t last_block) {
      RowMajor scores(kTopBlockRows, m);
      std::vector<uint64_t> kept;
      kept.reserve(2 * k);
      const auto better = std::greater<uint64_t>();
      for (int64_t block = first_block; block < last_block; ++block) {
        const int64_t r0 = block * kTopBlockRows, rows = std::min(kTopBlockRows, u - r0);
        auto s = scores.topRows(rows);
        s.noalias() = q.middleRows(r0, rows) * c.transpose();
        for (int64_t i = 0; i < rows; ++i) {
          const float* row = s.row(i).data();
          kept.clear();
          float worst = std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < k; ++j) {
            kept.push_back(Key(Ranked(row[j]), j));
            worst = std::min(worst, Ranked(row[j]));
          }
          // `worst` is the k-th best score seen so far. A later candidate has
          // a higher index than every kept one, so only a strictly higher
          // score can enter (NaN never does). Entrants wait in `kept` until
          // there are k of them, then one selection keeps the best k: a
          // candidate that does not enter costs one comparison.
          for (int64_t j = k; j < m; ++j) {
            if (row[j] > worst) {
              kept.push_back(Key(row[j], j));
              if (static_cast<int64_t>(kept.size()) == 2 * k) {
                std::nth_element(kept.begin(), kept.begin() + (k - 1), kept.end(), better);
                kept.resize(k);
                worst = row[IndexOf(kept[k - 1])];
              }
            }
          }
          if (static_cast<int64_t>(kept.size()) > k) {
            std::nth_element(kept.begin(), kept.begin() + (k - 1), kept.end(), better);
            kept.resize(k);
          }
          std::sort(kept.begin(), kept.end(), better);
          int32_t* target = indices + (r0 + i) * k;
          for (int64_t j = 0; j < k; ++j) target[j] = IndexOf(kept[j]);
        }
      }
    };
    const int64_t blocks = (u + kTopBlockRows - 1) / kTopBlockRows;
    context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        blocks, kTopBlockRows * m * (d + 4), work);
  }
};

REGISTER_KERNEL_BUILDER(Name("TopScores").Device(tensorflow::DEVICE_CPU), TopScoresOp);

}  // namespace
