/// @file PsfMatch.cpp  Gaussian PSF matching (see PsfMatch.h): moment-matched separable Gaussian
/// taps, streaming column-then-row convolution in double, OR-grown mask, no-data propagation.
#include "safeclip/kernel/PsfMatch.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "safeclip/kernel/Error.h"

namespace safeclip::kernel {

namespace {

constexpr int kMaxHalfWidthCap = 1 << 12;  ///< sanity bound on maxHalfWidth

/// Normalised taps exp(−t²/(2s²)) for t = −r..r, and their second moment Σ t² g(t).
double fillTaps(double s, int r, std::vector<double>& g) {
    g.assign(static_cast<std::size_t>(2 * r + 1), 0.0);
    double sum = 0.0;
    for (int t = -r; t <= r; ++t) {
        const double v = std::exp(-static_cast<double>(t) * t / (2.0 * s * s));
        g[static_cast<std::size_t>(t + r)] = v;
        sum += v;
    }
    double m2 = 0.0;
    for (int t = -r; t <= r; ++t) {
        double& v = g[static_cast<std::size_t>(t + r)];
        v /= sum;
        m2 += static_cast<double>(t) * t * v;
    }
    return m2;
}

}  // namespace

void PsfMatchControl::validate() const {
    if (maxHalfWidth < 0 || maxHalfWidth > kMaxHalfWidthCap) {
        throw InvalidParameter("PsfMatchControl.maxHalfWidth must be in [0, " +
                               std::to_string(kMaxHalfWidthCap) + "], got " + std::to_string(maxHalfWidth));
    }
    if (!std::isfinite(nSigmaHalfWidth) || nSigmaHalfWidth <= 0.0) {
        throw InvalidParameter("PsfMatchControl.nSigmaHalfWidth must be finite and > 0, got " +
                               std::to_string(nSigmaHalfWidth));
    }
}

double matchingKernelSigma(double warpSigma, double modelSigma) {
    if (!std::isfinite(warpSigma) || warpSigma <= 0.0) {
        throw InvalidParameter("PSF matching: warp PSF sigma must be finite and > 0, got " +
                               std::to_string(warpSigma));
    }
    if (!std::isfinite(modelSigma) || modelSigma <= 0.0) {
        throw InvalidParameter("PSF matching: model PSF sigma must be finite and > 0, got " +
                               std::to_string(modelSigma));
    }
    if (modelSigma < warpSigma) {
        throw InvalidParameter("PSF matching: model PSF sigma " + std::to_string(modelSigma) +
                               " is smaller than the warp's PSF sigma " + std::to_string(warpSigma) +
                               " (would need a deconvolution)");
    }
    return std::sqrt((modelSigma - warpSigma) * (modelSigma + warpSigma));
}

MatchingKernel gaussianMatchingKernel(double warpSigma, double modelSigma, const PsfMatchControl& ctrl) {
    ctrl.validate();
    MatchingKernel k;
    k.sigma = matchingKernelSigma(warpSigma, modelSigma);
    if (k.sigma == 0.0 || ctrl.maxHalfWidth == 0) {
        k.halfWidth = 0;
        k.tapSigma = k.sigma;
        k.secondMoment = 0.0;
        k.taps = {1.0};
        return k;
    }
    const double rWanted = std::ceil(ctrl.nSigmaHalfWidth * k.sigma);
    const int r = rWanted >= ctrl.maxHalfWidth ? ctrl.maxHalfWidth : static_cast<int>(rWanted);
    k.halfWidth = r;
    const double target = k.sigma * k.sigma;
    std::vector<double> g;
    // The second moment of the truncated, normalised taps increases with s from 0 (s -> 0) towards
    // r(r+1)/3 (s -> inf). Bracket, then bisect a fixed number of times.
    double hi = k.sigma;
    bool reachable = false;
    for (int i = 0; i < 64; ++i) {
        if (fillTaps(hi, r, g) >= target) {
            reachable = true;
            break;
        }
        hi *= 2.0;
    }
    if (!reachable) {
        k.tapSigma = k.sigma;
        k.secondMoment = fillTaps(k.sigma, r, g);
        k.taps = g;
        return k;
    }
    double lo = 0.0;
    for (int i = 0; i < 200; ++i) {
        const double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) {
            break;
        }
        if (fillTaps(mid, r, g) >= target) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    k.tapSigma = hi;
    k.secondMoment = fillTaps(hi, r, g);
    k.taps = g;
    return k;
}

MaskedImage psfMatchGaussian(const MaskedImage& in, const Box& outBox, const MatchingKernel& kernel,
                             MaskPixel noDataBits, MaskPixel noDataBit) {
    const Box& box = in.box();
    if (!(in.mask.box() == box) || !(in.variance.box() == box)) {
        throw InvalidParameter("psfMatchGaussian: image, mask and variance boxes differ");
    }
    const int r = kernel.halfWidth;
    if (r < 0 || kernel.taps.size() != static_cast<std::size_t>(2 * r + 1)) {
        throw InvalidParameter("psfMatchGaussian: kernel taps do not match its half-width");
    }
    if (!outBox.empty() && !box.grown(-r).contains(outBox)) {
        throw InvalidParameter("psfMatchGaussian: output box " + outBox.str() +
                               " is not inside the input box " + box.str() +
                               " shrunk by the kernel half-width " + std::to_string(r));
    }
    if (outBox.empty()) {
        return MaskedImage(Box{outBox.x0, outBox.y0, 0, 0});
    }
    MaskedImage out(outBox);
    const std::size_t k = kernel.taps.size();
    std::vector<double> g = kernel.taps;
    std::vector<double> g2(k);
    for (std::size_t t = 0; t < k; ++t) {
        g2[t] = g[t] * g[t];
    }
    // Columns outBox.x0 - r .. outBox.x1 + r - 1 of the column pass.
    const std::size_t ow = static_cast<std::size_t>(outBox.width);
    const std::size_t aw = ow + 2 * static_cast<std::size_t>(r);
    const std::size_t inOff = static_cast<std::size_t>(outBox.x0 - r - box.x0);
    std::vector<double> accImg(aw);
    std::vector<double> accVar(aw);
    std::vector<MaskPixel> accMask(aw);
    std::vector<std::uint8_t> accBad(aw);
    std::vector<double> rowImg(ow);
    std::vector<double> rowVar(ow);
    std::vector<MaskPixel> rowMask(ow);
    std::vector<std::uint8_t> rowBad(ow);
    const float nan = std::numeric_limits<float>::quiet_NaN();

    for (int y = outBox.y0; y < outBox.y1(); ++y) {
        for (std::size_t x = 0; x < aw; ++x) {
            accImg[x] = 0.0;
            accVar[x] = 0.0;
            accMask[x] = 0;
            accBad[x] = 0;
        }
        for (std::size_t t = 0; t < k; ++t) {
            const int yy = y - r + static_cast<int>(t);
            const float* im = in.image.row(yy) + inOff;
            const float* va = in.variance.row(yy) + inOff;
            const MaskPixel* ma = in.mask.row(yy) + inOff;
            const double gt = g[t];
            const double g2t = g2[t];
            for (std::size_t x = 0; x < aw; ++x) {
                const double iv = im[x];
                const double vv = va[x];
                accImg[x] += gt * iv;
                accVar[x] += g2t * vv;
                accMask[x] |= ma[x];
                const bool finite = std::isfinite(iv) && std::isfinite(vv);
                accBad[x] |= static_cast<std::uint8_t>(!finite || (ma[x] & noDataBits) != 0);
            }
        }
        for (std::size_t x = 0; x < ow; ++x) {
            rowImg[x] = 0.0;
            rowVar[x] = 0.0;
            rowMask[x] = 0;
            rowBad[x] = 0;
        }
        for (std::size_t t = 0; t < k; ++t) {
            const double gt = g[t];
            const double g2t = g2[t];
            const double* ai = accImg.data() + t;
            const double* av = accVar.data() + t;
            const MaskPixel* am = accMask.data() + t;
            const std::uint8_t* ab = accBad.data() + t;
            for (std::size_t x = 0; x < ow; ++x) {
                rowImg[x] += gt * ai[x];
                rowVar[x] += g2t * av[x];
                rowMask[x] |= am[x];
                rowBad[x] |= ab[x];
            }
        }
        float* oi = out.image.row(y);
        float* ov = out.variance.row(y);
        MaskPixel* om = out.mask.row(y);
        for (std::size_t x = 0; x < ow; ++x) {
            const MaskPixel m = rowMask[x];
            if (rowBad[x] != 0) {
                oi[x] = nan;
                ov[x] = nan;
                om[x] = m | noDataBit;
            } else {
                oi[x] = static_cast<float>(rowImg[x]);
                ov[x] = static_cast<float>(rowVar[x]);
                om[x] = m;
            }
        }
    }
    return out;
}

MaskedImage psfMatchGaussian(const MaskedImage& in, const MatchingKernel& kernel, MaskPixel noDataBits,
                             MaskPixel noDataBit) {
    const int r = kernel.halfWidth;
    const Box& b = in.box();
    Box outBox = b.grown(-r);
    if (outBox.width <= 0 || outBox.height <= 0) {
        outBox = Box{b.x0 + r, b.y0 + r, 0, 0};
    }
    return psfMatchGaussian(in, outBox, kernel, noDataBits, noDataBit);
}

}  // namespace safeclip::kernel
