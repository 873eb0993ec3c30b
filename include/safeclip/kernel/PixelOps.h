#pragma once
/// @file PixelOps.h  Small whole-buffer pixel loops the patch pipeline applies between reads and
/// stacks (the orchestrator calls kernels; it does not loop over pixels itself).
#include <algorithm>
#include <cstdint>

#include "safeclip/kernel/Image.h"

namespace safeclip::kernel {

/// Copy of `box` (inside src.box()) out of a larger image.
template <typename T>
Image<T> cutout(const Image<T>& src, const Box& box) {
    Image<T> out(box);
    for (int y = box.y0; y < box.y1(); ++y) {
        std::copy_n(&src(box.x0, y), box.width, out.row(y));
    }
    return out;
}
MaskedImage cutout(const MaskedImage& src, const Box& box);

/// The zero-point scale in place, in float32 as upstream (MaskedImage *= s): image *= s,
/// variance *= s*s.
void scaleInPlace(MaskedImage& mi, float s);

/// Clear `bits` in every mask pixel (no-op for bits == 0).
void clearMaskBits(MaskImage& mask, MaskPixel bits);

/// Rows of `region` (inside all four images' boxes) of the SafeClip difference image:
/// dImage = mean - clip, dVar = meanVar + clipVar (spec §6.1).
void differenceRows(const MaskedImage& mean, const MaskedImage& clip, const Box& region, ImageF& dImage,
                    ImageF& dVar);

/// One warp's contribution to the final stack's exposure count over `region` (inside both
/// buffers' boxes): nImage += 1 where (mask & andMask) == 0. Returns the pixels it contributes to
/// the stack: unmasked and finite.
std::int64_t countAccepted(const MaskedImage& warp, MaskPixel andMask, const Box& region, ImageU16& nImage);

}  // namespace safeclip::kernel
