/// @file Stack.cpp  The per-pixel stacker (spec §4): MEAN and MEANCLIP, mask propagation, output pixel.
///
/// Determinism: every sum is accumulated in double in input order (stackPixel and stackRegion share
/// one core), so results are bitwise reproducible and independent of how a region is split.
#include "safeclip/kernel/Stack.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>

#include "Simd.h"
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
        int* prev = accepted + 2 * static_cast<std::ptrdiff_t>(n);
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

namespace {

// ---- the block stacker -------------------------------------------------------------------------
// stackRegion works on blocks of up to kBlock pixels of one row, structure-of-arrays: every loop
// runs over the pixels of the block with the inputs in the outer loop, so the per-pixel sums are
// still accumulated in input order (bit-identical to stackCore) while the compiler vectorises
// across pixels. Selections are 0/1 int32 lanes; "skip this input" becomes "add +0.0", which is
// exact (a sum that starts at +0.0 is never -0.0, and x + (+0.0) == x for every other x).
// Quartiles come from a bitonic sorting network run across the rows (min/max over the pixels of
// the block), so there is no branching per pixel. MEANCLIP converts and multiplies each input once
// per block (precompute) and reads the products in each of its clipIter passes. Pixels that need
// the SAT-style weight propagation are finished by a scalar loop; everything else is branch-free.

constexpr int kBlock = 128;

[[gnu::always_inline]] inline bool finiteBits(float x) {
    return (std::bit_cast<std::uint32_t>(x) & 0x7fffffffU) < 0x7f800000U;
}

/// t where the lane mask m is all ones, +0.0 where it is 0 (a branch-free select).
[[gnu::always_inline]] inline double andMask64(double t, std::int64_t m) {
    return std::bit_cast<double>(std::bit_cast<std::int64_t>(t) & m);
}

/// Per-pixel moments of a block (spec §4.1 steps 4-6), one lane per pixel.
struct BlockMoments {
    double mean[kBlock];
    double sampleVar[kBlock];
    double meanVar[kBlock];
    std::int32_t n[kBlock];
};

/// Scratch and row pointers of one stackRegion call.
struct BlockStacker {
    int n = 0;
    const float* const* img = nullptr;      ///< [n] image rows at the block start
    const float* const* var = nullptr;      ///< [n] variance rows at the block start
    const MaskPixel* const* msk = nullptr;  ///< [n] mask rows at the block start
    const double* w = nullptr;              ///< [n] weights
    std::int32_t* acc = nullptr;            ///< [n][kBlock] accepted (S0), 0/1
    std::int64_t* accM = nullptr;           ///< [n][kBlock] accepted (S0), lane mask 0/-1
    std::int64_t* sel = nullptr;            ///< [n][kBlock] current clip selection, lane mask 0/-1
    int nSort = 0;                          ///< rows of the sorting network: n rounded up to a power of 2
    float* srt = nullptr;                   ///< [nSort][kBlock] accepted values, sorted per pixel
    double* xd = nullptr;                   ///< [n][kBlock] double(x) (MEANCLIP blocks only)
    double* tx = nullptr;                   ///< [n][kBlock] w * double(x)
    double* tv = nullptr;                   ///< [n][kBlock] w² * double(v)
    std::int32_t n0[kBlock];
    MaskPixel orMask[kBlock];
    MaskPixel allMask[kBlock];

    /// §4.1.1-2: accepted set, its size and OR-mask; OR of all masks.
    [[gnu::always_inline]] void accept(int nb, MaskPixel andMask) {
        for (int p = 0; p < nb; ++p) {
            n0[p] = 0;
            orMask[p] = 0;
            allMask[p] = 0;
        }
        for (int i = 0; i < n; ++i) {
            const float* x = img[i];
            const MaskPixel* m = msk[i];
            std::int32_t* a = acc + static_cast<std::ptrdiff_t>(i) * kBlock;
            std::int64_t* am = accM + static_cast<std::ptrdiff_t>(i) * kBlock;
            for (int p = 0; p < nb; ++p) {
                const MaskPixel mp = m[p];
                const std::int32_t ok = (finiteBits(x[p]) ? 1 : 0) & ((mp & andMask) == 0 ? 1 : 0);
                a[p] = ok;
                am[p] = -static_cast<std::int64_t>(ok);
                n0[p] += ok;
                allMask[p] |= mp;
                orMask[p] |= mp & -ok;
            }
        }
    }

