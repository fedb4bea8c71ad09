// An execution plan: a quantized model's layers as one native call per inference.
//
// The subgraph runtime pattern (XNNPACK's define / create / reshape / invoke): a plan is built once from
// nodes (convs, pools, the linear head, ...) over values; `setup` infers every value's shape from the
// input shapes and lays the intermediate activations out in one preallocated arena (lifetimes that do
// not overlap share bytes); `run` binds the caller's input and output buffers and runs the nodes in
// order inside one ParallelRegion, so the pool's workers stay hot from the first layer to the last. Each
// node calls the same op function (csrc/ops) with the same arguments as the module that described it,
// so a plan's outputs are bit-identical to running the modules one by one.
//
// Activations are NHWC (channels last), u8 or f32. A row vector (n, features) is the shape (n, 1, 1, f).
// A plan is not reentrant: concurrent runs of one plan take turns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/arena.h"

namespace edgeopt::runtime {

enum class DType : uint8_t { kF32 = 0, kU8 = 1 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);

struct Shape {
  size_t n = 0, h = 1, w = 1, c = 0;
  size_t elements() const { return n * h * w * c; }
  bool operator==(const Shape& o) const { return n == o.n && h == o.h && w == o.w && c == o.c; }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;
};

using ValueId = size_t;

// What a node sees when it runs: its inputs' and output's data and shapes.
struct NodeIO {
  std::vector<const void*> in;
  std::vector<Shape> in_shapes;
  void* out = nullptr;
  Shape out_shape;
  int num_threads = 1;
};

class Node {
 public:
  virtual ~Node() = default;
  // Short op name for the profile ("qconv2d", "max_pool2d", ...).
  virtual const char* op() const = 0;
  // The output shape for these input shapes; throws std::invalid_argument if they do not fit the node.
  virtual Shape infer_shape(const std::vector<Shape>& in) const = 0;
  virtual void run(const NodeIO& io) const = 0;
  // Multiply-adds of one run at these shapes (0 where it means nothing), for the profile.
  virtual double macs(const std::vector<Shape>& in, const Shape& out) const;

  std::string name;
  std::vector<ValueId> inputs;
  ValueId output = 0;
};

// An input as the caller holds it: `dims` in the caller's logical order (n, c, h, w) for images, (n, f)
// for rows, with element strides. NHWC-contiguous images are read in place; others are copied once.
struct ExternalTensor {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int ndim = 4;
  int64_t dims[4] = {0, 0, 0, 0};
  int64_t strides[4] = {0, 0, 0, 0};
};

// The NHWC shape of a caller's tensor (images: dims are (n, c, h, w); rows: (n, f) -> (n, 1, 1, f)).
Shape shape_of(const ExternalTensor& t);

struct NodeTime {
  std::string name, op;
  uint64_t ns = 0, runs = 0;
  double macs = 0;  // per run, at the last setup's shapes
};

class Plan {
 public:
  // --- definition ---
  // An input of the plan: `ndim` 4 (an image, NCHW as the caller sees it) or 2 (rows).
  ValueId add_input(DType dtype, int ndim, std::string name);
  // Appends a node (its inputs must exist) and returns its output value, of dtype `out_dtype`.
  ValueId add_node(std::unique_ptr<Node> node, DType out_dtype);
  void mark_output(ValueId v);
  DType dtype(ValueId v) const;
  size_t num_inputs() const { return inputs_.size(); }
  size_t num_outputs() const { return outputs_.size(); }

  // --- reshape: shapes of the outputs for these input shapes, lays out the arena for them ---
  // Input shapes are NHWC (images) or (n, 1, 1, f) (rows). Throws std::invalid_argument.
  std::vector<Shape> setup(const std::vector<Shape>& input_shapes);
  // setup unless these are the input shapes of the last setup; the output shapes either way.
  std::vector<Shape> reshape(const std::vector<Shape>& input_shapes);
  // The same shape inference without touching the arena (for torch.compile's fake tensors).
  std::vector<Shape> infer_output_shapes(const std::vector<Shape>& input_shapes) const;

  // --- invoke ---
  // Runs every node. Input shapes must be those of the last setup (run calls setup when they differ);
  // outputs are NHWC-contiguous buffers of the shapes setup returned. Throws std::domain_error for NaN/Inf
  // inputs of quantized nodes.
  void run(const std::vector<ExternalTensor>& inputs, const std::vector<void*>& outputs, int num_threads);

  // --- profile ---
  std::vector<NodeTime> node_times() const;
  void reset_times();
  uint64_t run_ns() const { return run_ns_; }  // total time inside run(), all runs since the reset
  uint64_t runs() const { return runs_; }
  size_t arena_bytes() const { return layout_.total_bytes; }
  size_t num_nodes() const { return nodes_.size(); }

 private:
  struct Value {
    DType dtype;
    std::string name;
    bool is_input = false;
    int input_ndim = 4;
    Shape shape;            // at the last setup
    size_t arena_slot = 0;  // index into layout_.offsets (every value has one; inputs use it when copied)
  };
  std::vector<Shape> infer_all(const std::vector<Shape>& input_shapes) const;
  void bind_input(size_t i, const ExternalTensor& t, uint8_t* arena, std::vector<void*>& data, int num_threads);

  std::vector<Value> values_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<NodeIO> ios_;  // per node, shapes from the last setup; pointers filled by each run
  std::vector<ValueId> inputs_, outputs_;
  // Per node: accumulated time and runs; the input copies are timed apart.
  std::vector<uint64_t> node_ns_, node_runs_;
  std::vector<uint64_t> input_copy_ns_, input_copy_runs_;
  uint64_t run_ns_ = 0, runs_ = 0;
  bool set_up_ = false;
  std::vector<Shape> setup_inputs_, setup_outputs_;
  ArenaLayout layout_;
  Arena arena_;
  std::mutex running_;
};

}  // namespace edgeopt::runtime
