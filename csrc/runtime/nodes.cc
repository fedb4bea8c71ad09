#include "runtime/nodes.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "ops/gavgpool.h"
#include "ops/maxpool.h"
#include "ops/parallel.h"
#include "ops/qdwconv.h"
#include "ops/qlinear.h"

namespace edgeopt::runtime {
namespace {

[[noreturn]] void bad_shape(const std::string& what) { throw std::invalid_argument("edgeopt plan: " + what); }

OutKind out_kind(DType t) { return t == DType::kU8 ? OutKind::kU8 : OutKind::kF32; }

// Fills the shape-independent fields of an int8 call (QConvCall / QLinearCall) and its input pointer.
template <class Call>
void fill_quant_call(Call& call, const QuantIO& q, const void* x, void* out, int threads) {
  if (q.in_dtype == DType::kU8) {
    call.x_u8 = static_cast<const uint8_t*>(x);
  } else {
    call.x_f32 = static_cast<const float*>(x);
  }
  call.dynamic = q.dynamic;
  call.x_params = q.x_params;
  call.out_min = q.out_min;
  call.out_max = q.out_max;
  call.out_kind = out_kind(q.out_dtype);
  call.out_params = q.out_params;
  call.out = out;
  call.num_threads = threads;
}

class QConvNode : public Node {
 public:
  QConvNode(std::vector<Qs8PackedView> group_weights, const QdwPackedView* dw, size_t groups, const ConvWindow& win,
            const QuantIO& q, bool has_residual)
      : groups_(groups), weights_(std::move(group_weights)), depthwise_(dw != nullptr), win_(win), q_(q),
        has_residual_(has_residual) {
    if (depthwise_) {
      dw_ = *dw;
      out_c_ = dw_.channels();
    } else {
      if (weights_.empty() || weights_.size() != groups_) bad_shape("a conv needs one weight pack per group");
      out_c_ = weights_[0].n() * groups_;
    }
  }

  const char* op() const override { return depthwise_ ? "qdwconv2d" : "qconv2d"; }

  ConvGeometry geometry(const Shape& x) const {
    ConvGeometry g;
    g.batch = x.n;
    g.in_h = x.h;
    g.in_w = x.w;
    g.in_c = x.c;
    g.out_c = out_c_;
    g.kernel_h = win_.kernel_h;
    g.kernel_w = win_.kernel_w;
    g.stride_h = win_.stride_h;
    g.stride_w = win_.stride_w;
    g.pad_h = win_.pad_h;
    g.pad_w = win_.pad_w;
    g.dilation_h = win_.dilation_h;
    g.dilation_w = win_.dilation_w;
    g.groups = depthwise_ ? x.c : groups_;
    return g;
  }

  Shape infer_shape(const std::vector<Shape>& in) const override {
    const Shape& x = in[0];
    const size_t taps = win_.kernel_h * win_.kernel_w;
    if (depthwise_) {
      if (x.c != dw_.channels())
        bad_shape(name + ": depthwise weights are for " + std::to_string(dw_.channels()) + " channels, the input " +
                  x.str() + " has " + std::to_string(x.c));
    } else if (x.c % groups_ != 0 || weights_[0].k() != taps * (x.c / groups_)) {
      bad_shape(name + ": weights expect " + std::to_string(weights_[0].k() / taps * groups_) +
                " input channels, the input " + x.str() + " has " + std::to_string(x.c));
    }
    const ConvGeometry g = geometry(x);
    if (g.out_h() == 0 || g.out_w() == 0)
      bad_shape(name + ": input " + x.str() + " is smaller than the (dilated) kernel even with padding");
    const Shape out{x.n, g.out_h(), g.out_w(), out_c_};
    if (has_residual_ && in[1] != out)
      bad_shape(name + ": the residual " + in[1].str() + " does not have the output's shape " + out.str());
    return out;
  }

  void run(const NodeIO& io) const override {
    QConvCall call;
    call.g = geometry(io.in_shapes[0]);
    fill_quant_call(call, q_, io.in[0], io.out, io.num_threads);
    if (has_residual_) call.residual = static_cast<const float*>(io.in[1]);
    if (depthwise_) {
      qdwconv2d(dw_, call);
    } else {
      qconv2d(weights_.data(), call);
    }
  }