    /// Weighted moments of the selection s ([n][kBlock] lane masks), same expressions and order as
    /// weightedMoments. `Pre`: read double(x), w·x and w²·v from xd/tx/tv (filled by precompute:
    /// the same products, so the same bits) instead of converting and multiplying again. Only
    /// the sums a caller uses are accumulated (each one alone is exactly what it was with all):
    /// `SampleVar` Σw² and the s² pass, `InputVar` Σw²v for V from the inputs, `Count` the
    /// selection size (otherwise n is set to n0, right for s = accM). V is NaN when neither
    /// InputVar nor (SampleVar and !fromInput) provides it.
    template <bool Pre, bool SampleVar, bool InputVar, bool Count>
    [[gnu::always_inline]] void moments(const std::int64_t* s, int nb, bool fromInput,
                                        BlockMoments& r) const {
        double sw[kBlock];
        double swx[kBlock];
        double sw2[kBlock];
        double sw2v[kBlock];
        std::int64_t cnt[kBlock];
        for (int p = 0; p < nb; ++p) {
            sw[p] = 0.0;
            swx[p] = 0.0;
            sw2[p] = 0.0;
            sw2v[p] = 0.0;
            cnt[p] = 0;
        }
        for (int i = 0; i < n; ++i) {
            const double wi = w[i];
            const double wsq = wi * wi;
            const std::ptrdiff_t row = static_cast<std::ptrdiff_t>(i) * kBlock;
            const float* x = img[i];
            const float* v = var[i];
            const double* txi = tx + row;
            const double* tvi = tv + row;
            const std::int64_t* si = s + row;
            for (int p = 0; p < nb; ++p) {
                const std::int64_t on = si[p];
                const double txp = Pre ? txi[p] : wi * static_cast<double>(x[p]);
                sw[p] += andMask64(wi, on);
                swx[p] += andMask64(txp, on);
                if constexpr (SampleVar) {
                    sw2[p] += andMask64(wsq, on);
                }
                if constexpr (InputVar) {
                    const double tvp = Pre ? tvi[p] : wsq * static_cast<double>(v[p]);
                    sw2v[p] += andMask64(tvp, on);
                }
                if constexpr (Count) {
                    cnt[p] -= on;
                }
            }
        }
        for (int p = 0; p < nb; ++p) {
            r.mean[p] = swx[p] / sw[p];
            r.n[p] = Count ? static_cast<std::int32_t>(cnt[p]) : n0[p];
        }
        if constexpr (SampleVar) {
            double sdev[kBlock];
            for (int p = 0; p < nb; ++p) {
                sdev[p] = 0.0;
            }
            for (int i = 0; i < n; ++i) {
                const double wi = w[i];
                const std::ptrdiff_t row = static_cast<std::ptrdiff_t>(i) * kBlock;
                const float* x = img[i];
                const double* xdi = xd + row;
                const std::int64_t* si = s + row;
                for (int p = 0; p < nb; ++p) {
                    const double d = (Pre ? xdi[p] : static_cast<double>(x[p])) - r.mean[p];
                    const double t = wi * d * d;
                    sdev[p] += andMask64(t, si[p]);
                }
            }
            for (int p = 0; p < nb; ++p) {
                const double swSq = sw[p] * sw[p];
                r.sampleVar[p] = (sdev[p] / sw[p]) * swSq / (swSq - sw2[p]);
            }
        } else {
            for (int p = 0; p < nb; ++p) {
                r.sampleVar[p] = kNaN;
            }
        }
        for (int p = 0; p < nb; ++p) {
            const double swSq = sw[p] * sw[p];
            if (fromInput) {
                r.meanVar[p] = InputVar ? sw2v[p] / swSq : kNaN;
            } else {
                r.meanVar[p] = SampleVar ? r.sampleVar[p] * sw2[p] / swSq : kNaN;
            }
        }
    }

