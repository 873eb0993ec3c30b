/// @file Interp.cpp  Post-processing of the final coadd (spec §7.2.4-5, §8); see Interp.h for the
/// row-linear interpolation scheme (a documented deviation from the SDSS tables, spec §0.6).
#include "safeclip/kernel/Interp.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "safeclip/kernel/SampleStats.h"

namespace safeclip::kernel {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

/// Median of all finite image pixels (0 when there are none), clamped to >= 0 unless allowed:
/// sampleQuantiles at q = 0.5, i.e. interpolated at rank 0.5(n-1), the mean of the two middle
/// values (0.5·lo + 0.5·hi) for an even count.
double fallbackValue(const ImageF& image, bool negativeAllowed) {
    std::vector<float> finite;
    finite.reserve(image.data().size());
    for (const float v : image.data()) {
        if (std::isfinite(v)) {
            finite.push_back(v);
        }
    }
    if (finite.empty()) {
        return 0.0;
    }
    const double half[1] = {0.5};
    double fb = sampleQuantiles(finite, half)[0];
    if (!negativeAllowed) {
        fb = std::max(fb, 0.0);
    }
    return fb;
}

/// One line (a row, or a column with transpose) of the coadd as strided pointers.
struct Line {
    float* img;
    MaskPixel* msk;
    float* var;
    std::ptrdiff_t stride;
    int length;
};

/// Fill the NO_DATA pixels of one line. A maximal run of non-good pixels (NO_DATA or non-finite) is
/// bounded by its nearest good pixels; its NO_DATA pixels are filled linearly between them, or with
/// the fallback / nearest good value when the run touches an end of the line.
std::int64_t interpolateLine(const Line& ln, const PostBits& bits, const InterpControl& ctrl,
                             float fallback) {
    const auto at = [&ln](int i) { return static_cast<std::ptrdiff_t>(i) * ln.stride; };
    const auto isGood = [&](int i) {
        return (ln.msk[at(i)] & bits.noData) == 0 && std::isfinite(ln.img[at(i)]);
    };
    std::int64_t filled = 0;
    int i = 0;
    while (i < ln.length) {
        if (isGood(i)) {
            ++i;
            continue;
        }
        const int a = i;  // run [a, b) of non-good pixels
        while (i < ln.length && !isGood(i)) {
            ++i;
        }
        const int b = i;
        const bool haveLeft = a > 0;
        const bool haveRight = b < ln.length;
        const double xl = haveLeft ? static_cast<double>(ln.img[at(a - 1)]) : 0.0;
        const double xr = haveRight ? static_cast<double>(ln.img[at(b)]) : 0.0;
        for (int k = a; k < b; ++k) {
            const std::ptrdiff_t o = at(k);
            if ((ln.msk[o] & bits.noData) == 0) {
                continue;  // non-finite but not NO_DATA: not a defect
            }
            float value = fallback;
            if (haveLeft && haveRight) {
                const double t = static_cast<double>(k - (a - 1)) / static_cast<double>(b - (a - 1));
                value = static_cast<float>(xl + (xr - xl) * t);
            } else if (!ctrl.useFallbackValueAtEdge && (haveLeft || haveRight)) {
                value = static_cast<float>(haveLeft ? xl : xr);
            }
            ln.img[o] = value;
            ln.msk[o] |= bits.intrp;
            ln.var[o] = kInf;
            ++filled;
        }
    }
    return filled;
}

}  // namespace

PostResult postProcessCoadd(MaskedImage& coadd, const PostBits& bits, const InterpControl& ctrl) {
    PostResult result;
    auto& img = coadd.image.data();
    auto& msk = coadd.mask.data();
    auto& var = coadd.variance.data();
    const std::size_t npix = img.size();

    // §7.2.4 setInexactPsf, then §7.2.5 setCoaddEdgeBits.
    for (std::size_t p = 0; p < npix; ++p) {
        if ((msk[p] & bits.inexactSources) != 0) {
            msk[p] |= bits.inexactPsf;
        }
        if (var[p] == 0.0F) {
            msk[p] |= bits.noData;
        }
        if ((msk[p] & bits.noData) != 0) {
            ++result.nNoData;
        }
    }

    // §8.1 interpolation over NO_DATA.
    if (ctrl.enabled && bits.noData != 0) {
        result.fallbackValue = fallbackValue(coadd.image, ctrl.negativeFallbackAllowed);
        if (result.nNoData > 0) {
            const Box& box = coadd.box();
            const auto fb = static_cast<float>(result.fallbackValue);
            if (!ctrl.transpose) {
                for (int y = 0; y < box.height; ++y) {
                    const std::size_t off = static_cast<std::size_t>(y) * static_cast<std::size_t>(box.width);
                    const Line ln{img.data() + off, msk.data() + off, var.data() + off, 1, box.width};
                    result.nInterpolated += interpolateLine(ln, bits, ctrl, fb);
                }
            } else {
                for (int x = 0; x < box.width; ++x) {
                    const Line ln{img.data() + x, msk.data() + x, var.data() + x, box.width, box.height};
                    result.nInterpolated += interpolateLine(ln, bits, ctrl, fb);
                }
            }
        }
    }

    // §8.2 variance fix: NaN and <= 0 become +inf.
    for (float& v : var) {
        if (!(v > 0.0F)) {
            v = kInf;
        }
    }
    return result;
}

}  // namespace safeclip::kernel
