// Rank of each query's true candidate: how many catalogue candidates score
// strictly higher (recsys_ablate/evaluation/catalogue.py semantics).
//
// Why hand-written: composed from TensorFlow ops, every block of 2,048
// queries writes a 2,048 x 3,883 score matrix (32 MB), then compares, casts
// and sums it in three more passes; here each block of 16 queries scores the
// catalogue into a cache-resident buffer and counts at once (BENCHMARKS.md).

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernel_types.h"

namespace {

using namespace kernel_types;  // NOLINT: the types every kernel here uses

// Queries per block: 16 x ~3,900 scores (~250 KB) stay in a 512 KB L2.
constexpr int64_t kRankBlockRows = 16;

// Examples are grouped by query: those of query u are positions starts[u] ..
// starts[u + 1] - 1, and each query scores the catalogue once for all of its
// examples. One example per query (starts = 0, 1, ..., n) is the plain
// per-example count; a query tower that reads only the user groups a user's
// examples, which at MovieLens-25M's size (5M validation examples, 162k
// users) scores the catalogue 162k times instead of 5M times (BENCHMARKS.md,
// scale).
REGISTER_OP("CountHigherScoresGrouped")
    .Input("queries: float")
    .Input("candidates: float")
    .Input("starts: int64")
    .Input("positive_scores: float")
    .Output("ranks: int32")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(c->Dim(c->input(3), 0)));
      return tensorflow::OkStatus();
    });

class CountHigherScoresGroupedOp : public OpKernel {
 public:
  explicit CountHigherScoresGroupedOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& queries = context->input(0);
    const Tensor& candidates = context->input(1);
    const Tensor& starts_in = context->input(2);
    const Tensor& positive = context->input(3);
    OP_REQUIRES(context, queries.dims() == 2 && candidates.dims() == 2 &&
                             queries.dim_size(1) == candidates.dim_size(1) &&
                             starts_in.NumElements() == queries.dim_size(0) + 1,
                tensorflow::errors::InvalidArgument(
                    "queries [u, d], candidates [m, d] and u + 1 group starts expected"));
    const int64_t u = queries.dim_size(0), m = candidates.dim_size(0), d = queries.dim_size(1);
    const int64_t n = positive.NumElements();
    const int64_t* starts = starts_in.flat<int64_t>().data();
    OP_REQUIRES(context, starts[0] == 0 && starts[u] == n,
                tensorflow::errors::InvalidArgument("group starts must run from 0 to the number of examples"));
    for (int64_t i = 0; i < u; ++i) {
      OP_REQUIRES(context, starts[i] <= starts[i + 1],
                  tensorflow::errors::InvalidArgument("group starts must not decrease"));
    }
    Tensor* ranks_out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, tensorflow::TensorShape({n}), &ranks_out));
    MapConst q(queries.flat<float>().data(), u, d);
    MapConst c(candidates.flat<float>().data(), m, d);
    const float* p = positive.flat<float>().data();
    int32_t* ranks = ranks_out->flat<int32_t>().data();

    auto work = [&](int64_t first_block, int64_t last_block) {
      RowMajor scores(kRankBlockRows, m);
      for (int64_t block = first_block; block < last_block; ++block) {
        const int64_t r0 = block * kRankBlockRows, rows = std::min(kRankBlockRows, u - r0);
        auto s = scores.topRows(rows);
        s.noalias() = q.middleRows(r0, rows) * c.transpose();
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t e = starts[r0 + i]; e < starts[r0 + i + 1]; ++e) {
            ranks[e] = std::isfinite(p[e]) ? static_cast<int32_t>((s.row(i).array() > p[e]).count())
                                           : static_cast<int32_t>(m);
          }
        }
      }
    };
    const int64_t blocks = (u + kRankBlockRows - 1) / kRankBlockRows;
    const int64_t per_block = kRankBlockRows * m * (d + std::max<int64_t>(n / std::max<int64_t>(u, 1), 1));
    context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(blocks, per_block, work);
  }
};

REGISTER_KERNEL_BUILDER(Name("CountHigherScoresGrouped").Device(tensorflow::DEVICE_CPU),
                        CountHigherScoresGroupedOp);

}  // namespace