    /// double(x), w·x and w²·v of every input, once per block (MEANCLIP reads them clipIter times).
    [[gnu::always_inline]] void precompute(int nb) {
        for (int i = 0; i < n; ++i) {
            const double wi = w[i];
            const double wsq = wi * wi;
            const std::ptrdiff_t row = static_cast<std::ptrdiff_t>(i) * kBlock;
            const float* x = img[i];
            const float* v = var[i];
            for (int p = 0; p < nb; ++p) {
                const double xv = static_cast<double>(x[p]);
                xd[row + p] = xv;
                tx[row + p] = wi * xv;
                tv[row + p] = wsq * static_cast<double>(v[p]);
            }
        }
    }

    /// Sort the accepted values of every pixel (S0 in srt[0..n0), +inf above) with a bitonic
    /// network across the rows, vectorised over the pixels of the block. Only the values matter
    /// for the quartiles, so the order of ties is irrelevant; +inf pads both the rejected inputs
    /// and the rows up to nSort (accepted values are finite, so no NaN enters).
    [[gnu::always_inline]] void sortAccepted(int nb) {
        constexpr float kInf = std::numeric_limits<float>::infinity();
        for (int i = 0; i < nSort; ++i) {
            float* d = srt + static_cast<std::ptrdiff_t>(i) * kBlock;
            if (i < n) {
                const float* x = img[i];
                const std::int32_t* a = acc + static_cast<std::ptrdiff_t>(i) * kBlock;
                for (int p = 0; p < nb; ++p) {
                    d[p] = a[p] != 0 ? x[p] : kInf;
                }
                for (int p = nb; p < kBlock; ++p) {
                    d[p] = kInf;
                }
            } else {
                for (int p = 0; p < kBlock; ++p) {
                    d[p] = kInf;
                }
            }
        }
        for (int k = 2; k <= nSort; k <<= 1) {
            for (int j = k >> 1; j > 0; j >>= 1) {
                for (int i = 0; i < nSort; ++i) {
                    const int l = i ^ j;
                    if (l <= i) {
                        continue;
                    }
                    // ascending where bit k of i is 0: the smaller value goes to row i
                    float* lo = srt + static_cast<std::ptrdiff_t>((i & k) == 0 ? i : l) * kBlock;
                    float* hi = srt + static_cast<std::ptrdiff_t>((i & k) == 0 ? l : i) * kBlock;
                    for (int p = 0; p < kBlock; ++p) {
                        const float a = lo[p];
                        const float b = hi[p];
                        lo[p] = b < a ? b : a;
                        hi[p] = b < a ? a : b;
                    }
                }
            }
        }
    }

    /// afw percentile at q of S0 (interpolated between ranks), per pixel; lanes with n0 == 0 get NaN.
    [[gnu::always_inline]] void percentile(int nb, double q, double* out) const {
        for (int p = 0; p < nb; ++p) {
            const int np = n0[p];
            if (np == 0) {
                out[p] = kNaN;
                continue;
            }
            const double idx = q * static_cast<double>(np - 1);
            const int q1 = static_cast<int>(idx);
            const double lo = srt[static_cast<std::ptrdiff_t>(q1) * kBlock + p];
            if (q1 + 1 >= np) {
                out[p] = lo;
                continue;
            }
            const double hi = srt[static_cast<std::ptrdiff_t>(q1 + 1) * kBlock + p];
            const double w1 = static_cast<double>(q1 + 1) - idx;
            const double w2 = idx - static_cast<double>(q1);
            out[p] = w1 * lo + w2 * hi;
        }
    }

