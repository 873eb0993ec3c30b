#include "safeclip/kernel/PixelOps.h"

#include <bit>

namespace safeclip::kernel {

MaskedImage cutout(const MaskedImage& src, const Box& box) {
    MaskedImage out;
    out.image = cutout(src.image, box);
    out.mask = cutout(src.mask, box);
    out.variance = cutout(src.variance, box);
    return out;
}

void scaleInPlace(MaskedImage& mi, float s) {
    const float s2 = s * s;
    auto& img = mi.image.data();
    auto& var = mi.variance.data();
    for (std::size_t k = 0; k < img.size(); ++k) {
        img[k] *= s;
        var[k] *= s2;
    }
}

void clearMaskBits(MaskImage& mask, MaskPixel bits) {
    if (bits == 0) {
        return;
    }
    for (MaskPixel& m : mask.data()) {
        m &= ~bits;
    }
}

void differenceRows(const MaskedImage& mean, const MaskedImage& clip, const Box& region, ImageF& dImage,
                    ImageF& dVar) {
    for (int y = region.y0; y < region.y1(); ++y) {
        const float* mi = mean.image.row(y) + (region.x0 - mean.box().x0);
        const float* ci = clip.image.row(y) + (region.x0 - clip.box().x0);
        const float* mv = mean.variance.row(y) + (region.x0 - mean.box().x0);
        const float* cv = clip.variance.row(y) + (region.x0 - clip.box().x0);
        float* di = dImage.row(y) + (region.x0 - dImage.box().x0);
        float* dv = dVar.row(y) + (region.x0 - dVar.box().x0);
        for (int k = 0; k < region.width; ++k) {
            di[k] = mi[k] - ci[k];
            dv[k] = mv[k] + cv[k];
        }
    }
}

std::int64_t countAccepted(const MaskedImage& warp, MaskPixel andMask, const Box& region, ImageU16& nImage) {
    std::int64_t used = 0;
    for (int y = region.y0; y < region.y1(); ++y) {
        const MaskPixel* m = warp.mask.row(y) + (region.x0 - warp.box().x0);
        const float* im = warp.image.row(y) + (region.x0 - warp.box().x0);
        std::uint16_t* n = nImage.row(y) + (region.x0 - nImage.box().x0);
        std::int32_t rowUsed = 0;  // branch-free, so that the loop vectorises
        for (int k = 0; k < region.width; ++k) {
            const std::int32_t good = (m[k] & andMask) == 0 ? 1 : 0;
            const std::int32_t finite =
                (std::bit_cast<std::uint32_t>(im[k]) & 0x7fffffffU) < 0x7f800000U ? 1 : 0;
            n[k] = static_cast<std::uint16_t>(n[k] + good);
            rowUsed += good & finite;
        }
        used += rowUsed;
    }
    return used;
}

}  // namespace safeclip::kernel
