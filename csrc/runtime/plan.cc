#include "runtime/plan.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "ops/parallel.h"

namespace edgeopt::runtime {
namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("edgeopt plan: " + what); }

inline uint64_t now_ns() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

// A helper thread pays off for an input copy from about this many bytes (as max pooling).
constexpr size_t kCopyBytesPerThread = 256 * 1024;

// Element strides of the caller's tensor in NHWC order (n, h, w, c); size-1 dimensions do not matter.
bool nhwc_contiguous(const ExternalTensor& t) {
  const Shape s = shape_of(t);
  int64_t sn, sh, sw, sc;
  if (t.ndim == 4) {
    sn = t.strides[0], sc = t.strides[1], sh = t.strides[2], sw = t.strides[3];
  } else {
    sn = t.strides[0], sc = t.strides[1], sh = 0, sw = 0;
  }
  return (s.c == 1 || sc == 1) && (s.w == 1 || sw == int64_t(s.c)) && (s.h == 1 || sh == int64_t(s.w * s.c)) &&
         (s.n == 1 || sn == int64_t(s.h * s.w * s.c));
}

// One image row into NHWC: dst[x * c + ch] = row[x * sw + ch * sc]. Channel-planar rows (NCHW: sw == 1)
// read each plane's row in order, so the loads stream and only the stores are strided.
template <class T>
void gather_row(const T* row, int64_t sw, int64_t sc, size_t w, size_t c, T* dst) {
  if (sw == 1) {
    for (size_t ch = 0; ch < c; ++ch) {
      const T* plane = row + int64_t(ch) * sc;
      for (size_t x = 0; x < w; ++x) dst[x * c + ch] = plane[x];
    }
    return;
  }
  for (size_t x = 0; x < w; ++x)
    for (size_t ch = 0; ch < c; ++ch) dst[x * c + ch] = row[int64_t(x) * sw + int64_t(ch) * sc];
}

}  // namespace

Shape shape_of(const ExternalTensor& t) {
  if (t.ndim == 4) return Shape{size_t(t.dims[0]), size_t(t.dims[2]), size_t(t.dims[3]), size_t(t.dims[1])};
  return Shape{size_t(t.dims[0]), 1, 1, size_t(t.dims[1])};
}

size_t dtype_size(DType t) { return t == DType::kU8 ? 1 : 4; }
const char* dtype_name(DType t) { return t == DType::kU8 ? "uint8" : "float32"; }

std::string Shape::str() const {
  return "(" + std::to_string(n) + ", " + std::to_string(h) + ", " + std::to_string(w) + ", " + std::to_string(c) +
         ") NHWC";
}

ValueId Plan::add_input(DType dtype, int ndim, std::string name) {
  if (!nodes_.empty()) bad("inputs must be added before the first node");
  if (ndim != 2 && ndim != 4) bad("an input is 4-D (an image) or 2-D (rows)");
  Value v{dtype, std::move(name)};
  v.is_input = true;
  v.input_ndim = ndim;
  values_.push_back(v);
  inputs_.push_back(values_.size() - 1);
  set_up_ = false;
  return values_.size() - 1;
}

ValueId Plan::add_node(std::unique_ptr<Node> node, DType out_dtype) {
  for (ValueId v : node->inputs)
    if (v >= values_.size()) bad(node->name + ": input value " + std::to_string(v) + " does not exist");
  values_.push_back(Value{out_dtype, node->name});
  node->output = values_.size() - 1;
  nodes_.push_back(std::move(node));
  node_ns_.push_back(0);
  node_runs_.push_back(0);
  set_up_ = false;
  return values_.size() - 1;
}

void Plan::mark_output(ValueId v) {
  if (v >= values_.size()) bad("output value " + std::to_string(v) + " does not exist");
  if (values_[v].is_input) bad("an input cannot also be an output of the same plan");
  if (std::find(outputs_.begin(), outputs_.end(), v) != outputs_.end()) bad("value is already an output");
  outputs_.push_back(v);
  set_up_ = false;
}

DType Plan::dtype(ValueId v) const {
  if (v >= values_.size()) bad("value " + std::to_string(v) + " does not exist");
  return values_[v].dtype;
}

