/// @file PsfMatch.cpp  Gaussian PSF matching (see PsfMatch.h): moment-matched separable Gaussian
/// taps, streaming column-then-row convolution in double, OR-grown mask, no-data propagation.
#include "safeclip/kernel/PsfMatch.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

#include "Simd.h"
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

namespace {

/// 1 when the float is ±inf or NaN (exponent all ones); branch-free so that both twins vectorize.
inline MaskPixel nonFinite(float v) {
    return static_cast<MaskPixel>((std::bit_cast<std::uint32_t>(v) & 0x7f800000U) == 0x7f800000U);
}

/// Column pass over all k taps for columns [0, n): per column, Σ_t g[t]·image_t and Σ_t g[t]²·var_t
/// summed in double for t = 0..k−1 in that order (from +0.0), the OR of the masks and a non-zero
/// "no data" flag when any support pixel is non-finite or has a noDataBits bit.
inline void columnPassImpl(const float* const* im, const float* const* va, const MaskPixel* const* ma,
                           std::size_t k, std::size_t begin, std::size_t n, const double* g, const double* g2,
                           MaskPixel noDataBits, double* accImg, double* accVar, MaskPixel* accMask,
                           MaskPixel* accBad) {
    for (std::size_t x = begin; x < n; ++x) {
        double si = 0.0;
        double sv = 0.0;
        MaskPixel m = 0;
        MaskPixel b = 0;
        for (std::size_t t = 0; t < k; ++t) {
            const float a = im[t][x];
            const float v = va[t][x];
            const MaskPixel mm = ma[t][x];
            si += g[t] * static_cast<double>(a);
            sv += g2[t] * static_cast<double>(v);
            m |= mm;
            b |= nonFinite(a) | nonFinite(v) | static_cast<MaskPixel>((mm & noDataBits) != 0);
        }
        accImg[x] = si;
        accVar[x] = sv;
        accMask[x] = m;
        accBad[x] = b;
    }
}

/// Row pass over all k taps for outputs [0, n): the same sums along the row of the column pass.
inline void rowPassImpl(const double* ai, const double* av, const MaskPixel* am, const MaskPixel* ab,
                        std::size_t k, std::size_t begin, std::size_t n, const double* g, const double* g2,
                        double* rowImg, double* rowVar, MaskPixel* rowMask, MaskPixel* rowBad) {
    for (std::size_t x = begin; x < n; ++x) {
        double si = 0.0;
        double sv = 0.0;
        MaskPixel m = 0;
        MaskPixel b = 0;
        for (std::size_t t = 0; t < k; ++t) {
            si += g[t] * ai[x + t];
            sv += g2[t] * av[x + t];
            m |= am[x + t];
            b |= ab[x + t];
        }
        rowImg[x] = si;
        rowVar[x] = sv;
        rowMask[x] = m;
        rowBad[x] = b;
    }
}

void columnPass(const float* const* im, const float* const* va, const MaskPixel* const* ma, std::size_t k,
                std::size_t n, const double* g, const double* g2, MaskPixel noDataBits, double* accImg,
                double* accVar, MaskPixel* accMask, MaskPixel* accBad) {
    columnPassImpl(im, va, ma, k, 0, n, g, g2, noDataBits, accImg, accVar, accMask, accBad);
}

void rowPass(const double* ai, const double* av, const MaskPixel* am, const MaskPixel* ab, std::size_t k,
             std::size_t n, const double* g, const double* g2, double* rowImg, double* rowVar,
             MaskPixel* rowMask, MaskPixel* rowBad) {
    rowPassImpl(ai, av, am, ab, k, 0, n, g, g2, rowImg, rowVar, rowMask, rowBad);
}

// The AVX2 twins: 16 columns at a time with the sums in registers (the last < 16 in the scalar
// loop); the same IEEE operations in the
// same order as the scalar loops (multiply, then add; no FMA), so the same bits (see Simd.h).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2"))) void columnPassAvx2(const float* const* im, const float* const* va,
                                                    const MaskPixel* const* ma, std::size_t k, std::size_t n,
                                                    const double* g, const double* g2, MaskPixel noDataBits,
                                                    double* accImg, double* accVar, MaskPixel* accMask,
                                                    MaskPixel* accBad) {
    const __m256i expMask = _mm256_set1_epi32(0x7f800000);
    const __m256i nd = _mm256_set1_epi32(noDataBits);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi32(-1);
    std::size_t x = 0;
    // 16 columns at a time: eight independent sums hide the add latency of the tap chain.
    for (; x + 16 <= n; x += 16) {
        __m256d si[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
        __m256d sv[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
        __m256i m[2] = {zero, zero};
        __m256i b[2] = {zero, zero};
        for (std::size_t t = 0; t < k; ++t) {
            const __m256d gt = _mm256_set1_pd(g[t]);
            const __m256d g2t = _mm256_set1_pd(g2[t]);
            for (std::size_t h = 0; h < 2; ++h) {
                const __m256 a = _mm256_loadu_ps(im[t] + x + 8 * h);
                const __m256 v = _mm256_loadu_ps(va[t] + x + 8 * h);
                const __m256i mm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ma[t] + x + 8 * h));
                si[2 * h] =
                    _mm256_add_pd(si[2 * h], _mm256_mul_pd(gt, _mm256_cvtps_pd(_mm256_castps256_ps128(a))));
                si[2 * h + 1] = _mm256_add_pd(
                    si[2 * h + 1], _mm256_mul_pd(gt, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1))));
                sv[2 * h] =
                    _mm256_add_pd(sv[2 * h], _mm256_mul_pd(g2t, _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
                sv[2 * h + 1] = _mm256_add_pd(
                    sv[2 * h + 1], _mm256_mul_pd(g2t, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
                m[h] = _mm256_or_si256(m[h], mm);
                const __m256i badA =
                    _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(a), expMask), expMask);
                const __m256i badV =
                    _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), expMask), expMask);
                const __m256i badM =
                    _mm256_xor_si256(_mm256_cmpeq_epi32(_mm256_and_si256(mm, nd), zero), ones);
                b[h] = _mm256_or_si256(b[h], _mm256_or_si256(_mm256_or_si256(badA, badV), badM));
            }
        }
        for (std::size_t h = 0; h < 2; ++h) {
            _mm256_storeu_pd(accImg + x + 8 * h, si[2 * h]);
            _mm256_storeu_pd(accImg + x + 8 * h + 4, si[2 * h + 1]);
            _mm256_storeu_pd(accVar + x + 8 * h, sv[2 * h]);
            _mm256_storeu_pd(accVar + x + 8 * h + 4, sv[2 * h + 1]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(accMask + x + 8 * h), m[h]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(accBad + x + 8 * h), b[h]);
        }
    }
    columnPassImpl(im, va, ma, k, x, n, g, g2, noDataBits, accImg, accVar, accMask, accBad);
}

