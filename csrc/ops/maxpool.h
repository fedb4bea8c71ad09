// Max pooling on NHWC (channels-last) activations, u8 or f32: the pooling a quantized CNN runs between
// its int8 convs, without a trip back to NCHW or to float.
#pragma once

#include <cstddef>

namespace edgeopt {

struct MaxPoolCall {
  size_t batch = 0, in_h = 0, in_w = 0, channels = 0, out_h = 0, out_w = 0;
  size_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  size_t dilation_h = 1, dilation_w = 1;
  bool u8 = false;          // element type of x and out: uint8 or float32
  const void* x = nullptr;  // batch x in_h x in_w x channels, contiguous
  void* out = nullptr;      // batch x out_h x out_w x channels, contiguous
  int num_threads = 1;
};

// First output index (along one axis) whose window holds no input position, or `out` if every window
// holds at least one; the binding refuses such geometries.
size_t first_empty_window(size_t in, size_t out, size_t kernel, size_t stride, size_t pad, size_t dilation);

void maxpool2d_nhwc(const MaxPoolCall& call);

}  // namespace edgeopt