    /// §4.2 MEANCLIP of the block: quartiles of S0, then clipIter selections and moments. A lane
    /// whose centre or half-width is NaN selects nothing, which gives exactly stackCore's
    /// Moments{} (n = 0, NaN mean and variance) in that and every later iteration; a lane that
    /// has converged reproduces itself, so running every iteration equals stackCore's early stop.
    [[gnu::always_inline]] void meanClip(int nb, const StackControl& ctrl, BlockMoments& cur) {
        sortAccepted(nb);
        precompute(nb);
        double median[kBlock];
        double q1[kBlock];
        double q3[kBlock];
        percentile(nb, 0.5, median);
        percentile(nb, 0.25, q1);
        percentile(nb, 0.75, q3);
        double iqrHalf[kBlock];
        double c[kBlock];
        double h[kBlock];
        for (int p = 0; p < nb; ++p) {
            iqrHalf[p] = ctrl.sigmaClip * kIqToStdev * (q3[p] - q1[p]);
            c[p] = median[p];
            h[p] = iqrHalf[p];
        }
        const bool fromInput = ctrl.calcErrorFromInputVariance;
        for (int k = 0; k < ctrl.clipIter; ++k) {
            if (k > 0) {
                for (int p = 0; p < nb; ++p) {
                    c[p] = cur.mean[p];
                    h[p] = n0[p] > 1 ? ctrl.sigmaClip * std::sqrt(cur.sampleVar[p]) : iqrHalf[p];
                }
            }
            for (int i = 0; i < n; ++i) {
                const std::ptrdiff_t row = static_cast<std::ptrdiff_t>(i) * kBlock;
                const double* x = xd + row;
                const std::int64_t* ai = accM + row;
                std::int64_t* si = sel + row;
                for (int p = 0; p < nb; ++p) {
                    const double d = std::abs(x[p] - c[p]);
                    si[p] = d <= h[p] ? ai[p] : std::int64_t{0};
                }
            }
            // Intermediate iterations need μ and s² (the next centre and half-width); the last one
            // μ, V and the count (s² only for a variance that is not from the inputs).
            if (k + 1 < ctrl.clipIter) {
                moments<true, true, false, false>(sel, nb, fromInput, cur);
            } else if (fromInput) {
                moments<true, false, true, true>(sel, nb, fromInput, cur);
            } else {
                moments<true, true, false, true>(sel, nb, fromInput, cur);
            }
        }
    }

    /// §4.1.3 for one pixel p of the block (scalar; only pixels with a propagated bit get here).
    MaskPixel propagate(int p, const StackControl& ctrl) const {
        MaskPixel bits = 0;
        double sw = 0.0;
        for (int i = 0; i < n; ++i) {
            sw += acc[static_cast<std::ptrdiff_t>(i) * kBlock + p] != 0 ? w[i] : 0.0;
        }
        for (const auto& [bit, threshold] : ctrl.propagationThresholds) {
            if ((allMask[p] & bit) == 0) {
                continue;
            }
            double rejected = 0.0;
            for (int i = 0; i < n; ++i) {
                if (acc[static_cast<std::ptrdiff_t>(i) * kBlock + p] == 0 && (msk[i][p] & bit) != 0) {
                    rejected += w[i];
                }
            }
            if (rejected / (sw + rejected) > threshold) {
                bits |= bit;
            }
        }
        return bits;
    }