  double macs(const std::vector<Shape>& in, const Shape& out) const override {
    const double k = double(win_.kernel_h * win_.kernel_w) * double(depthwise_ ? 1 : in[0].c / groups_);
    return double(out.elements()) * k;
  }

 private:
  size_t groups_;
  std::vector<Qs8PackedView> weights_;
  bool depthwise_;
  QdwPackedView dw_{};
  size_t out_c_ = 0;
  ConvWindow win_;
  QuantIO q_;
  bool has_residual_;
};

class QLinearNode : public Node {
 public:
  QLinearNode(const Qs8PackedView& w, const QuantIO& q) : w_(w), q_(q) {}
  const char* op() const override { return "qlinear"; }

  Shape infer_shape(const std::vector<Shape>& in) const override {
    const Shape& x = in[0];
    if (x.h != 1 || x.w != 1 || x.c != w_.k())
      bad_shape(name + ": expects rows of " + std::to_string(w_.k()) + " features, got " + x.str());
    return Shape{x.n, 1, 1, w_.n()};
  }

  void run(const NodeIO& io) const override {
    QLinearCall call;
    fill_quant_call(call, q_, io.in[0], io.out, io.num_threads);
    call.m = io.in_shapes[0].n;
    call.x_stride = w_.k();
    call.out_stride = w_.n();
    qlinear(w_, call);
  }

  double macs(const std::vector<Shape>& in, const Shape&) const override {
    return double(in[0].n) * double(w_.n()) * double(w_.k());
  }

 private:
  Qs8PackedView w_;
  QuantIO q_;
};

class MaxPoolNode : public Node {
 public:
  MaxPoolNode(const ConvWindow& win, bool ceil_mode, DType dtype) : win_(win), ceil_mode_(ceil_mode), dtype_(dtype) {}
  const char* op() const override { return "max_pool2d"; }

  Shape infer_shape(const std::vector<Shape>& in) const override {
    const Shape& x = in[0];
    // torch's rule: an output size below 1 is an error, and so is a window left entirely in the padding.
    const auto axis = [&](size_t size, size_t k, size_t s, size_t p, size_t d) {
      const size_t span = d * (k - 1) + 1;
      if (size + 2 * p < span) bad_shape(name + ": input " + x.str() + " is smaller than the pooling window");
      const size_t o = pool_output_size(size, k, s, p, d, ceil_mode_);
      if (o == 0 || first_empty_window(size, o, k, s, p, d) != o)
        bad_shape(name + ": input " + x.str() + " leaves a pooling window entirely outside it");
      return o;
    };
    return Shape{x.n, axis(x.h, win_.kernel_h, win_.stride_h, win_.pad_h, win_.dilation_h),
                 axis(x.w, win_.kernel_w, win_.stride_w, win_.pad_w, win_.dilation_w), x.c};
  }

  void run(const NodeIO& io) const override {
    const Shape& x = io.in_shapes[0];
    MaxPoolCall call;
    call.batch = x.n;
    call.in_h = x.h;
    call.in_w = x.w;
    call.channels = x.c;
    call.out_h = io.out_shape.h;
    call.out_w = io.out_shape.w;
    call.kernel_h = win_.kernel_h;
    call.kernel_w = win_.kernel_w;
    call.stride_h = win_.stride_h;
    call.stride_w = win_.stride_w;
    call.pad_h = win_.pad_h;
    call.pad_w = win_.pad_w;
    call.dilation_h = win_.dilation_h;
    call.dilation_w = win_.dilation_w;
    call.u8 = dtype_ == DType::kU8;
    call.x = io.in[0];
    call.out = io.out;
    call.num_threads = io.num_threads;
    maxpool2d_nhwc(call);
  }

 private:
  ConvWindow win_;
  bool ceil_mode_;
  DType dtype_;
};

class GlobalAvgPoolNode : public Node {
 public:
  GlobalAvgPoolNode(U8QuantParams x_params, DType out_dtype, U8QuantParams out_params)
      : x_params_(x_params), out_dtype_(out_dtype), out_params_(out_params) {}
  const char* op() const override { return "global_avg_pool2d"; }

