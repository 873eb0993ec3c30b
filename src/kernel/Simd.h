#pragma once
/// @file Simd.h  (kernel-internal) Whether the AVX2 twins of the kernel's loops run. Both twins do
/// the same IEEE operations in the same order, so they give the same bits.

namespace safeclip::kernel::detail {

/// True when the CPU has AVX2 and SAFECLIP_NO_AVX2 is unset, empty or "0" (read once).
bool useAvx2();

}  // namespace safeclip::kernel::detail