__attribute__((target("avx2"))) void rowPassAvx2(const double* ai, const double* av, const MaskPixel* am,
                                                 const MaskPixel* ab, std::size_t k, std::size_t n,
                                                 const double* g, const double* g2, double* rowImg,
                                                 double* rowVar, MaskPixel* rowMask, MaskPixel* rowBad) {
    std::size_t x = 0;
    for (; x + 16 <= n; x += 16) {  // 16 outputs at a time, as the column pass
        __m256d si[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
        __m256d sv[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
        __m256i m[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        __m256i b[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (std::size_t t = 0; t < k; ++t) {
            const __m256d gt = _mm256_set1_pd(g[t]);
            const __m256d g2t = _mm256_set1_pd(g2[t]);
            for (std::size_t q = 0; q < 4; ++q) {
                si[q] = _mm256_add_pd(si[q], _mm256_mul_pd(gt, _mm256_loadu_pd(ai + x + t + 4 * q)));
                sv[q] = _mm256_add_pd(sv[q], _mm256_mul_pd(g2t, _mm256_loadu_pd(av + x + t + 4 * q)));
            }
            for (std::size_t h = 0; h < 2; ++h) {
                m[h] = _mm256_or_si256(
                    m[h], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(am + x + t + 8 * h)));
                b[h] = _mm256_or_si256(
                    b[h], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab + x + t + 8 * h)));
            }
        }
        for (std::size_t q = 0; q < 4; ++q) {
            _mm256_storeu_pd(rowImg + x + 4 * q, si[q]);
            _mm256_storeu_pd(rowVar + x + 4 * q, sv[q]);
        }
        for (std::size_t h = 0; h < 2; ++h) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(rowMask + x + 8 * h), m[h]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(rowBad + x + 8 * h), b[h]);
        }
    }
    rowPassImpl(ai, av, am, ab, k, x, n, g, g2, rowImg, rowVar, rowMask, rowBad);
}
#else
void columnPassAvx2(const float* const* im, const float* const* va, const MaskPixel* const* ma, std::size_t k,
                    std::size_t n, const double* g, const double* g2, MaskPixel noDataBits, double* accImg,
                    double* accVar, MaskPixel* accMask, MaskPixel* accBad) {
    columnPass(im, va, ma, k, n, g, g2, noDataBits, accImg, accVar, accMask, accBad);
}
void rowPassAvx2(const double* ai, const double* av, const MaskPixel* am, const MaskPixel* ab, std::size_t k,
                 std::size_t n, const double* g, const double* g2, double* rowImg, double* rowVar,
                 MaskPixel* rowMask, MaskPixel* rowBad) {
    rowPass(ai, av, am, ab, k, n, g, g2, rowImg, rowVar, rowMask, rowBad);
}
#endif

}  // namespace

