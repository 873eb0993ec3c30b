/// @file SampleStats.cpp  Statistics of one flat sample for the warp weights (spec §3.4): the
/// unweighted MEANCLIP of a variance plane and exact quantiles of a large sample.
///
/// Exact and deterministic: quantiles are exact order statistics (the same values nth_element
/// gives), and the clip sums run in sample order over fixed interleaved lanes.
#include "safeclip/kernel/SampleStats.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "Simd.h"
#include "safeclip/kernel/Error.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace safeclip::kernel {

namespace {

constexpr double kIqToStdev = 0.741301109252802;  ///< afw IQ_TO_STDEV
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Unit-weight moments of a clip selection.
struct Moments {
    int n = 0;                ///< size of the selection
    double mean = kNaN;       ///< μ
    double sampleVar = kNaN;  ///< debiased s² (when requested)
};

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
    double sum[kClipLanes] = {};          ///< Σ x (or Σ (x - mean)²) of the kept values, per lane
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
    if (detail::useAvx2()) {
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

/// The values at the given ranks (sorted, unique, < n) of a NaN-free sample, without reordering
/// it: a histogram of the top 16 bits of the order-preserving key, then of the low 16 bits inside
/// the bins that hold a needed rank. Memory is fixed (at most 7 × 256 KiB) whatever the values.
std::vector<float> selectRanksHistogram(std::span<const float> values,
                                        const std::vector<std::size_t>& ranks) {
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

std::size_t subsampleSize(std::size_t n) {
    return std::min(kMaxSub, std::bit_floor(n / 64));
}

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

/// Most ranks radixSelect takes at once (its per-call tables are sized for them).
constexpr std::size_t kMaxRadixRanks = 64;

/// The keys at `ranks` (sorted, unique, < n, at most kMaxRadixRanks) of keys[0, n), exactly: a
/// histogram of (key − min) in 256 bins (the top 8 significant bits of the key range), one pass
/// that gathers the bins holding a needed rank, and the same on those bins until a bin is small
/// (nth_element) or constant. About 3 passes over the sample instead of one nth_element per rank:
/// 5 x faster on the ~1000-value background cells of ScaleVariance. Reorders nothing in `keys`.
void radixSelect(const std::uint32_t* keys, std::size_t n, const std::size_t* ranks, std::size_t nr,
                 std::uint32_t* out) {
    constexpr std::size_t kSmall = 48;
    if (n <= kSmall) {
        std::uint32_t copy[kSmall];
        std::copy_n(keys, n, copy);
        std::size_t first = 0;
        for (std::size_t r = 0; r < nr; ++r) {
            std::nth_element(copy + first, copy + ranks[r], copy + n);
            out[r] = copy[ranks[r]];
            first = ranks[r] + 1;
        }
        return;
    }
    std::uint32_t lo = keys[0];
    std::uint32_t hi = keys[0];
    for (std::size_t i = 1; i < n; ++i) {
        lo = std::min(lo, keys[i]);
        hi = std::max(hi, keys[i]);
    }
    if (lo == hi) {
        std::fill_n(out, nr, lo);
        return;
    }
    const int shift = std::max(0, static_cast<int>(std::bit_width(hi - lo)) - 8);
    std::array<std::uint32_t, 256> hist{};
    for (std::size_t i = 0; i < n; ++i) {
        ++hist[(keys[i] - lo) >> shift];
    }
    // The bin of every needed rank and the count below that bin.
    std::array<std::size_t, kMaxRadixRanks> binOf{};
    std::array<std::size_t, kMaxRadixRanks> binBelow{};
    {
        std::size_t below = 0;
        std::size_t r = 0;
        for (std::size_t b = 0; b < hist.size() && r < nr; ++b) {
            while (r < nr && ranks[r] < below + hist[b]) {
                binOf[r] = b;
                binBelow[r] = below;
                ++r;
            }
            below += hist[b];
        }
    }
    // Gather the needed bins in one pass, each into its own stretch of `sub`.
    constexpr std::uint8_t kNone = 255;
    std::array<std::uint8_t, 256> slot{};
    slot.fill(kNone);
    std::array<std::size_t, kMaxRadixRanks> groupStart{};
    std::array<std::size_t, kMaxRadixRanks> groupEnd{};
    std::array<std::size_t, kMaxRadixRanks> groupOfRank{};
    std::size_t nGroups = 0;
    std::size_t total = 0;
    for (std::size_t r = 0; r < nr; ++r) {
        if (r == 0 || binOf[r] != binOf[r - 1]) {
            slot[binOf[r]] = static_cast<std::uint8_t>(nGroups);
            groupStart[nGroups] = total;
            groupEnd[nGroups] = total;
            total += hist[binOf[r]];
            ++nGroups;
        }
        groupOfRank[r] = nGroups - 1;
    }
    std::vector<std::uint32_t> sub(total);
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t g = slot[(keys[i] - lo) >> shift];
        if (g != kNone) {
            sub[groupEnd[g]++] = keys[i];
        }
    }
    for (std::size_t r0 = 0; r0 < nr;) {
        std::size_t r1 = r0 + 1;
        while (r1 < nr && groupOfRank[r1] == groupOfRank[r0]) {
            ++r1;
        }
        const std::size_t g = groupOfRank[r0];
        std::array<std::size_t, kMaxRadixRanks> subRanks{};
        for (std::size_t r = r0; r < r1; ++r) {
            subRanks[r - r0] = ranks[r] - binBelow[r];
        }
        radixSelect(sub.data() + groupStart[g], groupEnd[g] - groupStart[g], subRanks.data(), r1 - r0,
                    out + r0);
        r0 = r1;
    }
}

/// The float with key k (inverse of floatKey).
float keyFloat(std::uint32_t k) {
    return std::bit_cast<float>((k & 0x80000000U) != 0 ? (k & 0x7fffffffU) : ~k);
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
__attribute__((target("avx2"))) void foldBracketCounts(std::vector<Bracket>& br, __m256i* below,
                                                       __m256i* atLo, __m256i* atHi) {
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
/// regular subsample (every stride-th value) brackets each rank with a margin of 4 standard
/// deviations (+ 8) of its subsample rank; one pass counts the values below each bracket and collects
/// those inside; a selection inside the candidates gives the exact value. A rank that falls
/// outside its bracket (improbable) sends the whole sample to the histogram method, so the result
/// is exact either way and, for given values, always the same. So does a bracket with more than
/// n/16 values strictly inside, which bounds the extra memory.
std::vector<float> selectRanks(std::span<const float> values, const std::vector<std::size_t>& ranks) {
    const std::size_t n = values.size();
    if (n < kMinBracketed) {  // small: radix select on the keys (or nth_element for many ranks)
        if (ranks.size() > kMaxRadixRanks) {
            std::vector<float> copy(values.begin(), values.end());
            return selectRanksInPlace(copy, ranks);
        }
        std::vector<std::uint32_t> keys(n);
        for (std::size_t i = 0; i < n; ++i) {
            keys[i] = floatKey(values[i]);
        }
        std::array<std::uint32_t, kMaxRadixRanks> at{};
        radixSelect(keys.data(), n, ranks.data(), ranks.size(), at.data());
        std::vector<float> out(ranks.size());
        for (std::size_t r = 0; r < ranks.size(); ++r) {
            out[r] = keyFloat(at[r]);
        }
        return out;
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
        const auto b =
            static_cast<std::size_t>(std::min(static_cast<double>(nSub - 1), std::ceil(t + margin)));
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
        br[k].hi =
            spans[k].second == nSub - 1 ? std::numeric_limits<float>::infinity() : subValue(spans[k].second);
    }
    // A bracket is expected to hold ~2 % of the sample strictly inside; past n/16 the histogram
    // method is used instead, so the candidates never cost more than 3 × 4 B / 16 per value.
    const std::size_t cap = n / 16;
#if defined(__GNUC__) && defined(__x86_64__)
    const bool ok = detail::useAvx2() ? bracketPassAvx2(values.data(), n, br, cap)
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
        return 8 * n;  // the keys and, at most, every key again in the gathered bins
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
namespace {

/// The clipping of meanClipUnweighted; the last iteration's moments (with s² when lastVar).
Moments clipUnweighted(std::span<const float> values, double sigmaClip, int clipIter, bool lastVar,
                       const char* who) {
    const std::size_t n0 = values.size();
    if (!(std::isfinite(sigmaClip) && sigmaClip > 0.0) || clipIter < 1) {
        throw InvalidParameter(std::string(who) + ": need sigmaClip > 0 and clipIter >= 1");
    }
    if (n0 == 0) {
        return Moments{};
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
            return Moments{};
        }
        cur = clipMoments(values.data(), n0, c, h, k + 1 < clipIter || lastVar);
    }
    return cur;
}

}  // namespace

double stdevClipUnweighted(std::span<const float> values, double sigmaClip, int clipIter) {
    const Moments m = clipUnweighted(values, sigmaClip, clipIter, true, "stdevClipUnweighted");
    return m.n > 1 ? std::sqrt(m.sampleVar) : kNaN;
}

double meanClipUnweighted(std::span<const float> values, double sigmaClip, int clipIter) {
    if (values.empty()) {
        return kNaN;
    }
    return clipUnweighted(values, sigmaClip, clipIter, false, "meanClipUnweighted").mean;
}

}  // namespace safeclip::kernel