    /// Stack the block with ctrl and write the nb output pixels (§4.3).
    [[gnu::always_inline]] void stack(int nb, const StackControl& ctrl, float* outImg, MaskPixel* outMsk,
                                      float* outVar, StackResult& result, BlockMoments& mom) {
        if (ctrl.statistic == Statistic::MeanClip) {
            meanClip(nb, ctrl, mom);
        } else {
            if (ctrl.calcErrorFromInputVariance) {  // n = n0: the selection is S0
                moments<false, false, true, false>(accM, nb, true, mom);
            } else {
                moments<false, true, false, false>(accM, nb, false, mom);
            }
        }
        MaskPixel propBits = 0;
        for (const auto& pt : ctrl.propagationThresholds) {
            propBits |= pt.first;
        }
        MaskPixel mapSrc = 0;
        for (const auto& mm : ctrl.maskMap) {
            mapSrc |= mm.first;
        }
        for (int p = 0; p < nb; ++p) {
            const int nMasked = n - n0[p];
            MaskPixel om = orMask[p];
            if (nMasked > 0 && (allMask[p] & propBits) != 0) {
                om |= propagate(p, ctrl);
            }
            double value = mom.mean[p];
            double variance = mom.meanVar[p];
            const int nClipped = n0[p] - mom.n[p];
            if (n0[p] == 0) {
                om = ctrl.noGoodPixelsMask;
                value = kNaN;
                variance = kNaN;
            }
            if (nClipped > 0) {
                om |= ctrl.clippedBit;
                ++result.nClippedPixels;
            }
            if (nMasked > 0 && (allMask[p] & mapSrc) != 0) {
                for (const auto& [src, dst] : ctrl.maskMap) {
                    if ((allMask[p] & src) != 0) {
                        om |= dst;
                    }
                }
            }
            if (nMasked == n) {
                ++result.nNoData;
            }
            outImg[p] = static_cast<float>(value);
            outMsk[p] = om;
            outVar[p] = static_cast<float>(variance);
        }
    }
};

void checkRegionArgs(const char* fn, const std::vector<const MaskedImage*>& inputs,
                     std::span<const float> weights, const Box& region, const MaskedImage& out) {
    const std::size_t n = inputs.size();
    if (weights.size() != n) {
        throw InvalidParameter(std::string(fn) + ": " + std::to_string(n) + " inputs but " +
                               std::to_string(weights.size()) + " weights");
    }
    if (region.empty()) {
        return;
    }
    if (!out.box().contains(region)) {
        throw InvalidParameter(std::string(fn) + ": region " + region.str() +
                               " is not inside the output box " + out.box().str());
    }
    for (std::size_t i = 0; i < n; ++i) {
        if (inputs[i] == nullptr) {
            throw InvalidParameter(std::string(fn) + ": input " + std::to_string(i) + " is null");
        }
        if (!inputs[i]->box().contains(region)) {
            throw InvalidParameter(std::string(fn) + ": region " + region.str() + " is not inside input " +
                                   std::to_string(i) + " box " + inputs[i]->box().str());
        }
    }
}

/// The block loop shared by stackRegion and stackRegionPair (ctrlB/outB/resB null for one output).
/// Always inlined into the two entry points below, which compile it for AVX2 and for the baseline
/// ISA; both do the same IEEE operations in the same order (no FMA), so their results are identical.
[[gnu::always_inline]] inline void stackBlocksImpl(const std::vector<const MaskedImage*>& inputs,
                                                   std::span<const float> weights, const StackControl& ctrlA,
                                                   const Box& region, MaskedImage& outA, StackResult& resA,
                                                   const StackControl* ctrlB, MaskedImage* outB,
                                                   StackResult* resB) {
    const std::size_t n = inputs.size();
    const int nInt = static_cast<int>(n);
    std::vector<const float*> imgRow(n);
    std::vector<const MaskPixel*> mskRow(n);
    std::vector<const float*> varRow(n);
    std::vector<double> w(weights.begin(), weights.end());
    std::vector<std::int32_t> acc(n * kBlock + 1);
    std::vector<std::int64_t> accM(n * kBlock + 1);
    std::vector<std::int64_t> sel(n * kBlock + 1);
    const int nSort = static_cast<int>(std::bit_ceil(n));
    std::vector<float> srt(static_cast<std::size_t>(nSort) * kBlock + 1);
    std::vector<double> xd(n * kBlock + 1);
    std::vector<double> tx(n * kBlock + 1);
    std::vector<double> tv(n * kBlock + 1);
    auto bs = std::make_unique<BlockStacker>();
    auto mom = std::make_unique<BlockMoments>();
    bs->n = nInt;
    bs->img = imgRow.data();
    bs->var = varRow.data();
    bs->msk = mskRow.data();
    bs->w = w.data();
    bs->acc = acc.data();
    bs->accM = accM.data();
    bs->sel = sel.data();
    bs->nSort = nSort;
    bs->srt = srt.data();
    bs->xd = xd.data();
    bs->tx = tx.data();
    bs->tv = tv.data();
    std::vector<std::ptrdiff_t> dx(n);
    for (std::size_t i = 0; i < n; ++i) {
        dx[i] = region.x0 - inputs[i]->box().x0;
    }
    const std::ptrdiff_t odxA = region.x0 - outA.box().x0;
    const std::ptrdiff_t odxB = outB != nullptr ? region.x0 - outB->box().x0 : 0;
    for (int y = region.y0; y < region.y1(); ++y) {
        for (int xb = 0; xb < region.width; xb += kBlock) {
            const int nb = std::min(kBlock, region.width - xb);
            for (std::size_t i = 0; i < n; ++i) {
                const MaskedImage& in = *inputs[i];
                imgRow[i] = in.image.row(y) + dx[i] + xb;
                mskRow[i] = in.mask.row(y) + dx[i] + xb;
                varRow[i] = in.variance.row(y) + dx[i] + xb;
            }
            bs->accept(nb, ctrlA.andMask);
            bs->stack(nb, ctrlA, outA.image.row(y) + odxA + xb, outA.mask.row(y) + odxA + xb,
                      outA.variance.row(y) + odxA + xb, resA, *mom);
            if (ctrlB != nullptr) {
                bs->stack(nb, *ctrlB, outB->image.row(y) + odxB + xb, outB->mask.row(y) + odxB + xb,
                          outB->variance.row(y) + odxB + xb, *resB, *mom);
            }
        }
    }
    resA.nPixels = region.area();
    if (resB != nullptr) {
        resB->nPixels = region.area();
    }
}

#define SAFECLIP_STACK_BLOCKS_ARGS                                                                           \
    const std::vector<const MaskedImage*>&inputs, std::span<const float> weights, const StackControl &ctrlA, \
        const Box &region, MaskedImage &outA, StackResult &resA, const StackControl *ctrlB,                  \
        MaskedImage *outB, StackResult *resB

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2"))) void stackBlocksAvx2(SAFECLIP_STACK_BLOCKS_ARGS) {
    stackBlocksImpl(inputs, weights, ctrlA, region, outA, resA, ctrlB, outB, resB);
}
#else
void stackBlocksAvx2(SAFECLIP_STACK_BLOCKS_ARGS) {
    stackBlocksImpl(inputs, weights, ctrlA, region, outA, resA, ctrlB, outB, resB);
}
#endif

