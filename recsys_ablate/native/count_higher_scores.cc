// Rank of each query's true candidate: how many catalogue candidates score
// strictly higher (recsys_ablate/evaluation/catalogue.py semantics).
//
// Why hand-written: composed from TensorFlow ops, every block of 2,048
// queries writes a 2,048 x 3,883 score matrix (32 MB), then compares, casts
// and sums it in three more passes; here each block of 16 queries scores the
// catalogue into a cache-resident buffer and counts at once (BENCHMARKS.md).

#include <algorithm>
#include <cmath>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/lib/core/threadpool.h"
#include "Eigen/Dense"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapConst = Eigen::Map<const RowMajor>;

// Queries per block: 16 x ~3,900 scores (~250 KB) stay in a 512 KB L2.
constexpr int64_t kBlockRows = 16;

REGISTER_OP("CountHigherScores")
    .Input("queries: float")
    .Input("candidates: float")
    .Input("positive_scores: float")
    .Output("ranks: int32")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(c->Dim(c->input(0), 0)));
      return tensorflow::OkStatus();
    });

class CountHigherScoresOp : public OpKernel {
 public:
  explicit CountHigherScoresOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& queries = context->input(0);
    const Tensor& candidates = context->input(1);
    const Tensor& positive = context->input(2);
    OP_REQUIRES(context, queries.dims() == 2 && candidates.dims() == 2 &&
                             queries.dim_size(1) == candidates.dim_size(1) &&
                             positive.NumElements() == queries.dim_size(0),
                tensorflow::errors::InvalidArgument(
                    "queries [n, d], candidates [m, d] and one positive score per query expected"));
    const int64_t n = queries.dim_size(0), m = candidates.dim_size(0), d = queries.dim_size(1);
    Tensor* ranks_out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, tensorflow::TensorShape({n}), &ranks_out));
    MapConst q(queries.flat<float>().data(), n, d);
    MapConst c(candidates.flat<float>().data(), m, d);
    const float* p = positive.flat<float>().data();
    int32_t* ranks = ranks_out->flat<int32_t>().data();

    auto work = [&](int64_t first_block, int64_t last_block) {
      RowMajor scores(kBlockRows, m);
      for (int64_t block = first_block; block < last_block; ++block) {
        const int64_t r0 = block * kBlockRows, rows = std::min(kBlockRows, n - r0);
        auto s = scores.topRows(rows);
        s.noalias() = q.middleRows(r0, rows) * c.transpose();
        for (int64_t i = 0; i < rows; ++i) {
          // A non-finite positive score is a miss: ranked below everything.
          ranks[r0 + i] = std::isfinite(p[r0 + i]) ? static_cast<int32_t>((s.row(i).array() > p[r0 + i]).count())
                                                   : static_cast<int32_t>(m);
        }
      }
    };
    const int64_t blocks = (n + kBlockRows - 1) / kBlockRows;
    context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        blocks, /*cost_per_unit=*/kBlockRows * m * d * 4, work);
  }
};

REGISTER_KERNEL_BUILDER(Name("CountHigherScores").Device(tensorflow::DEVICE_CPU), CountHigherScoresOp);

}  // namespace