std::vector<Shape> Plan::infer_all(const std::vector<Shape>& input_shapes) const {
  if (input_shapes.size() != inputs_.size())
    bad("expected " + std::to_string(inputs_.size()) + " inputs, got " + std::to_string(input_shapes.size()));
  if (outputs_.empty()) bad("the plan has no outputs");
  std::vector<Shape> shapes(values_.size());
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const Shape& s = input_shapes[i];
    if (s.elements() == 0) bad("input " + values_[inputs_[i]].name + " is empty: " + s.str());
    if (values_[inputs_[i]].input_ndim == 2 && (s.h != 1 || s.w != 1))
      bad("input " + values_[inputs_[i]].name + " is rows (n, features), got " + s.str());
    shapes[inputs_[i]] = s;
  }
  std::vector<Shape> in;
  for (const auto& node : nodes_) {
    in.clear();
    for (ValueId v : node->inputs) in.push_back(shapes[v]);
    shapes[node->output] = node->infer_shape(in);
  }
  return shapes;
}

std::vector<Shape> Plan::infer_output_shapes(const std::vector<Shape>& input_shapes) const {
  const std::vector<Shape> shapes = infer_all(input_shapes);
  std::vector<Shape> out;
  for (ValueId v : outputs_) out.push_back(shapes[v]);
  return out;
}

std::vector<Shape> Plan::setup(const std::vector<Shape>& input_shapes) {
  const std::vector<Shape> shapes = infer_all(input_shapes);
  for (size_t v = 0; v < values_.size(); ++v) values_[v].shape = shapes[v];

  // Lifetimes in node indices: from the producer (inputs: before node 0) to the last consumer.
  std::vector<size_t> first(values_.size(), 0), last(values_.size(), 0);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    first[nodes_[i]->output] = last[nodes_[i]->output] = i;
    for (ValueId v : nodes_[i]->inputs) last[v] = std::max(last[v], i);
  }
  // Every value has a slot except the outputs (written straight into the caller's buffers); an input's
  // slot is used only when the caller's tensor is not NHWC-contiguous.
  std::vector<ArenaRequest> requests;
  for (size_t v = 0; v < values_.size(); ++v) {
    values_[v].arena_slot = requests.size();
    const bool is_output = std::find(outputs_.begin(), outputs_.end(), v) != outputs_.end();
    requests.push_back({is_output ? 0 : shapes[v].elements() * dtype_size(values_[v].dtype), first[v], last[v]});
  }
  layout_ = plan_arena(requests);
  arena_.reserve(layout_.total_bytes);

  ios_.assign(nodes_.size(), NodeIO{});
  for (size_t i = 0; i < nodes_.size(); ++i) {
    NodeIO& io = ios_[i];
    for (ValueId v : nodes_[i]->inputs) io.in_shapes.push_back(shapes[v]);
    io.in.assign(nodes_[i]->inputs.size(), nullptr);
    io.out_shape = shapes[nodes_[i]->output];
  }
  setup_inputs_ = input_shapes;
  setup_outputs_.clear();
  for (ValueId v : outputs_) setup_outputs_.push_back(shapes[v]);
  set_up_ = true;
  return setup_outputs_;
}

std::vector<Shape> Plan::reshape(const std::vector<Shape>& input_shapes) {
  std::lock_guard<std::mutex> lock(running_);
  if (set_up_ && input_shapes == setup_inputs_) return setup_outputs_;
  return setup(input_shapes);
}

void Plan::bind_input(size_t i, const ExternalTensor& t, uint8_t* arena, std::vector<void*>& data, int num_threads) {
  const ValueId v = inputs_[i];
  if (nhwc_contiguous(t)) {
    data[v] = const_cast<void*>(t.data);
    return;
  }
  const uint64_t t0 = now_ns();
  // A strided gather into the value's slot, one (n, y) image row per step.
  const Shape s = shape_of(t);
  const size_t elem = dtype_size(values_[v].dtype);
  uint8_t* dst = arena + layout_.offsets[values_[v].arena_slot];
  const int64_t sn = t.strides[0], sc = t.strides[1], sh = t.ndim == 4 ? t.strides[2] : 0,
                sw = t.ndim == 4 ? t.strides[3] : 0;
  const auto* src = static_cast<const uint8_t*>(t.data);
  const size_t rows = s.n * s.h, bytes = s.elements() * elem;
  const int threads = std::max(1, int(std::min<size_t>(size_t(num_threads), bytes / kCopyBytesPerThread)));
  parallel_for(rows, threads, [&](size_t r) {
    const size_t n = r / s.h, y = r % s.h;
    const uint8_t* row = src + (int64_t(n) * sn + int64_t(y) * sh) * int64_t(elem);
    if (elem == 4) {
      gather_row(reinterpret_cast<const float*>(row), sw, sc, s.w, s.c, reinterpret_cast<float*>(dst) + r * s.w * s.c);
    } else {
      gather_row(row, sw, sc, s.w, s.c, dst + r * s.w * s.c);
    }
  });
  data[v] = dst;
  input_copy_ns_[i] += now_ns() - t0;
  ++input_copy_runs_[i];
}

