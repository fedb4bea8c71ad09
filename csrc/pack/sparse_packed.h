// Packed block-sparse weights: one plain byte buffer with the common 64-byte header.
//
//   fp32 (format kPackFormatF32Sparse):  [header][f32 bias x n_padded][row_ptr][kidx][values]
//   int8 (format kPackFormatQs8Sparse):  [header][i32 colsum x n_padded][f32 scale x n_padded]
//                                        [f32 bias x n_padded][row_ptr][kidx][values]
//   row_ptr: u32 x (n_padded / nb + 1), block row g holds blocks row_ptr[g] .. row_ptr[g+1] - 1
//   kidx:    u32 x nnz, each block's first k (multiple of kr, strictly increasing within a block row)
//   values:  nnz blocks of nb * kr weights in the layout of ukernels/spgemm.h
// Header: nr = nb (block columns: 8 or 16), kr = k per block (fp32 1, int8 4), reserved0 = nnz blocks.
// Each section starts on a 64-byte boundary. A block is stored when any of its weights is non-zero.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pack/pack_header.h"

namespace edgeopt {

constexpr uint32_t kPackFormatF32Sparse = 0x5332;  // "S2": fp32 block-sparse, nb x 1 blocks
constexpr uint32_t kPackFormatQs8Sparse = 0x5338;  // "S8": int8 block-sparse, nb x 4 blocks (c4)
constexpr size_t kSparseMaxDim = size_t(1) << 24;

struct SparsePackedView {
  PackHeader header;
  bool is_int8;
  const int32_t* colsum;  // int8 only
  const float* scale;     // int8 only
  const float* bias;
  const uint32_t* row_ptr;
  const uint32_t* kidx;
  const void* values;     // const float* or const int8_t*
  size_t n() const { return header.n; }
  size_t k() const { return header.k; }
  size_t k_padded() const { return header.k_padded; }
  size_t n_padded() const { return header.n_padded; }
  size_t nb() const { return header.nr; }
  size_t kr() const { return header.kr; }
  size_t nnz() const { return header.reserved0; }
  size_t block_rows() const { return header.n_padded / header.nr; }
  size_t block_elems() const { return size_t(header.nr) * header.kr; }
};

// Size of the buffer for weights w (n x k row-major, float or int8 by is_int8) in nb-column blocks.
size_t sparse_packed_size(bool is_int8, const void* w, size_t n, size_t k, size_t nb);
// int8: w in [-63, 63], scale n positive finite values; fp32: finite weights. bias: n values or nullptr.
// Throws std::invalid_argument on bad dims, block width, values or buffer size.
void pack_sparse_weights(bool is_int8, const void* w, const float* scale, const float* bias, size_t n, size_t k,
                         size_t nb, uint8_t* out, size_t out_bytes);
// Validates the header and the section sizes against the buffer; throws std::invalid_argument.
SparsePackedView view_sparse_packed(const uint8_t* buf, size_t bytes);
// What the header cannot say (O(size)): row_ptr monotone, kidx increasing and in range, weights in range
// and finite, padding zero, colsums consistent, scales positive. For buffers loaded from files.
void validate_sparse_contents(const SparsePackedView& v);
// Back to dense: w n x k (float or int8), scale n (int8 only; may be nullptr for fp32), bias n.
void unpack_sparse_weights(const SparsePackedView& v, void* w, float* scale, float* bias);

}  // namespace edgeopt
