/// @file ScaleVariance.cpp  ScaleVarianceTask's factor (see ScaleVariance.h): cell MEANCLIP
/// background with bilinear interpolation, then exact quartiles of the background-subtracted
/// pixels.
#include "safeclip/kernel/ScaleVariance.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "Simd.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/SampleStats.h"

namespace safeclip::kernel {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Cell edges along one axis of length n: nCells = n/binSize + 1 cells, cell i spanning
/// [edge[i], edge[i+1]) with edge[i] = floor(i*n/nCells).
std::vector<int> cellEdges(int n, int binSize) {
    const int nCells = n / binSize + 1;
    std::vector<int> e(static_cast<std::size_t>(nCells) + 1);
    for (int i = 0; i <= nCells; ++i) {
        e[static_cast<std::size_t>(i)] =
            static_cast<int>(static_cast<std::int64_t>(i) * n / static_cast<std::int64_t>(nCells));
    }
    return e;
}

/// Piecewise-linear interpolation through knots (xs ascending), linear extrapolation from the end
/// segments, a constant for one knot. Precomputed per query point as (a, b, t): v = va + (vb-va)*t.
struct Lerp {
    std::size_t a = 0;
    std::size_t b = 0;
    double t = 0.0;
};

Lerp lerpAt(const std::vector<double>& xs, double x) {
    const std::size_t n = xs.size();
    if (n == 1) {
        return Lerp{0, 0, 0.0};
    }
    std::size_t a = 0;
    while (a + 2 < n && x > xs[a + 1]) {
        ++a;
    }
    const std::size_t b = a + 1;
    return Lerp{a, b, (x - xs[a]) / (xs[b] - xs[a])};
}

double lerpValue(const Lerp& l, const std::vector<double>& vs) {
    const double va = vs[l.a];
    return va + (vs[l.b] - va) * l.t;
}

/// One row of (image − background)/sqrt(variance) into out[0, n) and a good flag per pixel
/// (isGoodPixel); no branch, so that both twins vectorize. Values of bad pixels are garbage.
inline void snrRowImpl(const float* im, const float* va, const MaskPixel* ma, const float* b, int n,
                       MaskPixel ignoreBits, float* out, unsigned char* good) {
    for (int x = 0; x < n; ++x) {
        const float resid = static_cast<float>(static_cast<double>(im[x]) - static_cast<double>(b[x]));
        out[x] = static_cast<float>(static_cast<double>(resid) / std::sqrt(static_cast<double>(va[x])));
        const bool finite = (std::bit_cast<std::uint32_t>(im[x]) & 0x7f800000U) != 0x7f800000U &&
                            (std::bit_cast<std::uint32_t>(va[x]) & 0x7f800000U) != 0x7f800000U;
        good[x] = static_cast<unsigned char>(((ma[x] & ignoreBits) == 0) & finite & (va[x] > 0.0F));
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2"))) void snrRowAvx2(const float* im, const float* va, const MaskPixel* ma,
                                                const float* b, int n, MaskPixel ignoreBits, float* out,
                                                unsigned char* good) {
    snrRowImpl(im, va, ma, b, n, ignoreBits, out, good);
}
#else
void snrRowAvx2(const float* im, const float* va, const MaskPixel* ma, const float* b, int n,
                MaskPixel ignoreBits, float* out, unsigned char* good) {
    snrRowImpl(im, va, ma, b, n, ignoreBits, out, good);
}
#endif

bool isGoodPixel(float img, float var, MaskPixel m, MaskPixel ignoreBits) {
    return (m & ignoreBits) == 0 && std::isfinite(img) && std::isfinite(var) && var > 0.0F;
}

double iqr(std::span<const float> values) {
    static constexpr double kQs[2] = {0.25, 0.75};
    const std::vector<double> q = sampleQuantiles(values, kQs);
    return q[1] - q[0];
}

}  // namespace

void ScaleVarianceControl::validate() const {
    if (binSize < 1) {
        throw InvalidParameter("ScaleVarianceControl.binSize must be >= 1, got " + std::to_string(binSize));
    }
    if (!(limit > 0.0)) {
        throw InvalidParameter("ScaleVarianceControl.limit must be > 0, got " + std::to_string(limit));
    }
    if (!std::isfinite(bgSigmaClip) || bgSigmaClip <= 0.0 || bgClipIter < 1) {
        throw InvalidParameter("ScaleVarianceControl: background clip needs sigma > 0 and >= 1 iteration");
    }
    if (!std::isfinite(iqrToStdev) || iqrToStdev <= 0.0) {
        throw InvalidParameter("ScaleVarianceControl.iqrToStdev must be finite and > 0");
    }
}

ImageF fitBackground(const ImageF& image, const MaskImage& mask, MaskPixel ignoreBits,
                     const ScaleVarianceControl& ctrl) {
    ctrl.validate();
    const Box& box = image.box();
    if (!(mask.box() == box)) {
        throw InvalidParameter("fitBackground: image box " + box.str() + " != mask box " + mask.box().str());
    }
    ImageF bg(box, 0.0F);
    if (box.empty()) {
        return bg;
    }
    const std::vector<int> ex = cellEdges(box.width, ctrl.binSize);
    const std::vector<int> ey = cellEdges(box.height, ctrl.binSize);
    const std::size_t nx = ex.size() - 1;
    const std::size_t ny = ey.size() - 1;
    // Cell values (NaN = empty), row-major [j][i].
    std::vector<double> cell(nx * ny, kNaN);
    std::vector<float> sample;
    for (std::size_t j = 0; j < ny; ++j) {
        for (std::size_t i = 0; i < nx; ++i) {
            sample.clear();
            for (int y = ey[j]; y < ey[j + 1]; ++y) {
                const float* im = image.row(box.y0 + y);
                const MaskPixel* ma = mask.row(box.y0 + y);
                for (int x = ex[i]; x < ex[i + 1]; ++x) {
                    if ((ma[x] & ignoreBits) == 0 && std::isfinite(im[x])) {
                        sample.push_back(im[x]);
                    }
                }
            }
            if (!sample.empty()) {
                cell[j * nx + i] = meanClipUnweighted(sample, ctrl.bgSigmaClip, ctrl.bgClipIter);
            }
        }
    }
    auto centre = [](const std::vector<int>& e, std::size_t i) {
        return 0.5 * (static_cast<double>(e[i]) + static_cast<double>(e[i + 1] - 1));
    };
    // Per cell column: the knots along y of its non-empty cells.
    std::vector<std::vector<double>> kyPos(nx);
    std::vector<std::vector<double>> kyVal(nx);
    std::vector<double> colX;        // centres of the usable cell columns
    std::vector<std::size_t> colIx;  // their indices
    for (std::size_t i = 0; i < nx; ++i) {
        for (std::size_t j = 0; j < ny; ++j) {
            const double v = cell[j * nx + i];
            if (std::isfinite(v)) {
                kyPos[i].push_back(centre(ey, j));
                kyVal[i].push_back(v);
            }
        }
        if (!kyPos[i].empty()) {
            colX.push_back(centre(ex, i));
            colIx.push_back(i);
        }
    }
    if (colIx.empty()) {
        return bg;  // no usable cell: background 0
    }
    std::vector<Lerp> lx(static_cast<std::size_t>(box.width));
    for (int x = 0; x < box.width; ++x) {
        lx[static_cast<std::size_t>(x)] = lerpAt(colX, static_cast<double>(x));
    }
    std::vector<double> colVal(colIx.size());
    for (int y = 0; y < box.height; ++y) {
        for (std::size_t c = 0; c < colIx.size(); ++c) {
            const std::size_t i = colIx[c];
            colVal[c] = lerpValue(lerpAt(kyPos[i], static_cast<double>(y)), kyVal[i]);
        }
        float* out = bg.row(box.y0 + y);
        for (int x = 0; x < box.width; ++x) {
            out[x] = static_cast<float>(lerpValue(lx[static_cast<std::size_t>(x)], colVal));
        }
    }
    return bg;
}

ScaleVarianceResult scaleVarianceFactor(const MaskedImage& mi, MaskPixel ignoreBits,
                                        const ScaleVarianceControl& ctrl) {
    ctrl.validate();
    const Box& box = mi.box();
    if (!(mi.mask.box() == box) || !(mi.variance.box() == box)) {
        throw InvalidParameter("scaleVarianceFactor: image, mask and variance boxes differ");
    }
    ScaleVarianceResult res;
    const ImageF bg = fitBackground(mi.image, mi.mask, ignoreBits, ctrl);
    // The good pixels' S/N in pixel order: each row computed whole (vectorized), then compacted.
    std::vector<float> snr(static_cast<std::size_t>(box.area()));
    {
        const auto snrRow = detail::useAvx2() ? snrRowAvx2 : snrRowImpl;
        std::vector<float> rowVal(static_cast<std::size_t>(box.width));
        std::vector<unsigned char> rowGood(static_cast<std::size_t>(box.width));
        std::size_t n = 0;
        for (int y = box.y0; y < box.y1(); ++y) {
            snrRow(mi.image.row(y), mi.variance.row(y), mi.mask.row(y), bg.row(y), box.width, ignoreBits,
                   rowVal.data(), rowGood.data());
            for (int x = 0; x < box.width; ++x) {
                snr[n] = rowVal[static_cast<std::size_t>(x)];
                n += rowGood[static_cast<std::size_t>(x)];
            }
        }
        snr.resize(n);
    }
    res.nGood = static_cast<std::int64_t>(snr.size());
    if (snr.size() < 2) {
        res.method = ScaleVarianceMethod::NotEnoughData;
        return res;
    }
    const double sPix = ctrl.iqrToStdev * iqr(snr);
    res.pixelFactor = sPix * sPix;
    if (res.pixelFactor <= ctrl.limit) {
        res.factor = res.pixelFactor;
        res.method = ScaleVarianceMethod::PixelBased;
        return res;
    }
    // Image-based estimate: reuse the snr buffer for the residuals, a second one for the variance.
    snr.clear();
    std::vector<float> var;
    var.reserve(static_cast<std::size_t>(res.nGood));
    for (int y = box.y0; y < box.y1(); ++y) {
        const float* im = mi.image.row(y);
        const float* va = mi.variance.row(y);
        const MaskPixel* ma = mi.mask.row(y);
        const float* b = bg.row(y);
        for (int x = 0; x < box.width; ++x) {
            if (isGoodPixel(im[x], va[x], ma[x], ignoreBits)) {
                snr.push_back(static_cast<float>(static_cast<double>(im[x]) - static_cast<double>(b[x])));
                var.push_back(va[x]);
            }
        }
    }
    static constexpr double kMedian[1] = {0.5};
    const double medVar = sampleQuantiles(var, kMedian)[0];
    const double ratio = ctrl.iqrToStdev * iqr(snr) / std::sqrt(medVar);
    res.imageFactor = ratio * ratio;
    if (res.imageFactor <= ctrl.limit) {
        res.factor = res.imageFactor;
        res.method = ScaleVarianceMethod::ImageBased;
        return res;
    }
    res.factor = 1.0;
    res.ok = false;
    res.method = ScaleVarianceMethod::Failed;
    return res;
}

}  // namespace safeclip::kernel
