/// @file Interp.cpp  Post-processing of the final coadd (spec §7.2.4-5, §8); see Interp.h for the
/// interpolation scheme: row-linear in the interior (a documented deviation from the SDSS tables,
/// spec §0.6), upstream's edge extrapolation (nUseInterp = 6) at the ends of a line, and the variance
/// plane filled by the same procedure as the image.
#include "safeclip/kernel/Interp.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "safeclip/kernel/SampleStats.h"

namespace safeclip::kernel {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

/// Upstream's nUseInterp: at most this many pixels of an edge run, those nearest the data, are
/// extrapolated when the fallback is used at edges; the rest of the run takes the fallback value.
constexpr int kNumUseInterp = 6;

/// Edge extrapolation (upstream's LEFT/RIGHT/WIDE_LEFT/WIDE_RIGHT coefficients): a bad pixel at
/// distance d >= 1 from the data gets near[d-1]·g1 + far[d-1]·g2, where g1 is the good pixel next to
/// the run and g2 the one beyond it. From d = 7 on both weights are 0.5.
constexpr std::array<double, kNumUseInterp> kEdgeNear = {1.4288, 1.0933, 0.6968, 0.5370, 0.5041, 0.5003};
constexpr std::array<double, kNumUseInterp> kEdgeFar = {-0.4288, -0.0933, 0.3032, 0.4630, 0.4959, 0.4997};

/// The 6 pixels of a long edge run nearest the data, when the rest of the run holds the fallback
/// value: upstream re-classifies them as a 6-px defect between the fallback (f1 next to the run, f2
/// beyond) and the data (g1 next to the run, g2 beyond), type 01403 "##......##". Row k counts from
/// the fallback side (k = 0 next to f1) and holds the weights of {f2, f1, g1, g2}.
constexpr std::array<std::array<double, 4>, kNumUseInterp> kTaper = {{
    {-0.5177, 1.3400, 0.0891, 0.0886},
    {-0.2771, 0.9095, 0.1878, 0.1797},
    {0.0677, 0.4614, 0.2725, 0.1984},
    {0.1984, 0.2725, 0.4614, 0.0677},
    {0.1797, 0.1878, 0.9095, -0.2771},
    {0.0886, 0.0891, 1.3400, -0.5177},
}};
/// The same when only g1 is usable (g2 is another defect), type 01402 "##......#.": {f2, f1, g1}.
constexpr std::array<std::array<double, 3>, kNumUseInterp> kTaperOneGood = {{
    {-0.5125, 1.3452, 0.1673},
    {-0.2666, 0.9201, 0.3465},
    {0.0793, 0.4730, 0.4477},
    {0.2024, 0.2765, 0.5212},
    {0.1635, 0.1716, 0.6649},
    {0.0583, 0.0588, 0.8829},
}};

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

/// A maximal run [a, b) of non-good pixels, and whether a good pixel bounds it on each side.
struct Run {
    int a = 0;
    int b = 0;
    bool haveLeft = false;
    bool haveRight = false;
};

/// Fill the NO_DATA pixels of run `r` in one plane `p` (the image or the variance: the same
/// procedure for both, as upstream's do_defects runs on each plane). `isNoData(i)` tells which
/// pixels are filled; `usable(i)` whether pixel i may serve as the second pixel beyond the run.
template <class IsNoData, class Usable>
void fillRun(float* p, std::ptrdiff_t stride, int length, const Run& r, const InterpControl& ctrl,
             double fallback, const IsNoData& isNoData, const Usable& usable) {
    const auto at = [stride](int i) { return static_cast<std::ptrdiff_t>(i) * stride; };
    const auto put = [&](int k, double v) {
        if (isNoData(k)) {
            p[at(k)] = static_cast<float>(v);
        }
    };
    const int n = r.b - r.a;
    if (r.haveLeft && r.haveRight) {
        // Interior: linear between the nearest good pixels (deviation from the SDSS tables).
        const double xl = p[at(r.a - 1)];
        const double xr = p[at(r.b)];
        for (int k = r.a; k < r.b; ++k) {
            const double t = static_cast<double>(k - (r.a - 1)) / static_cast<double>(n + 1);
            put(k, xl + (xr - xl) * t);
        }
        return;
    }
    if (!r.haveLeft && !r.haveRight) {
        for (int k = r.a; k < r.b; ++k) {
            put(k, fallback);  // no information in this line
        }
        return;
    }
    // Edge run: walk it from the data side; d = distance from the data (1 = next to it), pos(d) the
    // pixel at that distance. g1 is the good pixel next to the run, g2 the one beyond it (if usable).
    const bool dataOnRight = r.haveRight;
    const int i1 = dataOnRight ? r.b : r.a - 1;
    const int i2 = dataOnRight ? r.b + 1 : r.a - 2;
    const bool haveG2 = i2 >= 0 && i2 < length && usable(i2);
    const double g1 = p[at(i1)];
    const double g2 = haveG2 ? static_cast<double>(p[at(i2)]) : g1;
    const auto pos = [&](int d) { return dataOnRight ? r.b - d : r.a - 1 + d; };

    if (ctrl.useFallbackValueAtEdge && n > kNumUseInterp) {
        // The far part takes the fallback; the 6 pixels nearest the data taper from it to the data.
        for (int d = kNumUseInterp + 1; d <= n; ++d) {
            put(pos(d), fallback);
        }
        for (int d = 1; d <= kNumUseInterp; ++d) {
            const int k = kNumUseInterp - d;  // row from the fallback side
            double v = 0;
            if (haveG2) {
                const auto& c = kTaper[static_cast<std::size_t>(k)];
                v = c[0] * fallback + c[1] * fallback + c[2] * g1 + c[3] * g2;
            } else {
                const auto& c = kTaperOneGood[static_cast<std::size_t>(k)];
                v = c[0] * fallback + c[1] * fallback + c[2] * g1;
            }
            put(pos(d), v);
        }
        return;
    }
    for (int d = 1; d <= n; ++d) {
        double v = g1;  // only one good pixel usable: upstream's "?" types extend it
        if (haveG2) {
            const bool near = d <= kNumUseInterp;
            const double wn = near ? kEdgeNear[static_cast<std::size_t>(d - 1)] : 0.5;
            const double wf = near ? kEdgeFar[static_cast<std::size_t>(d - 1)] : 0.5;
            v = wn * g1 + wf * g2;
        }
        put(pos(d), v);
    }
}

/// Fill the NO_DATA pixels of one line. A maximal run of non-good pixels (NO_DATA or non-finite) is
/// bounded by its nearest good pixels; see fillRun for how its NO_DATA pixels are filled in the image
/// and then, by the same procedure, in the variance.
std::int64_t interpolateLine(const Line& ln, const PostBits& bits, const InterpControl& ctrl,
                             double fallback) {
    const auto at = [&ln](int i) { return static_cast<std::ptrdiff_t>(i) * ln.stride; };
    const auto isNoData = [&](int i) { return (ln.msk[at(i)] & bits.noData) != 0; };
    const auto isGood = [&](int i) { return !isNoData(i) && std::isfinite(ln.img[at(i)]); };
    // A pixel beyond the good neighbour of an edge run is usable when it is good, or when it is a
    // NO_DATA pixel of an earlier run (already filled: upstream reads the filled value, since it
    // processes a line's defects in order), i.e. any NO_DATA pixel before the run.
    std::int64_t filled = 0;
    int i = 0;
    while (i < ln.length) {
        if (isGood(i)) {
            ++i;
            continue;
        }
        Run r;
        r.a = i;
        while (i < ln.length && !isGood(i)) {
            ++i;
        }
        r.b = i;
        r.haveLeft = r.a > 0;
        r.haveRight = r.b < ln.length;
        const auto usable = [&](int j) { return isGood(j) || (j < r.a && isNoData(j)); };
        fillRun(ln.img, ln.stride, ln.length, r, ctrl, fallback, isNoData, usable);
        fillRun(ln.var, ln.stride, ln.length, r, ctrl, fallback, isNoData, usable);
        for (int k = r.a; k < r.b; ++k) {
            if (isNoData(k)) {
                ln.msk[at(k)] |= bits.intrp;
                ++filled;
            }
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

    // §8.1 interpolation over NO_DATA, image and variance planes alike.
    if (ctrl.enabled && bits.noData != 0) {
        result.fallbackValue = fallbackValue(coadd.image, ctrl.negativeFallbackAllowed);
        if (result.nNoData > 0) {
            const Box& box = coadd.box();
            // Upstream's do_defects receives the fallback as a double and stores it in a float pixel.
            const double fb = static_cast<float>(result.fallbackValue);
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

    // §8.2 variance fix, after the interpolation: NaN and <= 0 become +inf.
    for (float& v : var) {
        if (!(v > 0.0F)) {
            v = kInf;
        }
    }
    return result;
}

}  // namespace safeclip::kernel
