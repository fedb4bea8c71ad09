#include "pack/sparse_packed.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "pack/qs8_packed.h"
#include "ukernels/qgemm.h"
#include "ukernels/spgemm.h"

namespace edgeopt {
namespace {

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

struct Layout {
  size_t n_padded, k_padded, kr, colsum, scale, bias, row_ptr, kidx, values, total;
};

Layout layout_for(bool is_int8, size_t n, size_t k, size_t nb, size_t nnz) {
  Layout l{};
  l.kr = is_int8 ? kSpQKr : kSpF32Kr;
  l.n_padded = round_up(n, nb);
  l.k_padded = round_up(k, l.kr);
  size_t off = sizeof(PackHeader);
  if (is_int8) {
    l.colsum = off;
    off += 4 * l.n_padded;
    l.scale = off;
    off += 4 * l.n_padded;
  }
  l.bias = off;
  off = round_up(off + 4 * l.n_padded, 64);
  l.row_ptr = off;
  off = round_up(off + 4 * (l.n_padded / nb + 1), 64);
  l.kidx = off;
  off = round_up(off + 4 * nnz, 64);
  l.values = off;
  l.total = off + nnz * nb * l.kr * (is_int8 ? 1 : 4);
  return l;
}

void check_dims(size_t n, size_t k, size_t nb) {
  if (n == 0 || k == 0) throw std::invalid_argument("edgeopt: cannot pack an empty weight matrix");
  if (n > kSparseMaxDim || k > kSparseMaxDim) throw std::invalid_argument("edgeopt: weight matrix too large to pack");
  if (nb != 8 && nb != 16) throw std::invalid_argument("edgeopt: sparse block width must be 8 or 16 columns, got " +
                                                       std::to_string(nb));
}

template <class T>
bool block_nonzero(const T* w, size_t n, size_t k, size_t j0, size_t nb, size_t k0, size_t kr) {
  for (size_t j = j0; j < j0 + nb && j < n; ++j)
    for (size_t kk = k0; kk < k0 + kr && kk < k; ++kk)
      if (w[j * k + kk] != T(0)) return true;
  return false;
}

// Number of stored blocks (any non-zero weight; -0.0f counts as zero).
size_t count_blocks(bool is_int8, const void* w, size_t n, size_t k, size_t nb) {
  const size_t kr = is_int8 ? kSpQKr : kSpF32Kr;
  size_t nnz = 0;
  for (size_t j0 = 0; j0 < n; j0 += nb)
    for (size_t k0 = 0; k0 < k; k0 += kr)
      nnz += is_int8 ? block_nonzero(static_cast<const int8_t*>(w), n, k, j0, nb, k0, kr)
                     : block_nonzero(static_cast<const float*>(w), n, k, j0, nb, k0, kr);
  return nnz;
}

}  // namespace

size_t sparse_packed_size(bool is_int8, const void* w, size_t n, size_t k, size_t nb) {
  check_dims(n, k, nb);
  return layout_for(is_int8, n, k, nb, count_blocks(is_int8, w, n, k, nb)).total;
}

void pack_sparse_weights(bool is_int8, const void* w, const float* scale, const float* bias, size_t n, size_t k,
                         size_t nb, uint8_t* out, size_t out_bytes) {
  check_dims(n, k, nb);
  if (is_int8) {
    const int8_t* wi = static_cast<const int8_t*>(w);
    for (size_t i = 0; i < n * k; ++i)
      if (wi[i] > kQGemmWeightMax || wi[i] < -kQGemmWeightMax)
        throw std::invalid_argument("edgeopt: weight " + std::to_string(int(wi[i])) + " at flat index " +
                                    std::to_string(i) + " is outside [-63, 63], the range the AVX2 kernel is exact for");
    if (k > kQs8MaxK) throw std::invalid_argument("edgeopt: in_features exceeds the int32-safe bound");
    for (size_t j = 0; j < n; ++j)
      if (!(std::isfinite(scale[j]) && scale[j] > 0.0f))
        throw std::invalid_argument("edgeopt: scale of output " + std::to_string(j) + " is not finite and positive");
  } else {
    const float* wf = static_cast<const float*>(w);
    for (size_t i = 0; i < n * k; ++i)
      if (!std::isfinite(wf[i])) throw std::invalid_argument("edgeopt: weight at flat index " + std::to_string(i) +
                                                             " is not finite");
  }
  if (bias)
    for (size_t j = 0; j < n; ++j)
      if (!std::isfinite(bias[j])) throw std::invalid_argument("edgeopt: bias " + std::to_string(j) + " is not finite");
  const size_t nnz = count_blocks(is_int8, w, n, k, nb);
  const Layout l = layout_for(is_int8, n, k, nb, nnz);
  if (out_bytes != l.total) throw std::invalid_argument("edgeopt: pack buffer has the wrong size");
  std::memset(out, 0, l.total);
  write_pack_header(out, {.format = is_int8 ? kPackFormatQs8Sparse : kPackFormatF32Sparse, .nr = uint32_t(nb),
                           .kr = uint32_t(l.kr), .n = uint32_t(n), .k = uint32_t(k), .n_padded = uint32_t(l.n_padded),
                           .k_padded = uint32_t(l.k_padded), .weight_max = uint32_t(is_int8 ? kQGemmWeightMax : 0),
                           .has_bias = bias != nullptr, .reserved0 = uint32_t(nnz), .total_bytes = l.total});
  float* bi = reinterpret_cast<float*>(out + l.bias);
  for (size_t j = 0; j < n; ++j) bi[j] = bias ? bias[j] : 0.0f;
  if (is_int8) {
    const int8_t* wi = static_cast<const int8_t*>(w);
    int32_t* colsum = reinterpret_cast<int32_t*>(out + l.colsum);
    float* sc = reinterpret_cast<float*>(out + l.scale);
    for (size_t j = 0; j < n; ++j) {
      int32_t s = 0;
      for (size_t kk = 0; kk < k; ++kk) s += wi[j * k + kk];
      colsum[j] = s;
      sc[j] = scale[j];
    }
  }
  uint32_t* row_ptr = reinterpret_cast<uint32_t*>(out + l.row_ptr);
  uint32_t* kidx = reinterpret_cast<uint32_t*>(out + l.kidx);
  size_t b = 0;
  for (size_t g = 0; g * nb < l.n_padded; ++g) {
    row_ptr[g] = uint32_t(b);
    const size_t j0 = g * nb;
    for (size_t k0 = 0; k0 < k; k0 += l.kr) {
      if (is_int8) {
        const int8_t* wi = static_cast<const int8_t*>(w);
        if (!block_nonzero(wi, n, k, j0, nb, k0, l.kr)) continue;
        int8_t* dst = reinterpret_cast<int8_t*>(out + l.values) + b * nb * l.kr;
        for (size_t j = j0; j < j0 + nb && j < n; ++j)
          for (size_t r = 0; r < l.kr && k0 + r < k; ++r) dst[spgemm_q_offset(j - j0, r)] = wi[j * k + k0 + r];
      } else {
        const float* wf = static_cast<const float*>(w);
        if (!block_nonzero(wf, n, k, j0, nb, k0, l.kr)) continue;
        float* dst = reinterpret_cast<float*>(out + l.values) + b * nb;
        for (size_t j = j0; j < j0 + nb && j < n; ++j) dst[j - j0] = wf[j * k + k0];
      }
      kidx[b++] = uint32_t(k0);
    }
  }
  row_ptr[l.n_padded / nb] = uint32_t(b);
  seal_pack(out, l.total);  // last: the checksum covers every byte written above
}

SparsePackedView view_sparse_packed(const uint8_t* buf, size_t bytes) {
  const PackHeader h = read_pack_header(buf, bytes);
  if (h.format != kPackFormatF32Sparse && h.format != kPackFormatQs8Sparse)
    bad_pack("format " + std::to_string(h.format) + " is not a block-sparse layout (fp32 " +
             std::to_string(kPackFormatF32Sparse) + " or int8 " + std::to_string(kPackFormatQs8Sparse) + ")");
  const bool is_int8 = h.format == kPackFormatQs8Sparse;
  if (h.nr != 8 && h.nr != 16) bad_pack("block width " + std::to_string(h.nr) + " is not 8 or 16");
  if (h.kr != uint32_t(is_int8 ? kSpQKr : kSpF32Kr)) bad_pack("block depth does not match the format");
  if (is_int8 && h.weight_max != uint32_t(kQGemmWeightMax))
    bad_pack("weights packed for range +-" + std::to_string(h.weight_max) + ", the kernels are exact only for +-" +
             std::to_string(kQGemmWeightMax));
  if (h.n == 0 || h.k == 0 || h.n > kSparseMaxDim || h.k > kSparseMaxDim) bad_pack("invalid dims");
  const size_t max_blocks = (size_t(h.n) + h.nr - 1) / h.nr * ((size_t(h.k) + h.kr - 1) / h.kr);
  if (h.reserved0 > max_blocks) bad_pack("more stored blocks than the matrix has");
  const Layout l = layout_for(is_int8, h.n, h.k, h.nr, h.reserved0);
  if (h.n_padded != l.n_padded || h.k_padded != l.k_padded || h.total_bytes != l.total || bytes != l.total)
    bad_pack("header dims (" + std::to_string(h.n) + " x " + std::to_string(h.k) + ", " +
             std::to_string(h.reserved0) + " blocks) do not match a buffer of " + std::to_string(bytes) + " bytes");
  if (reinterpret_cast<uintptr_t>(buf) % 4 != 0) bad_pack("buffer is not 4-byte aligned");
  SparsePackedView v{};
  v.header = h;
  v.is_int8 = is_int8;
  v.colsum = is_int8 ? reinterpret_cast<const int32_t*>(buf + l.colsum) : nullptr;
  v.scale = is_int8 ? reinterpret_cast<const float*>(buf + l.scale) : nullptr;
  v.bias = reinterpret_cast<const float*>(buf + l.bias);
  v.row_ptr = reinterpret_cast<const uint32_t*>(buf + l.row_ptr);
  v.kidx = reinterpret_cast<const uint32_t*>(buf + l.kidx);
  v.values = buf + l.values;
  // The kernels index by row_ptr (checked here, O(block rows), on every view) and kidx (clamped to the
  // last valid k inside the kernels, see ukernels/spgemm.h): a corrupt or since-modified buffer cannot
  // steer them out of bounds. Index order and range are checked in validate_sparse_contents.
  const size_t rows = v.block_rows();
  if (v.row_ptr[0] != 0 || v.row_ptr[rows] != h.reserved0) bad_pack("block row pointers do not span the blocks");
  uint32_t bad = 0;
  for (size_t g = 0; g < rows; ++g) bad |= uint32_t(v.row_ptr[g + 1] < v.row_ptr[g]);
  if (bad) bad_pack("block row pointers decrease");
  return v;
}

void validate_sparse_contents(const SparsePackedView& v) {
  const size_t n = v.n(), k = v.k(), nb = v.nb(), kr = v.kr();
  std::vector<int32_t> sums(n, 0);
  for (size_t g = 0; g < v.block_rows(); ++g) {
    for (size_t b = v.row_ptr[g]; b < v.row_ptr[g + 1]; ++b) {
      if (size_t(v.kidx[b]) + kr > v.k_padded()) bad_pack("block " + std::to_string(b) + "'s k index is out of range");
      if (v.kidx[b] % kr != 0 || (b > v.row_ptr[g] && v.kidx[b] <= v.kidx[b - 1]))
        bad_pack("block " + std::to_string(b) + " has a misaligned or unordered k index");
      for (size_t jj = 0; jj < nb; ++jj) {
        const size_t j = g * nb + jj;
        for (size_t r = 0; r < kr; ++r) {
          const size_t kk = v.kidx[b] + r;
          const bool pad = j >= n || kk >= k;
          if (v.is_int8) {
            const int w = static_cast<const int8_t*>(v.values)[b * nb * kr + spgemm_q_offset(jj, r)];
            if (pad && w != 0) bad_pack("non-zero padding weight in block " + std::to_string(b));
            if (w > kQGemmWeightMax || w < -kQGemmWeightMax)
              bad_pack("weight " + std::to_string(w) + " in block " + std::to_string(b) + " is outside [-63, 63]");
            if (!pad) sums[j] += w;
          } else {
            const float w = static_cast<const float*>(v.values)[b * nb + jj];
            if (pad && w != 0.0f) bad_pack("non-zero padding weight in block " + std::to_string(b));
            if (!std::isfinite(w)) bad_pack("weight in block " + std::to_string(b) + " is not finite");
          }
        }
      }
    }
  }
  for (size_t j = 0; j < v.n_padded(); ++j) {
    if (j >= n) {
      if (v.bias[j] != 0.0f) bad_pack("non-zero padding bias");
      continue;
    }
    if (!std::isfinite(v.bias[j])) bad_pack("bias of output " + std::to_string(j) + " is not finite");
    if (v.is_int8) {
      if (sums[j] != v.colsum[j]) bad_pack("column sum of output " + std::to_string(j) + " does not match its weights");
      if (!(std::isfinite(v.scale[j]) && v.scale[j] > 0.0f))
        bad_pack("scale of output " + std::to_string(j) + " is not finite and positive");
    }
  }
}

void unpack_sparse_weights(const SparsePackedView& v, void* w, float* scale, float* bias) {
  const size_t n = v.n(), k = v.k(), nb = v.nb(), kr = v.kr();
  std::memset(w, 0, n * k * (v.is_int8 ? 1 : 4));
  for (size_t g = 0; g < v.block_rows(); ++g)
    for (size_t b = v.row_ptr[g]; b < v.row_ptr[g + 1]; ++b)
      for (size_t jj = 0; jj < nb && g * nb + jj < n; ++jj)
        for (size_t r = 0; r < kr && v.kidx[b] + r < k; ++r) {
          const size_t j = g * nb + jj, kk = v.kidx[b] + r;
          if (v.is_int8)
            static_cast<int8_t*>(w)[j * k + kk] = static_cast<const int8_t*>(v.values)[b * nb * kr + spgemm_q_offset(jj, r)];
          else
            static_cast<float*>(w)[j * k + kk] = static_cast<const float*>(v.values)[b * nb + jj];
        }
  for (size_t j = 0; j < n; ++j) {
    bias[j] = v.bias[j];
    if (v.is_int8 && scale) scale[j] = v.scale[j];
  }
}

}  // namespace edgeopt