void psfMatchGaussianInto(const MaskedImage& in, const Box& outBox, const MatchingKernel& kernel,
                          MaskPixel noDataBits, MaskPixel noDataBit, MaskedImage& out) {
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
        return;
    }
    const Box& ob = out.image.box();
    if (!(out.mask.box() == ob) || !(out.variance.box() == ob) || !ob.contains(outBox)) {
        throw InvalidParameter("psfMatchGaussian: output image " + ob.str() + " does not hold " +
                               outBox.str());
    }
    const std::size_t k = kernel.taps.size();
    const std::vector<double>& g = kernel.taps;
    std::vector<double> g2(k);
    for (std::size_t t = 0; t < k; ++t) {
        g2[t] = g[t] * g[t];
    }
    // Columns outBox.x0 - r .. outBox.x1 + r - 1 of the column pass.
    const std::size_t ow = static_cast<std::size_t>(outBox.width);
    const std::size_t aw = ow + 2 * static_cast<std::size_t>(r);
    const std::size_t inOff = static_cast<std::size_t>(outBox.x0 - r - box.x0);
    const std::size_t outOff = static_cast<std::size_t>(outBox.x0 - ob.x0);
    std::vector<double> accImg(aw);
    std::vector<double> accVar(aw);
    std::vector<MaskPixel> accMask(aw);
    std::vector<MaskPixel> accBad(aw);
    std::vector<double> rowImg(ow);
    std::vector<double> rowVar(ow);
    std::vector<MaskPixel> rowMask(ow);
    std::vector<MaskPixel> rowBad(ow);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const bool avx2 = detail::useAvx2();
    const auto columns = avx2 ? columnPassAvx2 : columnPass;
    const auto rows = avx2 ? rowPassAvx2 : rowPass;
    std::vector<const float*> imRows(k);
    std::vector<const float*> vaRows(k);
    std::vector<const MaskPixel*> maRows(k);

    for (int y = outBox.y0; y < outBox.y1(); ++y) {
        for (std::size_t t = 0; t < k; ++t) {
            const int yy = y - r + static_cast<int>(t);
            imRows[t] = in.image.row(yy) + inOff;
            vaRows[t] = in.variance.row(yy) + inOff;
            maRows[t] = in.mask.row(yy) + inOff;
        }
        columns(imRows.data(), vaRows.data(), maRows.data(), k, aw, g.data(), g2.data(), noDataBits,
                accImg.data(), accVar.data(), accMask.data(), accBad.data());
        rows(accImg.data(), accVar.data(), accMask.data(), accBad.data(), k, ow, g.data(), g2.data(),
             rowImg.data(), rowVar.data(), rowMask.data(), rowBad.data());
        float* oi = out.image.row(y) + outOff;
        float* ov = out.variance.row(y) + outOff;
        MaskPixel* om = out.mask.row(y) + outOff;
        for (std::size_t x = 0; x < ow; ++x) {  // branch-free, so that it vectorizes
            const bool bad = rowBad[x] != 0;
            const float fi = static_cast<float>(rowImg[x]);
            const float fv = static_cast<float>(rowVar[x]);
            oi[x] = bad ? nan : fi;
            ov[x] = bad ? nan : fv;
            om[x] = rowMask[x] | (bad ? noDataBit : MaskPixel{0});
        }
    }
}

MaskedImage psfMatchGaussian(const MaskedImage& in, const Box& outBox, const MatchingKernel& kernel,
                             MaskPixel noDataBits, MaskPixel noDataBit) {
    MaskedImage out;
    out.reshape(outBox.empty() ? Box{outBox.x0, outBox.y0, 0, 0} : outBox);
    psfMatchGaussianInto(in, outBox, kernel, noDataBits, noDataBit, out);
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