void Plan::run(const std::vector<ExternalTensor>& inputs, const std::vector<void*>& outputs, int num_threads) {
  std::lock_guard<std::mutex> lock(running_);
  const uint64_t start = now_ns();
  if (inputs.size() != inputs_.size())
    bad("expected " + std::to_string(inputs_.size()) + " inputs, got " + std::to_string(inputs.size()));
  if (outputs.size() != outputs_.size())
    bad("expected " + std::to_string(outputs_.size()) + " outputs, got " + std::to_string(outputs.size()));
  std::vector<Shape> shapes(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ExternalTensor& t = inputs[i];
    const Value& v = values_[inputs_[i]];
    if (t.ndim != v.input_ndim)
      bad("input " + v.name + " must be " + std::to_string(v.input_ndim) + "-D, got " + std::to_string(t.ndim) + "-D");
    if (t.dtype != v.dtype)
      bad("input " + v.name + " must be " + dtype_name(v.dtype) + ", got " + dtype_name(t.dtype));
    if (t.data == nullptr) bad("input " + v.name + " has no data");
    shapes[i] = shape_of(t);
  }
  if (!set_up_ || shapes != setup_inputs_) setup(shapes);
  input_copy_ns_.resize(inputs_.size(), 0);
  input_copy_runs_.resize(inputs_.size(), 0);

  uint8_t* arena = arena_.reserve(layout_.total_bytes);
  std::vector<void*> data(values_.size(), nullptr);
  for (size_t v = 0; v < values_.size(); ++v) data[v] = arena + layout_.offsets[values_[v].arena_slot];
  for (size_t j = 0; j < outputs_.size(); ++j) {
    if (outputs[j] == nullptr) bad("output " + std::to_string(j) + " has no buffer");
    data[outputs_[j]] = outputs[j];
  }
  {
    ParallelRegion region(num_threads);
    for (size_t i = 0; i < inputs.size(); ++i) bind_input(i, inputs[i], arena, data, num_threads);
    for (size_t i = 0; i < nodes_.size(); ++i) {
      const Node& node = *nodes_[i];
      NodeIO& io = ios_[i];
      for (size_t k = 0; k < node.inputs.size(); ++k) io.in[k] = data[node.inputs[k]];
      io.out = data[node.output];
      io.num_threads = num_threads;
      const uint64_t t0 = now_ns();
      node.run(io);
      node_ns_[i] += now_ns() - t0;
      ++node_runs_[i];
    }
  }
  run_ns_ += now_ns() - start;
  ++runs_;
}

std::vector<NodeTime> Plan::node_times() const {
  std::vector<NodeTime> out;
  for (size_t i = 0; i < inputs_.size() && i < input_copy_ns_.size(); ++i) {
    if (input_copy_runs_[i] == 0) continue;
    out.push_back({values_[inputs_[i]].name, "to_nhwc", input_copy_ns_[i], input_copy_runs_[i], 0.0});
  }
  for (size_t i = 0; i < nodes_.size(); ++i) {
    NodeTime t{nodes_[i]->name, nodes_[i]->op(), node_ns_[i], node_runs_[i], 0.0};
    if (set_up_) t.macs = nodes_[i]->macs(ios_[i].in_shapes, ios_[i].out_shape);
    out.push_back(t);
  }
  return out;
}

void Plan::reset_times() {
  std::lock_guard<std::mutex> lock(running_);
  std::fill(node_ns_.begin(), node_ns_.end(), 0);
  std::fill(node_runs_.begin(), node_runs_.end(), 0);
  std::fill(input_copy_ns_.begin(), input_copy_ns_.end(), 0);
  std::fill(input_copy_runs_.begin(), input_copy_runs_.end(), 0);
  run_ns_ = runs_ = 0;
}

}  // namespace edgeopt::runtime