void stackBlocksBaseline(SAFECLIP_STACK_BLOCKS_ARGS) {
    stackBlocksImpl(inputs, weights, ctrlA, region, outA, resA, ctrlB, outB, resB);
}

void stackBlocks(SAFECLIP_STACK_BLOCKS_ARGS) {
    if (detail::useAvx2()) {
        stackBlocksAvx2(inputs, weights, ctrlA, region, outA, resA, ctrlB, outB, resB);
    } else {
        stackBlocksBaseline(inputs, weights, ctrlA, region, outA, resA, ctrlB, outB, resB);
    }
}
#undef SAFECLIP_STACK_BLOCKS_ARGS

}  // namespace

StackResult stackRegion(const std::vector<const MaskedImage*>& inputs, std::span<const float> weights,
                        const StackControl& ctrl, const Box& region, MaskedImage& out) {
    ctrl.validate();
    checkRegionArgs("stackRegion", inputs, weights, region, out);
    StackResult result;
    if (region.empty()) {
        return result;
    }
    stackBlocks(inputs, weights, ctrl, region, out, result, nullptr, nullptr, nullptr);
    return result;
}

std::pair<StackResult, StackResult> stackRegionPair(const std::vector<const MaskedImage*>& inputs,
                                                    std::span<const float> weights, const StackControl& ctrlA,
                                                    const StackControl& ctrlB, const Box& region,
                                                    MaskedImage& outA, MaskedImage& outB) {
    ctrlA.validate();
    ctrlB.validate();
    checkRegionArgs("stackRegionPair", inputs, weights, region, outA);
    checkRegionArgs("stackRegionPair", inputs, weights, region, outB);
    std::pair<StackResult, StackResult> result;
    if (region.empty()) {
        return result;
    }
    if (ctrlA.andMask != ctrlB.andMask) {  // different accepted sets: nothing to share
        stackBlocks(inputs, weights, ctrlA, region, outA, result.first, nullptr, nullptr, nullptr);
        stackBlocks(inputs, weights, ctrlB, region, outB, result.second, nullptr, nullptr, nullptr);
        return result;
    }
    stackBlocks(inputs, weights, ctrlA, region, outA, result.first, &ctrlB, &outB, &result.second);
    return result;
}

bool detail::useAvx2() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    static const bool yes = [] {
        const char* off = std::getenv("SAFECLIP_NO_AVX2");  // for checking that both paths agree
        return __builtin_cpu_supports("avx2") && (off == nullptr || *off == '\0' || *off == '0');
    }();
    return yes;
#else
    return false;
#endif
}

double quantile(std::vector<double>& values, double q) {
    if (!(q >= 0.0 && q <= 1.0)) {
        throw InvalidParameter("quantile: q = " + std::to_string(q) + " is outside [0, 1]");
    }
    return percentileSelect(values.data(), values.size(), q);
}

}  // namespace safeclip::kernel
