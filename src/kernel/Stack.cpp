/// @file Stack.cpp  The per-pixel stacker (spec §4): MEAN and MEANCLIP, mask propagation, output pixel.
///
/// Determinism: every sum is accumulated in double in input order (stackPixel and stackRegion share
/// one core), so results are bitwise reproducible and independent of how a region is split.
#include "safeclip/kernel/Stack.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "safeclip/kernel/Error.h"

namespace safeclip::kernel {

namespace {

constexpr double kIqToStdev = 0.741301109252802;  ///< afw IQ_TO_STDEV
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr int kSmallSortLimit = 32;  ///< up to this, quartiles come from one full (rank) sort

/// Weighted sums over a selection (spec §4.1 steps 4-6).
struct Moments {
    int n = 0;                ///< size of the selection
    double mean = kNaN;       ///< μ
    double sampleVar = kNaN;  ///< debiased weighted s² (only when requested)
    double meanVar = kNaN;    ///< V
};

/// Moments of the inputs listed in idx[0..k). `needSampleVar` forces the s² pass; it is computed
/// anyway when the variance of the mean is not taken from the input variance.
Moments weightedMoments(const float* x, const float* v, const float* w, const int* idx, int k,
                        bool needSampleVar, bool fromInputVariance) {
    Moments r;
    r.n = k;
    double sw = 0.0;
    double swx = 0.0;
    double sw2 = 0.0;
    double sw2v = 0.0;
    for (int j = 0; j < k; ++j) {
        const int i = idx[j];
        const double wi = w[i];
        sw += wi;
        swx += wi * static_cast<double>(x[i]);
        sw2 += wi * wi;
        sw2v += wi * wi * static_cast<double>(v[i]);
    }
    r.mean = swx / sw;  // NaN when k == 0 (0/0)
    const double sw_sq = sw * sw;
    if (needSampleVar || !fromInputVariance) {
        double sdev = 0.0;
        for (int j = 0; j < k; ++j) {
            const int i = idx[j];
            const double d = static_cast<double>(x[i]) - r.mean;
            sdev += static_cast<double>(w[i]) * d * d;
        }
        r.sampleVar = (sdev / sw) * sw_sq / (sw_sq - sw2);  // NaN when k == 1
    }
    r.meanVar = fromInputVariance ? sw2v / sw_sq : r.sampleVar * sw2 / sw_sq;
    return r;
}

/// Unit-weight moments of values[0..n): same expressions as weightedMoments with w = 1, mean only
/// and s² (used by meanClipUnweighted).
template <typename Pred>
Moments unitMoments(const float* values, std::size_t n, Pred keep) {
    Moments r;
    double sw = 0.0;
    double sx = 0.0;
    std::int64_t k = 0;
    for (std::size_t j = 0; j < n; ++j) {
        const double xj = values[j];
        if (keep(xj)) {
            sw += 1.0;
            sx += xj;
            ++k;
        }
    }
    r.n = static_cast<int>(std::min<std::int64_t>(k, std::numeric_limits<int>::max()));
    r.mean = sx / sw;
    double sdev = 0.0;
    for (std::size_t j = 0; j < n; ++j) {
        const double xj = values[j];
        if (keep(xj)) {
            const double d = xj - r.mean;
            sdev += d * d;
        }
    }
    const double sw_sq = sw * sw;
    const double sw2 = sw;  // Σ w² with w = 1
    r.sampleVar = (sdev / sw) * sw_sq / (sw_sq - sw2);
    return r;
}

/// afw `percentile`: linear interpolation at fractional rank q(n-1); reorders [first, first+n).
template <typename T>
double percentileSelect(T* first, std::size_t n, double q) {
    if (n == 0) {
        return kNaN;
    }
    if (n == 1) {
        return static_cast<double>(first[0]);
    }
    const double idx = q * static_cast<double>(n - 1);
    const auto q1 = static_cast<std::size_t>(idx);
    if (q1 + 1 >= n) {
        std::nth_element(first, first + (n - 1), first + n);
        return static_cast<double>(first[n - 1]);
    }
    const std::size_t q2 = q1 + 1;
    T* mid1 = first + q1;
    T* mid2 = first + q2;
    if (q > 0.5) {
        std::nth_element(first, mid1, first + n);
        std::nth_element(mid1, mid2, first + n);
    } else {
        std::nth_element(first, mid2, first + n);
        std::nth_element(first, mid1, mid2);
    }
    const double w1 = static_cast<double>(q2) - idx;
    const double w2 = idx - static_cast<double>(q1);
    return w1 * static_cast<double>(*mid1) + w2 * static_cast<double>(*mid2);
}

/// Same interpolation as percentileSelect on an already sorted array.
double percentileSorted(const double* sorted, std::size_t n, double q) {
    if (n == 0) {
        return kNaN;
    }
    if (n == 1) {
        return sorted[0];
    }
    const double idx = q * static_cast<double>(n - 1);
    const auto q1 = static_cast<std::size_t>(idx);
    if (q1 + 1 >= n) {
        return sorted[n - 1];
    }
    const std::size_t q2 = q1 + 1;
    const double w1 = static_cast<double>(q2) - idx;
    const double w2 = idx - static_cast<double>(q1);
    return w1 * sorted[q1] + w2 * sorted[q2];
}

/// Median, lower and upper quartile of buf[0..n) (reorders buf; tmp has room for n doubles).
/// Small samples are sorted by branch-free rank counting (NaN-free input; ties ranked by position).
void quartiles(double* buf, double* tmp, std::size_t n, double& median, double& q1, double& q3) {
    if (n <= static_cast<std::size_t>(kSmallSortLimit)) {
        for (std::size_t i = 0; i < n; ++i) {
            const double a = buf[i];
            int rank = 0;
            for (std::size_t j = 0; j < i; ++j) {
                rank += buf[j] <= a ? 1 : 0;
            }
            for (std::size_t j = i + 1; j < n; ++j) {
                rank += buf[j] < a ? 1 : 0;
            }
            tmp[rank] = a;
        }
        median = percentileSorted(tmp, n, 0.5);
        q1 = percentileSorted(tmp, n, 0.25);
        q3 = percentileSorted(tmp, n, 0.75);
    } else {
        median = percentileSelect(buf, n, 0.5);
        q1 = percentileSelect(buf, n, 0.25);
        q3 = percentileSelect(buf, n, 0.75);
    }
}

/// The stacker core for one pixel of n inputs. `accepted` has room for 3n ints, `sortBuf` for 2n doubles.
PixelResult stackCore(const float* x, const MaskPixel* m, const float* v, const float* w, int n,
                      const StackControl& ctrl, int* accepted, double* sortBuf) {
    PixelResult res;
    // §4.1.1-2: accepted set and OR-mask over accepted inputs only.
    int n0 = 0;
    MaskPixel orMask = 0;
    MaskPixel allMask = 0;
    for (int i = 0; i < n; ++i) {
        allMask |= m[i];
        if (std::isfinite(x[i]) && (m[i] & ctrl.andMask) == 0) {
            accepted[n0++] = i;
            orMask |= m[i];
        }
    }
    const int nMasked = n - n0;

    const bool fromInput = ctrl.calcErrorFromInputVariance;
    const bool clip = ctrl.statistic == Statistic::MeanClip;
    // §4.1.3: rejected-weight propagation (needs Σ_{S0} w, recomputed in the same order).
    if (nMasked > 0 && !ctrl.propagationThresholds.empty()) {
        double sw = 0.0;
        for (int j = 0; j < n0; ++j) {
            sw += static_cast<double>(w[accepted[j]]);
        }
        for (const auto& [bit, threshold] : ctrl.propagationThresholds) {
            if ((allMask & bit) == 0) {
                continue;
            }
            double rejected = 0.0;
            int j = 0;
            for (int i = 0; i < n; ++i) {
                if (j < n0 && accepted[j] == i) {
                    ++j;
                    continue;
                }
                if ((m[i] & bit) != 0) {
                    rejected += static_cast<double>(w[i]);
                }
            }
            if (rejected / (sw + rejected) > threshold) {
                orMask |= bit;
            }
        }
    }

    int nKept = n0;
    if (!clip || n0 == 0) {
        const Moments mom = weightedMoments(x, v, w, accepted, n0, false, fromInput);
        res.value = mom.mean;
        res.variance = mom.meanVar;
    } else {
        // §4.2: quartiles of the unweighted accepted values, then clipIter passes from all of S0.
        for (int j = 0; j < n0; ++j) {
            sortBuf[j] = static_cast<double>(x[accepted[j]]);
        }
        double median = kNaN;
        double q1 = kNaN;
        double q3 = kNaN;
        quartiles(sortBuf, sortBuf + n, static_cast<std::size_t>(n0), median, q1, q3);
        const double iqrHalfWidth = ctrl.sigmaClip * kIqToStdev * (q3 - q1);
        // Selections live in two alternating buffers; once S_k equals S_{k-1} (k >= 2) every later
        // iteration reproduces it bit for bit (c and h depend only on μ_{k-1}, s²_{k-1}), so stop.
        int* sel = accepted + n;
        int* prev = accepted + 2 * n;
        int nPrev = -1;
        Moments cur;
        for (int k = 0; k < ctrl.clipIter; ++k) {
            const double c = k == 0 ? median : cur.mean;
            const double h = (k > 0 && n0 > 1) ? ctrl.sigmaClip * std::sqrt(cur.sampleVar) : iqrHalfWidth;
            if (std::isnan(c) || std::isnan(h)) {
                cur = Moments{};  // NaN result, nothing kept
                break;
            }
            int ns = 0;
            for (int j = 0; j < n0; ++j) {
                const int i = accepted[j];
                sel[ns] = i;  // branch-free compaction
                ns += std::abs(static_cast<double>(x[i]) - c) <= h ? 1 : 0;
            }
            if (ns == nPrev && std::equal(sel, sel + ns, prev)) {
                break;
            }
            cur = weightedMoments(x, v, w, sel, ns, true, fromInput);
            std::swap(sel, prev);
            nPrev = ns;
        }
        nKept = cur.n;
        res.value = cur.mean;
        res.variance = cur.meanVar;
    }
    res.nClipped = n0 - nKept;
    res.nMasked = nMasked;

    // §4.3: write the output pixel.
    if (n0 == 0) {
        orMask = ctrl.noGoodPixelsMask;
        res.value = kNaN;
        res.variance = kNaN;
    }
    if (res.nClipped > 0) {
        orMask |= ctrl.clippedBit;
    }
    if (nMasked > 0) {
        for (const auto& [src, dst] : ctrl.maskMap) {
            if ((allMask & src) != 0) {
                orMask |= dst;
            }
        }
    }
    res.mask = orMask;
    return res;
}

}  // namespace

void StackControl::validate() const {
    if (!(std::isfinite(sigmaClip) && sigmaClip > 0.0)) {
        throw InvalidParameter("stack: sigmaClip must be finite and > 0, got " + std::to_string(sigmaClip));
    }
    if (clipIter < 1) {
        throw InvalidParameter("stack: clipIter must be >= 1, got " + std::to_string(clipIter));
    }
    for (const auto& [bit, threshold] : propagationThresholds) {
        if (std::popcount(static_cast<std::uint32_t>(bit)) > 1) {
            throw InvalidParameter("stack: mask propagation threshold key " + std::to_string(bit) +
                                   " is not a single bit");
        }
        if (!(threshold >= 0.0 && threshold <= 1.0)) {
            throw InvalidParameter("stack: mask propagation threshold " + std::to_string(threshold) +
                                   " is outside [0, 1]");
        }
    }
}

PixelResult stackPixel(std::span<const float> x, std::span<const MaskPixel> m, std::span<const float> v,
                       std::span<const float> w, const StackControl& ctrl, StackScratch& scratch) {
    const std::size_t n = x.size();
    if (m.size() != n || v.size() != n || w.size() != n) {
        throw InvalidParameter("stackPixel: image, mask, variance and weight spans differ in length");
    }
    if (scratch.accepted.size() < 3 * n) {
        scratch.accepted.resize(3 * n);
    }
    if (scratch.sorted.size() < 2 * n) {
        scratch.sorted.resize(2 * n);
    }
    return stackCore(x.data(), m.data(), v.data(), w.data(), static_cast<int>(n), ctrl,
                     scratch.accepted.data(), scratch.sorted.data());
}

StackResult stackRegion(const std::vector<const MaskedImage*>& inputs, std::span<const float> weights,
                        const StackControl& ctrl, const Box& region, MaskedImage& out) {
    ctrl.validate();
    const std::size_t n = inputs.size();
    if (weights.size() != n) {
        throw InvalidParameter("stackRegion: " + std::to_string(n) + " inputs but " +
                               std::to_string(weights.size()) + " weights");
    }
    StackResult result;
    if (region.empty()) {
        return result;
    }
    if (!out.box().contains(region)) {
        throw InvalidParameter("stackRegion: region " + region.str() + " is not inside the output box " +
                               out.box().str());
    }
    for (std::size_t i = 0; i < n; ++i) {
        if (inputs[i] == nullptr) {
            throw InvalidParameter("stackRegion: input " + std::to_string(i) + " is null");
        }
        if (!inputs[i]->box().contains(region)) {
            throw InvalidParameter("stackRegion: region " + region.str() + " is not inside input " +
                                   std::to_string(i) + " box " + inputs[i]->box().str());
        }
    }

    // Per-call scratch: row pointers and per-pixel gather arrays (no per-pixel allocation).
    std::vector<const float*> imgRow(n);
    std::vector<const MaskPixel*> mskRow(n);
    std::vector<const float*> varRow(n);
    std::vector<float> xs(n);
    std::vector<MaskPixel> ms(n);
    std::vector<float> vs(n);
    std::vector<int> accepted(3 * n + 1);
    std::vector<double> sortBuf(2 * n + 1);
    const int nInt = static_cast<int>(n);

    for (int y = region.y0; y < region.y1(); ++y) {
        for (std::size_t i = 0; i < n; ++i) {
            const MaskedImage& in = *inputs[i];
            const std::ptrdiff_t dx = region.x0 - in.box().x0;
            imgRow[i] = in.image.row(y) + dx;
            mskRow[i] = in.mask.row(y) + dx;
            varRow[i] = in.variance.row(y) + dx;
        }
        const std::ptrdiff_t odx = region.x0 - out.box().x0;
        float* outImg = out.image.row(y) + odx;
        MaskPixel* outMsk = out.mask.row(y) + odx;
        float* outVar = out.variance.row(y) + odx;
        for (int xi = 0; xi < region.width; ++xi) {
            for (std::size_t i = 0; i < n; ++i) {
                xs[i] = imgRow[i][xi];
                ms[i] = mskRow[i][xi];
                vs[i] = varRow[i][xi];
            }
            const PixelResult r = stackCore(xs.data(), ms.data(), vs.data(), weights.data(), nInt, ctrl,
                                            accepted.data(), sortBuf.data());
            outImg[xi] = static_cast<float>(r.value);
            outMsk[xi] = r.mask;
            outVar[xi] = static_cast<float>(r.variance);
            if (r.nClipped > 0) {
                ++result.nClippedPixels;
            }
            if (r.nMasked == nInt) {
                ++result.nNoData;
            }
        }
    }
    result.nPixels = region.area();
    return result;
}

/// Precondition: values are NaN-free (the caller keeps only finite, unmasked pixels, spec §3.4).
double meanClipUnweighted(std::vector<float>& values, double sigmaClip, int clipIter) {
    const std::size_t n0 = values.size();
    if (n0 == 0) {
        return kNaN;
    }
    if (!(std::isfinite(sigmaClip) && sigmaClip > 0.0) || clipIter < 1) {
        throw InvalidParameter("meanClipUnweighted: need sigmaClip > 0 and clipIter >= 1");
    }
    float* data = values.data();
    const double median = percentileSelect(data, n0, 0.5);
    const double q1 = percentileSelect(data, n0, 0.25);
    const double q3 = percentileSelect(data, n0, 0.75);
    const double iqrHalfWidth = sigmaClip * kIqToStdev * (q3 - q1);
    Moments cur;
    for (int k = 0; k < clipIter; ++k) {
        const double c = k == 0 ? median : cur.mean;
        const double h = (k > 0 && n0 > 1) ? sigmaClip * std::sqrt(cur.sampleVar) : iqrHalfWidth;
        if (std::isnan(c) || std::isnan(h)) {
            return kNaN;
        }
        cur = unitMoments(data, n0, [c, h](double xv) { return std::abs(xv - c) <= h; });
    }
    return cur.mean;
}

double quantile(std::vector<double>& values, double q) {
    if (!(q >= 0.0 && q <= 1.0)) {
        throw InvalidParameter("quantile: q = " + std::to_string(q) + " is outside [0, 1]");
    }
    return percentileSelect(values.data(), values.size(), q);
}

}  // namespace safeclip::kernel
