// The one translation unit the build compiles: the three kernels together.
//
// Why one unit: each kernel alone parses TensorFlow's kernel headers and
// instantiates Eigen's float matrix product, and the three copies were most of
// the build's time, which every fresh machine (each CI run) pays on first use;
// one unit does both once (BENCHMARKS.md, "The suite in session 24"). Each
// file keeps its own names (its block size is kSoftmaxBlockRows,
// kRankBlockRows or kTopBlockRows), so they share this unit's anonymous
// namespace without clashing.

#include "in_batch_softmax.cc"
#include "count_higher_scores.cc"
#include "top_scores.cc"