  Shape infer_shape(const std::vector<Shape>& in) const override {
    const Shape& x = in[0];
    if (x.h * x.w > kGAvgPoolMaxPixels)
      bad_shape(name + ": images of more than " + std::to_string(kGAvgPoolMaxPixels) + " pixels are not supported");
    return Shape{x.n, 1, 1, x.c};
  }

  void run(const NodeIO& io) const override {
    const Shape& x = io.in_shapes[0];
    GlobalAvgPoolCall call;
    call.batch = x.n;
    call.pixels = x.h * x.w;
    call.channels = x.c;
    call.x = static_cast<const uint8_t*>(io.in[0]);
    call.x_params = x_params_;
    call.out_kind = out_kind(out_dtype_);
    call.out_params = out_params_;
    call.out = io.out;
    call.num_threads = io.num_threads;
    global_avgpool_nhwc(call);
  }

 private:
  U8QuantParams x_params_;
  DType out_dtype_;
  U8QuantParams out_params_;
};

class FlattenNode : public Node {
 public:
  explicit FlattenNode(DType dtype) : elem_(dtype_size(dtype)) {}
  const char* op() const override { return "flatten"; }
  Shape infer_shape(const std::vector<Shape>& in) const override {
    const Shape& x = in[0];
    return Shape{x.n, 1, 1, x.c * x.h * x.w};
  }
  void run(const NodeIO& io) const override {
    const Shape& x = io.in_shapes[0];
    const auto* src = static_cast<const uint8_t*>(io.in[0]);
    auto* dst = static_cast<uint8_t*>(io.out);
    const size_t hw = x.h * x.w;
    if (hw == 1 || x.c == 1) {  // NHWC bytes are already in (c, h, w) order
      std::memcpy(dst, src, x.elements() * elem_);
      return;
    }
    for (size_t n = 0; n < x.n; ++n) {
      for (size_t p = 0; p < hw; ++p) {
        const uint8_t* s = src + (n * hw + p) * x.c * elem_;
        for (size_t c = 0; c < x.c; ++c) std::memcpy(dst + ((n * x.c + c) * hw + p) * elem_, s + c * elem_, elem_);
      }
    }
  }

 private:
  size_t elem_;
};

}  // namespace

double Node::macs(const std::vector<Shape>&, const Shape&) const { return 0.0; }

size_t pool_output_size(size_t in, size_t kernel, size_t stride, size_t pad, size_t dilation, bool ceil_mode) {
  const std::ptrdiff_t span = std::ptrdiff_t(in + 2 * pad) - std::ptrdiff_t(dilation * (kernel - 1)) - 1;
  if (span < 0) return 0;
  size_t out = (size_t(span) + (ceil_mode ? stride - 1 : 0)) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;  // the last window would start in the padding
  return out;
}

std::unique_ptr<Node> make_qconv_node(std::vector<Qs8PackedView> group_weights, size_t groups, const ConvWindow& win,
                                      const QuantIO& q, bool has_residual) {
  return std::make_unique<QConvNode>(std::move(group_weights), nullptr, groups, win, q, has_residual);
}

std::unique_ptr<Node> make_qdwconv_node(const QdwPackedView& weights, const ConvWindow& win, const QuantIO& q,
                                        bool has_residual) {
  return std::make_unique<QConvNode>(std::vector<Qs8PackedView>{}, &weights, 1, win, q, has_residual);
}

std::unique_ptr<Node> make_qlinear_node(const Qs8PackedView& weights, const QuantIO& q) {
  return std::make_unique<QLinearNode>(weights, q);
}

std::unique_ptr<Node> make_maxpool_node(const ConvWindow& win, bool ceil_mode, DType dtype) {
  return std::make_unique<MaxPoolNode>(win, ceil_mode, dtype);
}

std::unique_ptr<Node> make_global_avgpool_node(U8QuantParams x_params, DType out_dtype, U8QuantParams out_params) {
  return std::make_unique<GlobalAvgPoolNode>(x_params, out_dtype, out_params);
}

std::unique_ptr<Node> make_flatten_node(DType dtype) { return std::make_unique<FlattenNode>(dtype); }

}  // namespace edgeopt::runtime
