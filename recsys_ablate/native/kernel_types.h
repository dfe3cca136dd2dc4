// What the kernels share: TensorFlow's kernel types and row-major Eigen views
// of the embeddings.

#ifndef RECSYS_ABLATE_NATIVE_KERNEL_TYPES_H_
#define RECSYS_ABLATE_NATIVE_KERNEL_TYPES_H_

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/lib/core/threadpool.h"
#include "Eigen/Dense"

namespace kernel_types {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapConst = Eigen::Map<const RowMajor>;
using Map = Eigen::Map<RowMajor>;

}  // namespace kernel_types

#endif  // RECSYS_ABLATE_NATIVE_KERNEL_TYPES_H_
