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
#include <optional>
#include <string>

#include "safeclip/kernel/Error.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

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
    [[gnu::always_inline]] void moments(const std::int64_t* s, int nb, bool fromInput, BlockMoments& r) const {
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
    [[gnu::always_inline]] void stack(int nb, const StackControl& ctrl, float* outImg, MaskPixel* outMsk, float* outVar,
               StackResult& result, BlockMoments& mom) {
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

void checkRegionArgs(const char* fn, const std::vector<const MaskedImage*>& inputs, std::span<const float> weights,
                     const Box& region, const MaskedImage& out) {
    const std::size_t n = inputs.size();
    if (weights.size() != n) {
        throw InvalidParameter(std::string(fn) + ": " + std::to_string(n) + " inputs but " +
                               std::to_string(weights.size()) + " weights");
    }
    if (region.empty()) {
        return;
    }
    if (!out.box().contains(region)) {
        throw InvalidParameter(std::string(fn) + ": region " + region.str() + " is not inside the output box " +
                               out.box().str());
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
[[gnu::always_inline]] inline void stackBlocksImpl(const std::vector<const MaskedImage*>& inputs, std::span<const float> weights,
                 const StackControl& ctrlA, const Box& region, MaskedImage& outA, StackResult& resA,
                 const StackControl* ctrlB, MaskedImage* outB, StackResult* resB) {
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

#define SAFECLIP_STACK_BLOCKS_ARGS                                                                       \
    const std::vector<const MaskedImage*>&inputs, std::span<const float> weights, const StackControl &ctrlA, \
        const Box &region, MaskedImage &outA, StackResult &resA, const StackControl *ctrlB, MaskedImage *outB, \
        StackResult *resB

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2"))) void stackBlocksAvx2(SAFECLIP_STACK_BLOCKS_ARGS) {
    stackBlocksImpl(inputs, weights, ctrlA, region, outA, resA, ctrlB, outB, resB);
}
bool useAvx2() {
    static const bool yes = [] {
        const char* off = std::getenv("SAFECLIP_NO_AVX2");  // for checking that both paths agree
        return __builtin_cpu_supports("avx2") && (off == nullptr || *off == '\0' || *off == '0');
    }();
    return yes;
}
#else
void stackBlocksAvx2(SAFECLIP_STACK_BLOCKS_ARGS) {
    stackBlocksImpl(inputs, weights, ctrlA, region, outA, resA, ctrlB, outB, resB);
}
bool useAvx2() { return false; }
#endif

void stackBlocksBaseline(SAFECLIP_STACK_BLOCKS_ARGS) {
    stackBlocksImpl(inputs, weights, ctrlA, region, outA, resA, ctrlB, outB, resB);
}

void stackBlocks(SAFECLIP_STACK_BLOCKS_ARGS) {
    if (useAvx2()) {
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

namespace {

/// Order-preserving unsigned key of a finite float: a < b gives key(a) < key(b) (and -0.0 < +0.0).
[[gnu::always_inline]] inline std::uint32_t floatKey(float f) {
    const std::uint32_t b = std::bit_cast<std::uint32_t>(f);
    return (b & 0x80000000U) != 0 ? ~b : (b | 0x80000000U);
}

/// Interleaved partial sums of the unweighted clip (kClipLanes lanes: lane l takes the values
/// j ≡ l mod kClipLanes, a tail shorter than kClipLanes goes to lanes 0..). "Skip" is written as
/// "+0.0", which is exact, so the loops have no data-dependent branch. The AVX2 and the portable
/// versions do the same IEEE operations per lane (no FMA), so they agree bit for bit.
constexpr std::size_t kClipLanes = 8;

struct ClipLanes {
    double sum[kClipLanes] = {};        ///< Σ x (or Σ (x - mean)²) of the kept values, per lane
    std::int64_t count[kClipLanes] = {};  ///< kept values per lane
};

/// Lanes of Σ x and the count over |x - c| <= h (dev = false), or of Σ (x - mean)² (dev = true).
void clipLanesPortable(const float* values, std::size_t n, double c, double h, bool dev, double mean,
                       ClipLanes& out) {
    for (std::size_t j = 0; j < n; ++j) {
        const std::size_t l = j % kClipLanes;
        const double xv = values[j];
        const std::int64_t m = -static_cast<std::int64_t>(std::abs(xv - c) <= h);
        const double d = xv - mean;
        const double t = dev ? d * d : xv;
        out.sum[l] += std::bit_cast<double>(std::bit_cast<std::int64_t>(t) & m);
        out.count[l] -= m;
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2"))) void clipLanesAvx2(const float* values, std::size_t n, double c, double h,
                                                   bool dev, double mean, ClipLanes& out) {
    const std::size_t nFull = n - n % kClipLanes;
    const __m256d vc = _mm256_set1_pd(c);
    const __m256d vh = _mm256_set1_pd(h);
    const __m256d vmean = _mm256_set1_pd(mean);
    const __m256d sign = _mm256_set1_pd(-0.0);
    __m256d s0 = _mm256_setzero_pd();
    __m256d s1 = _mm256_setzero_pd();
    __m256i k0 = _mm256_setzero_si256();
    __m256i k1 = _mm256_setzero_si256();
    for (std::size_t j = 0; j < nFull; j += kClipLanes) {
        const __m256 x8 = _mm256_loadu_ps(values + j);
        const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(x8));
        const __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(x8, 1));
        const __m256d m0 = _mm256_cmp_pd(_mm256_andnot_pd(sign, _mm256_sub_pd(x0, vc)), vh, _CMP_LE_OQ);
        const __m256d m1 = _mm256_cmp_pd(_mm256_andnot_pd(sign, _mm256_sub_pd(x1, vc)), vh, _CMP_LE_OQ);
        __m256d t0 = x0;
        __m256d t1 = x1;
        if (dev) {
            const __m256d d0 = _mm256_sub_pd(x0, vmean);
            const __m256d d1 = _mm256_sub_pd(x1, vmean);
            t0 = _mm256_mul_pd(d0, d0);
            t1 = _mm256_mul_pd(d1, d1);
        }
        s0 = _mm256_add_pd(s0, _mm256_and_pd(t0, m0));
        s1 = _mm256_add_pd(s1, _mm256_and_pd(t1, m1));
        k0 = _mm256_sub_epi64(k0, _mm256_castpd_si256(m0));
        k1 = _mm256_sub_epi64(k1, _mm256_castpd_si256(m1));
    }
    _mm256_storeu_pd(out.sum, s0);
    _mm256_storeu_pd(out.sum + 4, s1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.count), k0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.count + 4), k1);
    ClipLanes tail;
    clipLanesPortable(values + nFull, n - nFull, c, h, dev, mean, tail);
    for (std::size_t l = 0; l < kClipLanes; ++l) {
        out.sum[l] += tail.sum[l];  // the tail's lane l holds at most one term: x + (t or +0.0)
        out.count[l] += tail.count[l];
    }
}
#endif

ClipLanes clipLanes(const float* values, std::size_t n, double c, double h, bool dev, double mean) {
    ClipLanes out;
#if defined(__GNUC__) && defined(__x86_64__)
    if (useAvx2()) {
        clipLanesAvx2(values, n, c, h, dev, mean, out);
        return out;
    }
#endif
    clipLanesPortable(values, n, c, h, dev, mean, out);
    return out;
}

/// Unit-weight moments of the values with |x - c| <= h (weightedMoments with every w = 1): sums in
/// sample order over kClipLanes interleaved lanes, added in lane order. The squared deviations
/// are only summed when the caller needs s² (not in the last iteration, whose s² is never used).
Moments clipMoments(const float* values, std::size_t n, double c, double h, bool needSampleVar) {
    Moments r;
    const ClipLanes s = clipLanes(values, n, c, h, false, 0.0);
    double sx = 0.0;
    std::int64_t k = 0;
    for (std::size_t l = 0; l < kClipLanes; ++l) {
        sx += s.sum[l];
        k += s.count[l];
    }
    const double sw = static_cast<double>(k);  // Σ 1.0 over k terms, exact
    r.n = static_cast<int>(std::min<std::int64_t>(k, std::numeric_limits<int>::max()));
    r.mean = sx / sw;
    if (!needSampleVar) {
        return r;
    }
    const ClipLanes d = clipLanes(values, n, c, h, true, r.mean);
    double sdev = 0.0;
    for (std::size_t l = 0; l < kClipLanes; ++l) {
        sdev += d.sum[l];
    }
    const double sw_sq = sw * sw;
    const double sw2 = sw;  // Σ w² with w = 1
    r.sampleVar = (sdev / sw) * sw_sq / (sw_sq - sw2);
    return r;
}

}  // namespace

namespace {

/// The values at the given ranks (sorted, unique, < n) of a NaN-free sample, without reordering
/// it: a histogram of the top 16 bits of the order-preserving key, then of the low 16 bits inside
/// the bins that hold a needed rank. Memory is fixed (at most 7 × 256 KiB) whatever the values.
std::vector<float> selectRanksHistogram(std::span<const float> values, const std::vector<std::size_t>& ranks) {
    const std::size_t n = values.size();
    // Pass 1. Two interleaved counters keep runs of equal bins (a flat variance plane) from
    // serialising on one memory location.
    constexpr std::size_t kBins = std::size_t{1} << 16;
    std::vector<std::uint32_t> hist(2 * kBins, 0);
    const float* v = values.data();
    std::size_t j = 0;
    for (; j + 2 <= n; j += 2) {
        ++hist[floatKey(v[j]) >> 16];
        ++hist[kBins + (floatKey(v[j + 1]) >> 16)];
    }
    if (j < n) {
        ++hist[floatKey(v[j]) >> 16];
    }
    // Every needed rank's bin and the rank of that bin's first value.
    std::vector<std::uint32_t> rankBin(ranks.size());
    std::vector<std::size_t> binStart(ranks.size());
    {
        std::size_t below = 0;
        std::size_t r = 0;
        for (std::size_t b = 0; b < kBins && r < ranks.size(); ++b) {
            const std::size_t c = std::size_t{hist[b]} + hist[kBins + b];
            while (r < ranks.size() && ranks[r] < below + c) {
                rankBin[r] = static_cast<std::uint32_t>(b);
                binStart[r] = below;
                ++r;
            }
            below += c;
        }
    }
    // Pass 2: one table per bin that holds a needed rank, plus a dummy table that takes every
    // other value so the loop has no branch.
    std::vector<std::uint32_t> bins(rankBin);
    bins.erase(std::unique(bins.begin(), bins.end()), bins.end());
    std::vector<std::uint8_t> slot(kBins, static_cast<std::uint8_t>(bins.size()));
    for (std::size_t b = 0; b < bins.size(); ++b) {
        slot[bins[b]] = static_cast<std::uint8_t>(b);
    }
    std::vector<std::uint32_t> low((bins.size() + 1) * kBins, 0);
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t key = floatKey(v[i]);
        ++low[slot[key >> 16] * kBins + (key & 0xffffU)];
    }
    // The exact value at each rank, from the cumulative counts inside its bin.
    std::vector<float> out(ranks.size());
    for (std::size_t r = 0; r < ranks.size(); ++r) {
        const std::uint32_t* h = low.data() + std::size_t{slot[rankBin[r]]} * kBins;
        std::size_t below = binStart[r];
        std::uint32_t lo = 0;
        while (below + h[lo] <= ranks[r]) {
            below += h[lo];
            ++lo;
        }
        const std::uint32_t key = (rankBin[r] << 16) | lo;
        out[r] = std::bit_cast<float>((key & 0x80000000U) != 0 ? (key & 0x7fffffffU) : ~key);
    }
    return out;
}

/// Samples from this size on are bracketed by a regular subsample; smaller ones are selected in
/// a copy. The subsample has n/64 values, at least 2^12 and at most 2^16: selecting in it and
/// among the bracketed values then cost about the same.
constexpr std::size_t kMinBracketed = std::size_t{1} << 17;
constexpr std::size_t kMaxSub = std::size_t{1} << 16;

std::size_t subsampleSize(std::size_t n) { return std::min(kMaxSub, std::bit_floor(n / 64)); }

/// The values at the given ranks (sorted, unique, < size) of `v`, by nth_element (reorders v);
/// each selection runs only above the previous rank, where the next one must be.
std::vector<float> selectRanksInPlace(std::vector<float>& v, const std::vector<std::size_t>& ranks) {
    std::vector<float> out(ranks.size());
    auto first = v.begin();
    for (std::size_t r = 0; r < ranks.size(); ++r) {
        const auto it = v.begin() + static_cast<std::ptrdiff_t>(ranks[r]);
        std::nth_element(first, it, v.end());
        out[r] = *it;
        first = it + 1;
    }
    return out;
}

/// A value interval [lo, hi] expected to hold some needed ranks. One pass over the sample counts
/// the values below lo, equal to lo and equal to hi, and collects those strictly inside: ties at
/// the bounds (a flat variance plane) cost no memory.
struct Bracket {
    float lo = 0.0F;
    float hi = 0.0F;
    std::size_t below = 0;
    std::size_t atLo = 0;
    std::size_t atHi = 0;  ///< stays 0 when lo == hi (those values are in atLo)
    std::vector<float> inner;

    /// The value at rank r of the whole sample if this bracket holds it (reorders `inner`).
    std::optional<float> valueAt(std::size_t r) {
        if (r < below) {
            return std::nullopt;
        }
        std::size_t k = r - below;
        if (k < atLo) {
            return lo;
        }
        k -= atLo;
        if (k < inner.size()) {
            const auto it = inner.begin() + static_cast<std::ptrdiff_t>(k);
            std::nth_element(inner.begin(), it, inner.end());
            return *it;
        }
        k -= inner.size();
        if (k < atHi) {
            return hi;
        }
        return std::nullopt;
    }
};

/// Portable pass over v[0..n). False (and stop) as soon as a bracket holds more than `cap` values
/// strictly inside: memory stays bounded.
bool bracketPassPortable(const float* v, std::size_t n, std::vector<Bracket>& br, std::size_t cap) {
    for (std::size_t i = 0; i < n; ++i) {
        const float x = v[i];
        for (Bracket& b : br) {
            b.below += x < b.lo ? 1 : 0;
            b.atLo += x == b.lo ? 1 : 0;
            b.atHi += (x == b.hi && b.hi != b.lo) ? 1 : 0;
            if (x > b.lo && x < b.hi) {
                if (b.inner.size() >= cap) {
                    return false;
                }
                b.inner.push_back(x);
            }
        }
    }
    return true;
}

#if defined(__GNUC__) && defined(__x86_64__)
/// Add the 32-bit lane counts of bracketPassAvx2 into the brackets and reset them.
__attribute__((target("avx2"))) void foldBracketCounts(std::vector<Bracket>& br, __m256i* below, __m256i* atLo,
                                                       __m256i* atHi) {
    for (std::size_t b = 0; b < br.size(); ++b) {
        alignas(32) std::int32_t c[3][8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(c[0]), below[b]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(c[1]), atLo[b]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(c[2]), atHi[b]);
        for (int l = 0; l < 8; ++l) {
            br[b].below += static_cast<std::size_t>(c[0][l]);
            br[b].atLo += static_cast<std::size_t>(c[1][l]);
            br[b].atHi += static_cast<std::size_t>(c[2][l]);
        }
        below[b] = _mm256_setzero_si256();
        atLo[b] = _mm256_setzero_si256();
        atHi[b] = _mm256_setzero_si256();
    }
}

/// The same pass, eight values at a time (counts in 32-bit lanes, folded before they could
/// overflow; inner values picked by their lane bits), so the counts and the inner values (and
/// their order) are exactly the portable pass's.
__attribute__((target("avx2"))) bool bracketPassAvx2(const float* v, std::size_t n, std::vector<Bracket>& br,
                                                     std::size_t cap) {
    constexpr std::size_t kMaxBrackets = 8;
    const std::size_t nb = br.size();
    if (nb > kMaxBrackets) {
        return bracketPassPortable(v, n, br, cap);
    }
    __m256 lo[kMaxBrackets];
    __m256 hi[kMaxBrackets];
    __m256 hiEq[kMaxBrackets];  // hi, or NaN (never equal) when hi == lo
    __m256i below[kMaxBrackets];
    __m256i atLo[kMaxBrackets];
    __m256i atHi[kMaxBrackets];
    for (std::size_t b = 0; b < nb; ++b) {
        lo[b] = _mm256_set1_ps(br[b].lo);
        hi[b] = _mm256_set1_ps(br[b].hi);
        hiEq[b] = _mm256_set1_ps(br[b].hi != br[b].lo ? br[b].hi : std::numeric_limits<float>::quiet_NaN());
        below[b] = _mm256_setzero_si256();
        atLo[b] = _mm256_setzero_si256();
        atHi[b] = _mm256_setzero_si256();
    }
    constexpr std::size_t kFoldBlocks = std::size_t{1} << 28;
    std::size_t i = 0;
    std::size_t blocks = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(v + i);
        for (std::size_t b = 0; b < nb; ++b) {
            below[b] = _mm256_sub_epi32(below[b], _mm256_castps_si256(_mm256_cmp_ps(x, lo[b], _CMP_LT_OQ)));
            atLo[b] = _mm256_sub_epi32(atLo[b], _mm256_castps_si256(_mm256_cmp_ps(x, lo[b], _CMP_EQ_OQ)));
            atHi[b] = _mm256_sub_epi32(atHi[b], _mm256_castps_si256(_mm256_cmp_ps(x, hiEq[b], _CMP_EQ_OQ)));
            // values strictly inside, appended in index order (each bracket's order is the
            // portable pass's; a bracket past its cap fails the pass there as well)
            unsigned in = static_cast<unsigned>(_mm256_movemask_ps(
                _mm256_and_ps(_mm256_cmp_ps(x, lo[b], _CMP_GT_OQ), _mm256_cmp_ps(x, hi[b], _CMP_LT_OQ))));
            while (in != 0) {
                if (br[b].inner.size() >= cap) {
                    return false;
                }
                br[b].inner.push_back(v[i + static_cast<std::size_t>(std::countr_zero(in))]);
                in &= in - 1;
            }
        }
        if (++blocks == kFoldBlocks) {
            foldBracketCounts(br, below, atLo, atHi);
            blocks = 0;
        }
    }
    foldBracketCounts(br, below, atLo, atHi);
    return bracketPassPortable(v + i, n - i, br, cap);
}
#endif

/// The values at the given ranks (sorted, unique, < n) of a NaN-free sample. Large samples: a
/// regular subsample (every stride-th value) brackets each rank with a margin of ~5 standard
/// deviations of its subsample rank; one pass counts the values below each bracket and collects
/// those inside; a selection inside the candidates gives the exact value. A rank that falls
/// outside its bracket (improbable) sends the whole sample to the histogram method, so the result
/// is exact either way and, for given values, always the same. So does a bracket with more than
/// n/16 values strictly inside, which bounds the extra memory.
std::vector<float> selectRanks(std::span<const float> values, const std::vector<std::size_t>& ranks) {
    const std::size_t n = values.size();
    if (n < kMinBracketed) {  // small: select in a copy
        std::vector<float> copy(values.begin(), values.end());
        return selectRanksInPlace(copy, ranks);
    }
    const std::size_t nSub = subsampleSize(n);
    const std::size_t stride = n / nSub;
    std::vector<float> sub(nSub);
    for (std::size_t k = 0; k < nSub; ++k) {
        sub[k] = values[k * stride + stride / 2];
    }
    // Subsample ranks bracketing each needed rank, merged where they overlap.
    std::vector<std::pair<std::size_t, std::size_t>> spans;  // subsample rank intervals
    for (const std::size_t r : ranks) {
        const double f = static_cast<double>(r) / static_cast<double>(n - 1);
        const double t = f * static_cast<double>(nSub - 1);
        const double margin = 4.0 * std::sqrt(static_cast<double>(nSub) * f * (1.0 - f)) + 8.0;
        const auto a = static_cast<std::size_t>(std::max(0.0, std::floor(t - margin)));
        const auto b = static_cast<std::size_t>(std::min(static_cast<double>(nSub - 1), std::ceil(t + margin)));
        if (!spans.empty() && a <= spans.back().second) {
            spans.back().second = std::max(spans.back().second, b);
        } else {
            spans.emplace_back(a, b);
        }
    }
    std::vector<std::size_t> subRanks;
    for (const auto& [a, b] : spans) {
        subRanks.push_back(a);
        if (b != a) {
            subRanks.push_back(b);
        }
    }
    std::sort(subRanks.begin(), subRanks.end());
    subRanks.erase(std::unique(subRanks.begin(), subRanks.end()), subRanks.end());
    const std::vector<float> subValues = selectRanksInPlace(sub, subRanks);
    auto subValue = [&](std::size_t rank) {
        return subValues[static_cast<std::size_t>(std::lower_bound(subRanks.begin(), subRanks.end(), rank) -
                                                  subRanks.begin())];
    };
    std::vector<Bracket> br(spans.size());
    for (std::size_t k = 0; k < spans.size(); ++k) {
        // The subsample's extreme ranks open the bracket to the sample's ends.
        br[k].lo = spans[k].first == 0 ? -std::numeric_limits<float>::infinity() : subValue(spans[k].first);
        br[k].hi = spans[k].second == nSub - 1 ? std::numeric_limits<float>::infinity() : subValue(spans[k].second);
    }
    // A bracket is expected to hold ~2 % of the sample strictly inside; past n/16 the histogram
    // method is used instead, so the candidates never cost more than 3 × 4 B / 16 per value.
    const std::size_t cap = n / 16;
#if defined(__GNUC__) && defined(__x86_64__)
    const bool ok = useAvx2() ? bracketPassAvx2(values.data(), n, br, cap)
                              : bracketPassPortable(values.data(), n, br, cap);
#else
    const bool ok = bracketPassPortable(values.data(), n, br, cap);
#endif
    if (!ok) {
        return selectRanksHistogram(values, ranks);
    }
    std::vector<float> out(ranks.size());
    for (std::size_t r = 0; r < ranks.size(); ++r) {
        std::optional<float> value;
        for (Bracket& b : br) {
            value = b.valueAt(ranks[r]);
            if (value) {
                break;
            }
        }
        if (!value) {
            return selectRanksHistogram(values, ranks);  // outside every bracket: the exact fallback
        }
        out[r] = *value;
    }
    return out;
}

}  // namespace

std::int64_t sampleQuantilesScratchBytes(std::int64_t n) {
    if (n < static_cast<std::int64_t>(kMinBracketed)) {
        return 4 * n;  // the copy
    }
    // subsample (<= 256 KiB); inner values of three brackets (n/16 each);
    // the histogram fallback's tables (< 2.5 MiB)
    return n * 3 / 4 + (3LL << 20);
}

std::vector<double> sampleQuantiles(std::span<const float> values, std::span<const double> qs) {
    const std::size_t n = values.size();
    std::vector<double> out(qs.size(), kNaN);
    for (const double q : qs) {
        if (!(q >= 0.0 && q <= 1.0)) {
            throw InvalidParameter("sampleQuantiles: q = " + std::to_string(q) + " is outside [0, 1]");
        }
    }
    if (n == 0) {
        return out;
    }
    if (n == 1) {
        std::fill(out.begin(), out.end(), static_cast<double>(values[0]));
        return out;
    }
    // The ranks each quantile needs (percentileSelect's interpolation at q(n-1)).
    std::vector<std::size_t> ranks;
    for (const double q : qs) {
        const auto q1 = static_cast<std::size_t>(q * static_cast<double>(n - 1));
        ranks.push_back(std::min(q1, n - 1));
        if (q1 + 1 < n) {
            ranks.push_back(q1 + 1);
        }
    }
    std::sort(ranks.begin(), ranks.end());
    ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
    const std::vector<float> at = selectRanks(values, ranks);
    auto valueAtRank = [&](std::size_t rank) {
        return static_cast<double>(
            at[static_cast<std::size_t>(std::lower_bound(ranks.begin(), ranks.end(), rank) - ranks.begin())]);
    };
    for (std::size_t t = 0; t < qs.size(); ++t) {
        const double idx = qs[t] * static_cast<double>(n - 1);
        const auto q1 = static_cast<std::size_t>(idx);
        if (q1 + 1 >= n) {
            out[t] = valueAtRank(n - 1);
            continue;
        }
        const std::size_t q2 = q1 + 1;
        const double w1 = static_cast<double>(q2) - idx;
        const double w2 = idx - static_cast<double>(q1);
        out[t] = w1 * valueAtRank(q1) + w2 * valueAtRank(q2);
    }
    return out;
}

/// Precondition: values are NaN-free (the caller keeps only finite, unmasked pixels, spec §3.4).
double meanClipUnweighted(std::span<const float> values, double sigmaClip, int clipIter) {
    const std::size_t n0 = values.size();
    if (n0 == 0) {
        return kNaN;
    }
    if (!(std::isfinite(sigmaClip) && sigmaClip > 0.0) || clipIter < 1) {
        throw InvalidParameter("meanClipUnweighted: need sigmaClip > 0 and clipIter >= 1");
    }
    const double qs[3] = {0.5, 0.25, 0.75};
    const std::vector<double> quart = sampleQuantiles(values, qs);
    const double median = quart[0];
    const double iqrHalfWidth = sigmaClip * kIqToStdev * (quart[2] - quart[1]);
    Moments cur;
    for (int k = 0; k < clipIter; ++k) {
        const double c = k == 0 ? median : cur.mean;
        const double h = (k > 0 && n0 > 1) ? sigmaClip * std::sqrt(cur.sampleVar) : iqrHalfWidth;
        if (std::isnan(c) || std::isnan(h)) {
            return kNaN;
        }
        cur = clipMoments(values.data(), n0, c, h, k + 1 < clipIter);
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
