// Views of packed weight buffers handed in from Python, shared by the bindings that take them (qlinear,
// qconv, execution plans): a 1-D uint8 C-contiguous array whose header says its layout.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/validate.h"
#include "pack/pack_header.h"
#include "pack/qdw_packed.h"
#include "pack/qs8_packed.h"

namespace edgeopt::bind {

template <class F>
auto rethrow_as_value_error(F&& f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

inline const uint8_t* packed_bytes(const py::array& packed) {
  require_dtype<uint8_t>(packed, "packed weights");
  if (packed.ndim() != 1) value_error("packed weights must be a 1-D uint8 buffer");
  require_c_contiguous(packed, "packed weights");
  return static_cast<const uint8_t*>(packed.data());
}

inline Qs8PackedView qs8_view(const py::array& packed) {
  const uint8_t* buf = packed_bytes(packed);
  return rethrow_as_value_error([&] { return view_qs8_packed(buf, size_t(packed.size())); });
}

inline bool is_depthwise_pack(const py::array& packed) {
  const PackHeader h =
      rethrow_as_value_error([&] { return read_pack_header(packed_bytes(packed), size_t(packed.size())); });
  return h.format == kPackFormatQs8Dwconv32x2 || h.format == kPackFormatQs8Dwconv16x2Retired;
}

// A grouped conv's weights are `groups` s8 GEMM packs of equal size, back to back.
inline std::vector<Qs8PackedView> group_views(const py::array& packed, int64_t groups) {
  const uint8_t* buf = packed_bytes(packed);
  if (groups < 1) value_error("groups must be >= 1");
  const size_t total = size_t(packed.size());
  if (total % size_t(groups) != 0)
    value_error("packed conv weights do not split into " + std::to_string(groups) + " groups");
  const size_t each = total / size_t(groups);
  std::vector<Qs8PackedView> views;
  for (int64_t g = 0; g < groups; ++g)
    views.push_back(rethrow_as_value_error([&] { return view_qs8_packed(buf + size_t(g) * each, each); }));
  for (const auto& v : views)
    if (v.n() != views[0].n() || v.k() != views[0].k()) value_error("conv weight groups differ in shape");
  return views;
}

inline QdwPackedView dw_view(const py::array& packed) {
  return rethrow_as_value_error([&] { return view_qdw_packed(packed_bytes(packed), size_t(packed.size())); });
}

}  // namespace edgeopt::bind
