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
// Quartiles come from ranks (ties ranked by position, as stackCore's small-sample sort), so no
// sorting or branching per pixel. Pixels that need the SAT-style weight propagation are finished
// by a scalar loop; everything else is branch-free.

constexpr int kBlock = 64;

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
    std::int32_t* rank = nullptr;           ///< [n][kBlock] rank of the value among S0
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
    /// weightedMoments.
    [[gnu::always_inline]] void moments(const std::int64_t* s, int nb, bool needSampleVar, bool fromInput, BlockMoments& r) const {
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
            const float* x = img[i];
            const float* v = var[i];
            const std::int64_t* si = s + static_cast<std::ptrdiff_t>(i) * kBlock;
            for (int p = 0; p < nb; ++p) {
                const std::int64_t on = si[p];
                const double tx = wi * static_cast<double>(x[p]);
                const double tv = wsq * static_cast<double>(v[p]);
                sw[p] += andMask64(wi, on);
                swx[p] += andMask64(tx, on);
                sw2[p] += andMask64(wsq, on);
                sw2v[p] += andMask64(tv, on);
                cnt[p] -= on;
            }
        }
        for (int p = 0; p < nb; ++p) {
            r.mean[p] = swx[p] / sw[p];
            r.n[p] = static_cast<std::int32_t>(cnt[p]);
        }
        if (needSampleVar || !fromInput) {
            double sdev[kBlock];
            for (int p = 0; p < nb; ++p) {
                sdev[p] = 0.0;
            }
            for (int i = 0; i < n; ++i) {
                const double wi = w[i];
                const float* x = img[i];
                const std::int64_t* si = s + static_cast<std::ptrdiff_t>(i) * kBlock;
                for (int p = 0; p < nb; ++p) {
                    const double d = static_cast<double>(x[p]) - r.mean[p];
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
            r.meanVar[p] = fromInput ? sw2v[p] / swSq : r.sampleVar[p] * sw2[p] / swSq;
        }
    }

    /// Ranks of the accepted values among S0 (ties by position: x_j <= x_i for j < i, x_j < x_i
    /// for j > i, exactly the ranks of stackCore's small-sample sort).
    [[gnu::always_inline]] void ranks(int nb) {
        for (int i = 0; i < n; ++i) {
            std::int32_t* ri = rank + static_cast<std::ptrdiff_t>(i) * kBlock;
            for (int p = 0; p < nb; ++p) {
                ri[p] = 0;
            }
        }
        for (int i = 1; i < n; ++i) {
            const float* xi = img[i];
            const std::int32_t* ai = acc + static_cast<std::ptrdiff_t>(i) * kBlock;
            std::int32_t* ri = rank + static_cast<std::ptrdiff_t>(i) * kBlock;
            for (int j = 0; j < i; ++j) {
                const float* xj = img[j];
                const std::int32_t* aj = acc + static_cast<std::ptrdiff_t>(j) * kBlock;
                std::int32_t* rj = rank + static_cast<std::ptrdiff_t>(j) * kBlock;
                for (int p = 0; p < nb; ++p) {
                    // both finite where either count matters: !(xj <= xi) == (xi < xj)
                    const std::int32_t le = xj[p] <= xi[p] ? 1 : 0;
                    ri[p] += aj[p] & le;
                    rj[p] += ai[p] & (le ^ 1);
                }
            }
        }
    }

    /// afw percentile at q of S0 (interpolated between ranks), per pixel; lanes with n0 == 0 get NaN.
    [[gnu::always_inline]] void percentile(int nb, double q, double* out) const {
        std::int32_t r1[kBlock];
        double lo[kBlock];
        double hi[kBlock];
        double w1[kBlock];
        double w2[kBlock];
        for (int p = 0; p < nb; ++p) {
            const int np = n0[p];
            const double idx = q * static_cast<double>(np - 1);
            const int q1 = np > 0 ? static_cast<int>(idx) : 0;
            r1[p] = q1;
            w1[p] = static_cast<double>(q1 + 1) - idx;
            w2[p] = idx - static_cast<double>(q1);
            lo[p] = 0.0;
            hi[p] = 0.0;
        }
        // Each rank of S0 is held by exactly one accepted input: OR the matching values in.
        for (int i = 0; i < n; ++i) {
            const float* x = img[i];
            const std::int64_t* ai = accM + static_cast<std::ptrdiff_t>(i) * kBlock;
            const std::int32_t* ri = rank + static_cast<std::ptrdiff_t>(i) * kBlock;
            for (int p = 0; p < nb; ++p) {
                const double xv = static_cast<double>(x[p]);
                const std::int64_t isLo = ai[p] & -static_cast<std::int64_t>(ri[p] == r1[p]);
                const std::int64_t isHi = ai[p] & -static_cast<std::int64_t>(ri[p] == r1[p] + 1);
                lo[p] = std::bit_cast<double>(std::bit_cast<std::int64_t>(lo[p]) |
                                              std::bit_cast<std::int64_t>(andMask64(xv, isLo)));
                hi[p] = std::bit_cast<double>(std::bit_cast<std::int64_t>(hi[p]) |
                                              std::bit_cast<std::int64_t>(andMask64(xv, isHi)));
            }
        }
        for (int p = 0; p < nb; ++p) {
            const int np = n0[p];
            out[p] = np == 0 ? kNaN : (r1[p] + 1 >= np ? lo[p] : w1[p] * lo[p] + w2[p] * hi[p]);
        }
    }

    /// §4.2 MEANCLIP of the block: quartiles of S0, then clipIter selections and moments. A lane
    /// whose centre or half-width is NaN selects nothing, which gives exactly stackCore's
    /// Moments{} (n = 0, NaN mean and variance) in that and every later iteration; a lane that
    /// has converged reproduces itself, so running every iteration equals stackCore's early stop.
    [[gnu::always_inline]] void meanClip(int nb, const StackControl& ctrl, BlockMoments& cur) {
        ranks(nb);
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
                const float* x = img[i];
                const std::int64_t* ai = accM + static_cast<std::ptrdiff_t>(i) * kBlock;
                std::int64_t* si = sel + static_cast<std::ptrdiff_t>(i) * kBlock;
                for (int p = 0; p < nb; ++p) {
                    const double d = std::abs(static_cast<double>(x[p]) - c[p]);
                    si[p] = d <= h[p] ? ai[p] : std::int64_t{0};
                }
            }
            moments(sel, nb, true, fromInput, cur);
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
            moments(accM, nb, false, ctrl.calcErrorFromInputVariance, mom);
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
    std::vector<std::int32_t> rank(n * kBlock + 1);
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
    bs->rank = rank.data();
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

/// True when every partial sum of any subset of values[0..n), in any order, is exact in double:
/// all values are multiples of 2^e (e = the smallest ulp among them) and sum |x| < 2^(53+e). Then
/// the sequential sum of a selection equals its exact sum, so it can be accumulated in any order
/// (vectorised) with the same result bit for bit.
bool sumsAreExact(const float* values, std::size_t n) {
    std::uint32_t minExp = 255;
    double sumAbs = 0.0;
    for (std::size_t j = 0; j < n; ++j) {
        const std::uint32_t b = std::bit_cast<std::uint32_t>(values[j]);
        const std::uint32_t e = (b >> 23) & 0xffU;
        // zero is a multiple of anything: leave it out of the minimum
        minExp = std::min(minExp, (b & 0x7fffffffU) == 0 ? 255U : std::max(e, 1U));
        sumAbs += std::abs(static_cast<double>(values[j]));
    }
    if (minExp == 255) {
        return true;  // all zeros
    }
    const int ulpExp = static_cast<int>(minExp) - 150;  // every value is a multiple of 2^ulpExp
    // sumAbs carries a relative error below n * 2^-53 (< 1e-6 for any n < 2^33): keep a margin.
    return sumAbs * (1.0 + 1e-6) < std::ldexp(1.0, 53 + ulpExp);
}

/// Unit-weight moments of the values with |x - c| <= h (weightedMoments with every w = 1, in the
/// order of `values`, bit for bit as the former two branchy loops): the count is exact, the sum is either exact (sumsAreExact) and then summed in
/// eight independent lanes, or sequential; the squared deviations are summed sequentially, in
/// order, with "skip" written as "+0.0" (exact) so that there is no data-dependent branch.
Moments clipMoments(const float* values, std::size_t n, double c, double h, bool exactSums) {
    Moments r;
    std::int64_t k = 0;
    double sx = 0.0;
    if (exactSums) {
        constexpr int kLanes = 8;
        double lane[kLanes] = {};
        std::int64_t cnt[kLanes] = {};
        std::size_t j = 0;
        for (; j + kLanes <= n; j += kLanes) {
            for (int l = 0; l < kLanes; ++l) {
                const double xv = values[j + static_cast<std::size_t>(l)];
                const std::int64_t m = -static_cast<std::int64_t>(std::abs(xv - c) <= h);
                lane[l] += std::bit_cast<double>(std::bit_cast<std::int64_t>(xv) & m);
                cnt[l] -= m;
            }
        }
        for (; j < n; ++j) {
            const double xv = values[j];
            const std::int64_t m = -static_cast<std::int64_t>(std::abs(xv - c) <= h);
            lane[0] += std::bit_cast<double>(std::bit_cast<std::int64_t>(xv) & m);
            cnt[0] -= m;
        }
        for (int l = 0; l < kLanes; ++l) {
            sx += lane[l];
            k += cnt[l];
        }
    } else {
        for (std::size_t j = 0; j < n; ++j) {
            const double xv = values[j];
            const std::int64_t m = -static_cast<std::int64_t>(std::abs(xv - c) <= h);
            sx += std::bit_cast<double>(std::bit_cast<std::int64_t>(xv) & m);
            k -= m;
        }
    }
    const double sw = static_cast<double>(k);  // Σ 1.0 over k terms, exact
    r.n = static_cast<int>(std::min<std::int64_t>(k, std::numeric_limits<int>::max()));
    r.mean = sx / sw;
    double sdev = 0.0;
    for (std::size_t j = 0; j < n; ++j) {
        const double xv = values[j];
        const std::int64_t m = -static_cast<std::int64_t>(std::abs(xv - c) <= h);
        const double d = xv - r.mean;
        sdev += std::bit_cast<double>(std::bit_cast<std::int64_t>(d * d) & m);
    }
    const double sw_sq = sw * sw;
    const double sw2 = sw;  // Σ w² with w = 1
    r.sampleVar = (sdev / sw) * sw_sq / (sw_sq - sw2);
    return r;
}

}  // namespace

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
    // The three selections leave `values` in the order that the sums below then run over (kept so
    // that the result does not change by a bit).
    const double median = percentileSelect(data, n0, 0.5);
    const double q1 = percentileSelect(data, n0, 0.25);
    const double q3 = percentileSelect(data, n0, 0.75);
    const double iqrHalfWidth = sigmaClip * kIqToStdev * (q3 - q1);
    const bool exact = sumsAreExact(data, n0);
    Moments cur;
    for (int k = 0; k < clipIter; ++k) {
        const double c = k == 0 ? median : cur.mean;
        const double h = (k > 0 && n0 > 1) ? sigmaClip * std::sqrt(cur.sampleVar) : iqrHalfWidth;
        if (std::isnan(c) || std::isnan(h)) {
            return kNaN;
        }
        cur = clipMoments(data, n0, c, h, exact);
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
