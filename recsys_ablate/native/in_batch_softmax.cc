// In-batch softmax normaliser and its gradients, fused into one CPU kernel.
//
// For queries Q [R, d], candidates C [M, d], query weights w [R] and
// candidate log-counts b [M] (see recsys_ablate/models/retrieval_loss.py):
//
//   loss  = sum_r w_r * logsumexp_j (Q_r . C_j + b_j)
//   dQ    = G C,   dC = G^T Q,   G_rj = w_r * softmax_j(Q_r . C + b)_j
//
// Why hand-written: composed from TensorFlow ops this is three matmuls and
// about eight passes over the R x M logit matrix (~2,048 x 1,150 floats, 9 MB,
// far larger than the L2 cache), ~20 ms of a ~28 ms training step on one
// core. Here each block of 32 query rows computes its logits, softmax and
// both gradient products while the block (32 x M floats) is still in cache:
// 10.8-13 ms for the same arithmetic, steps 20-30% shorter (BENCHMARKS.md).
//
// Threads: the rows are cut into one contiguous shard per intra-op thread,
// each with its own dC buffer, summed in shard order, so a given thread
// count always gives the same result.

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernel_types.h"

namespace {

using namespace kernel_types;  // NOLINT: the types every kernel here uses

// Query rows per block: BR x ~1,150 logits (~150 KB) stay in a 512 KB L2.
constexpr int kSoftmaxBlockRows = 32;

REGISTER_OP("InBatchSoftmax")
    .Input("queries: float")
    .Input("candidates: float")
    .Input("query_weights: float")
    .Input("candidate_log_counts: float")
    .Output("loss: float")
    .Output("query_gradient: float")
    .Output("candidate_gradient: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->input(0));
      c->set_output(2, c->input(1));
      return tensorflow::OkStatus();
    });

// Rows [begin, end) of Q: adds their loss to *loss, writes their dQ rows and
// accumulates their share of dC into dc (zeroed by the caller).
void SoftmaxShard(const MapConst& q, const MapConst& c, const float* w, const Eigen::Map<const Eigen::RowVectorXf>& b,
                  int64_t begin, int64_t end, Map* dq, RowMajor* dc, double* loss) {
  const int64_t m = c.rows();
  RowMajor block(kSoftmaxBlockRows, m);
  for (int64_t r0 = begin; r0 < end; r0 += kSoftmaxBlockRows) {
    const int64_t n = std::min<int64_t>(kSoftmaxBlockRows, end - r0);
    auto logits = block.topRows(n);
    logits.noalias() = q.middleRows(r0, n) * c.transpose();
    for (int64_t i = 0; i < n; ++i) {
      auto row = logits.row(i);
      row += b;
      const float top = row.maxCoeff();
      row = (row.array() - top).exp();
      const float total = row.sum();
      *loss += static_cast<double>(w[r0 + i]) * (top + std::log(total));
      row *= w[r0 + i] / total;  // row is now G's row
    }
    dq->middleRows(r0, n).noalias() = logits * c;
    dc->noalias() += logits.transpose() * q.middleRows(r0, n);
  }
}

class InBatchSoftmaxOp : public OpKernel {
 public:
  explicit InBatchSoftmaxOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& queries = context->input(0);
    const Tensor& candidates = context->input(1);
    const Tensor& weights = context->input(2);
    const Tensor& log_counts = context->input(3);
    OP_REQUIRES(context, queries.dims() == 2 && candidates.dims() == 2 &&
                             queries.dim_size(1) == candidates.dim_size(1),
                tensorflow::errors::InvalidArgument("queries and candidates must be [rows, d] with equal d"));
    const int64_t r = queries.dim_size(0), m = candidates.dim_size(0), d = queries.dim_size(1);
    OP_REQUIRES(context, weights.NumElements() == r && log_counts.NumElements() == m,
                tensorflow::errors::InvalidArgument("one weight per query and one log-count per candidate"));
    Tensor* loss_out = nullptr;
    Tensor* dq_out = nullptr;
    Tensor* dc_out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({}), &loss_out));
    OP_REQUIRES_OK(context, context->allocate_output(1, queries.shape(), &dq_out));
    OP_REQUIRES_OK(context, context->allocate_output(2, candidates.shape(), &dc_out));

    MapConst q(queries.flat<float>().data(), r, d);
    MapConst c(candidates.flat<float>().data(), m, d);
    Eigen::Map<const Eigen::RowVectorXf> b(log_counts.flat<float>().data(), m);
    const float* w = weights.flat<float>().data();
    Map dq(dq_out->flat<float>().data(), r, d);
    Map dc(dc_out->flat<float>().data(), m, d);

    auto* pool = context->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t shards = std::max<int64_t>(
        1, std::min<int64_t>(pool->NumThreads(), (r + kSoftmaxBlockRows - 1) / kSoftmaxBlockRows));
    const int64_t rows_per_shard =
        ((r + shards - 1) / shards + kSoftmaxBlockRows - 1) / kSoftmaxBlockRows * kSoftmaxBlockRows;
    std::vector<RowMajor> partial_dc(shards, RowMajor::Zero(m, d));
    std::vector<double> partial_loss(shards, 0.0);
    auto work = [&](int64_t first, int64_t last) {
      for (int64_t s = first; s < last; ++s) {
        const int64_t begin = std::min(r, s * rows_per_shard), end = std::min(r, begin + rows_per_shard);
        SoftmaxShard(q, c, w, b, begin, end, &dq, &partial_dc[s], &partial_loss[s]);
      }
    };
    if (shards == 1) {
      work(0, 1);
    } else {
      pool->ParallelFor(shards, /*cost_per_unit=*/1 << 30, work);
    }
    dc = partial_dc[0];
    double loss = partial_loss[0];
    for (int64_t s = 1; s < shards; ++s) {
      dc += partial_dc[s];
      loss += partial_loss[s];
    }
    loss_out->scalar<float>()() = static_cast<float>(loss);
  }
};

REGISTER_KERNEL_BUILDER(Name("InBatchSoftmax").Device(tensorflow::DEVICE_CPU), InBatchSoftmaxOp);

}  // namespace
