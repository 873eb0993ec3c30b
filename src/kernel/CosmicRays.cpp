/// @file CosmicRays.cpp  meas_algorithms findCosmicRays (src/CR.cc): first pass, 8-connected
/// grouping, min_DN, growth pass and RemoveCR repair; see CosmicRays.h for the algorithm, the
/// deviations from upstream, the units and the reach.
#include "safeclip/kernel/CosmicRays.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numbers>
#include <utility>

#include "Simd.h"

namespace safeclip::kernel {

namespace {

/// The first pass's quick test over one row (a necessary condition for condition 2, evaluated
/// branch-free so that it vectorises): out[x] = 0 only where condition 2 certainly rejects the
/// pixel: v < 0 (never a candidate), or v < min(mean) (then v < mean + t in every direction), or
/// (v - min(mean))² < k·var with k = 0.98 minSigma² (then v - min(mean) < 0.99 t: the 2 % margin is
/// far above the rounding of the squares). A NaN mean lets the pixel through (its direction never
/// rejects it in condition 2). The means are formed as isCrPixel forms them.
template <class Dummy = void>
inline void prefilterRowImpl(const float* up, const float* row, const float* down, const float* var, int w,
                             double k, unsigned char* out) {
    for (int x = 1; x < w - 1; ++x) {
        const double v = row[x];
        const double mWe = 0.5 * (static_cast<double>(row[x - 1]) + row[x + 1]);
        const double mNs = 0.5 * (static_cast<double>(up[x]) + down[x]);
        const double mSwne = 0.5 * (static_cast<double>(up[x - 1]) + down[x + 1]);
        const double mNwse = 0.5 * (static_cast<double>(down[x - 1]) + up[x + 1]);
        const bool nan = (mWe != mWe) | (mNs != mNs) | (mSwne != mSwne) | (mNwse != mNwse);
        double m = mWe < mNs ? mWe : mNs;
        m = mSwne < m ? mSwne : m;
        m = mNwse < m ? mNwse : m;
        const double d = v - m;
        const bool reject = !(v >= 0) | (d < 0) | (d * d < k * static_cast<double>(var[x]));
        out[x] = static_cast<unsigned char>(nan | !reject);
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2"))) void prefilterRowAvx2(const float* up, const float* row, const float* down,
                                                      const float* var, int w, double k, unsigned char* out) {
    prefilterRowImpl(up, row, down, var, w, k, out);
}
#else
void prefilterRowAvx2(const float* up, const float* row, const float* down, const float* var, int w, double k,
                      unsigned char* out) {
    prefilterRowImpl(up, row, down, var, w, k, out);
}
#endif

void prefilterRow(const float* up, const float* row, const float* down, const float* var, int w, double k,
                  unsigned char* out) {
    if (detail::useAvx2()) {
        prefilterRowAvx2(up, row, down, var, w, k, out);
    } else {
        prefilterRowImpl(up, row, down, var, w, k, out);
    }
}

/// meas_algorithms Interp.h: LPC coefficients for σ = 1 (rows, columns) and σ = 1/√2 (diagonals).
constexpr double kLpcC1 = 0.7737;
constexpr double kLpcC2 = -0.2737;
constexpr double kLpcDiagC1 = 0.7358;
constexpr double kLpcDiagC2 = -0.2358;
/// Interp.h min2GaussianBias: mean of the minimum of two N(0,1) variates.
constexpr double kMin2GaussianBias = -0.5641895835;

/// Box-relative view of the three planes.
struct Planes {
    int w = 0;
    int h = 0;
    float* img = nullptr;
    const float* var = nullptr;
    const MaskPixel* msk = nullptr;
    [[nodiscard]] std::ptrdiff_t idx(int x, int y) const { return static_cast<std::ptrdiff_t>(y) * w + x; }
};

/// upstream is_cr_pixel + condition_3 at interior pixel i (all 8 neighbours exist). On success
/// `corr` is the preliminary value (the mean of the first direction that passes, background
/// included).
bool isCrPixel(const Planes& p, std::ptrdiff_t i, double minSigma, const CosmicRayThresholds& th, double bkgd,
               double cond3Fac, float& corr) {
    const std::ptrdiff_t w = p.w;
    const float* img = p.img;
    const float* var = p.var;
    const double v00 = img[i];
    if (v00 < 0) {
        return false;
    }
    const double meanWe = 0.5 * (static_cast<double>(img[i - 1]) + img[i + 1]);
    const double meanNs = 0.5 * (static_cast<double>(img[i - w]) + img[i + w]);
    const double meanSwne = 0.5 * (static_cast<double>(img[i - w - 1]) + img[i + w + 1]);
    const double meanNwse = 0.5 * (static_cast<double>(img[i + w - 1]) + img[i - w + 1]);
    // A direction is used only when its mean is finite and not more than kDefectSigma σ below the
    // background (safeclip's guard; upstream would let a -inf or hugely negative defect pixel make
    // its neighbours candidates, whose in-place repair then spreads the defect's value along the row
    // and down the image: one -inf pixel flagged 6172 px). Noise never puts a two-pixel mean 10σ
    // below the background, so this changes nothing else.
    constexpr double kDefectSigma = 10.0;
    const double floor = bkgd - kDefectSigma * std::sqrt(static_cast<double>(var[i]));
    const auto usable = [floor](double m) { return std::isfinite(m) && m >= floor; };
    const bool okNs = usable(meanNs);
    const bool okWe = usable(meanWe);
    const bool okSwne = usable(meanSwne);
    const bool okNwse = usable(meanNwse);
    // condition 2
    if (minSigma < 0) {
        if (v00 < -minSigma) {
            return false;
        }
    } else {
        const double t = minSigma * std::sqrt(static_cast<double>(var[i]));
        if ((!okNs || v00 < meanNs + t) && (!okWe || v00 < meanWe + t) && (!okSwne || v00 < meanSwne + t) &&
            (!okNwse || v00 < meanNwse + t)) {
            return false;
        }
    }
    // condition 3 (NaN anywhere fails every comparison)
    const double dv = std::sqrt(static_cast<double>(var[i]));
    const double dWe = std::sqrt(static_cast<double>(var[i - 1]) + var[i + 1]) / 2;
    const double dNs = std::sqrt(static_cast<double>(var[i - w]) + var[i + w]) / 2;
    const double dSwne = std::sqrt(static_cast<double>(var[i - w - 1]) + var[i + w + 1]) / 2;
    const double dNwse = std::sqrt(static_cast<double>(var[i + w - 1]) + var[i - w + 1]) / 2;
    const double peak = v00 - bkgd;
    double est = 0;
    if (okNs && th.v * (peak - cond3Fac * dv) > (meanNs - bkgd) + cond3Fac * dNs) {
        est = meanNs;
    } else if (okWe && th.h * (peak - cond3Fac * dv) > (meanWe - bkgd) + cond3Fac * dWe) {
        est = meanWe;
    } else if (okSwne && th.d * (peak - cond3Fac * dv) > (meanSwne - bkgd) + cond3Fac * dSwne) {
        est = meanSwne;
    } else if (okNwse && th.d * (peak - cond3Fac * dv) > (meanNwse - bkgd) + cond3Fac * dNwse) {
        est = meanNwse;
    } else {
        return false;
    }
    corr = static_cast<float>(est);
    return true;
}

/// splitmix64 finaliser.
std::uint64_t mix64(std::uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30U)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27U)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31U);
}

/// A standard normal deviate that is a function of the PARENT pixel (Box–Muller on two hashes).
double gaussianAt(int x, int y) {
    const std::uint64_t key =
        (static_cast<std::uint64_t>(static_cast<std::uint32_t>(x)) << 32U) | static_cast<std::uint32_t>(y);
    const std::uint64_t a = mix64(key ^ 0x43522D4B45524E4CULL);  // "CR-KERNL"
    const std::uint64_t b = mix64(a);
    constexpr double kTwo53 = 1.0 / 9007199254740992.0;
    const double u1 = static_cast<double>((a >> 11U) + 1) * kTwo53;  // (0, 1]
    const double u2 = static_cast<double>(b >> 11U) * kTwo53;        // [0, 1)
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

/// The 3x3 (Chebyshev-1) dilation of a set, unclipped.
SpanSet grow8(const SpanSet& s) {
    std::vector<Span> out;
    out.reserve(s.spans().size() * 3);
    for (const Span& sp : s.spans()) {
        for (int dy = -1; dy <= 1; ++dy) {
            out.push_back(Span{sp.y + dy, sp.x0 - 1, sp.x1 + 1});
        }
    }
    return SpanSet::fromSpans(std::move(out));
}

/// Pixels tested around a CR in the growth pass (upstream checkSpanForCRs on rows y-1..y+1 of each
/// span with 2 <= y <= h-3, columns x0-1..x1+1 clamped to the interior), box-relative.
SpanSet growthRing(const SpanSet& cr, int w, int h) {
    std::vector<Span> out;
    for (const Span& sp : cr.spans()) {
        if (sp.y < 2 || sp.y > h - 3) {
            continue;
        }
        const int xa = std::max(sp.x0 - 1, 1);
        const int xb = std::min(sp.x1 + 1, w - 2);
        if (xa > xb) {
            continue;
        }
        for (int dy = -1; dy <= 1; ++dy) {
            out.push_back(Span{sp.y + dy, xa, xb});
        }
    }
    return SpanSet::fromSpans(std::move(out));
}

/// Pixel values changed so far, to be put back (in reverse order, so the first saved value wins).
class Undo {
public:
    void save(std::ptrdiff_t i, float v) { m_saved.emplace_back(i, v); }
    void restore(float* img) const {
        for (auto it = m_saved.rbegin(); it != m_saved.rend(); ++it) {
            img[it->first] = it->second;
        }
    }

private:
    std::vector<std::pair<std::ptrdiff_t, float>> m_saved;
};

/// The min_DN threshold of one CR (box-relative set), in image units.
double minDnThreshold(const Planes& p, const SpanSet& cr, const CosmicRayControl& ctrl) {
    if (ctrl.skySigmaDn <= 0) {
        return ctrl.min_DN;
    }
    std::vector<float> v;
    const SpanSet ring = grow8(cr).clippedTo(Box{0, 0, p.w, p.h}).subtract(cr);
    auto collect = [&](const SpanSet& s) {
        for (const Span& sp : s.spans()) {
            for (int x = sp.x0; x <= sp.x1; ++x) {
                const float q = p.var[p.idx(x, sp.y)];
                if (std::isfinite(q) && q > 0) {
                    v.push_back(q);
                }
            }
        }
    };
    collect(ring);
    if (v.empty()) {
        collect(cr);
    }
    if (v.empty()) {
        return 0.0;
    }
    const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
    std::nth_element(v.begin(), mid, v.end());
    return ctrl.min_DN / ctrl.skySigmaDn * std::sqrt(static_cast<double>(*mid));
}

/// upstream RemoveCR for one CR pixel (box-relative x, y), reading only pixels with isCr == 0 and
/// none of `bad`.
float repairValue(const Planes& p, const std::vector<std::uint8_t>& isCr, int x, int y, MaskPixel bad,
                  double bkgd, int parentX, int parentY) {
    double sigma = std::sqrt(static_cast<double>(p.var[p.idx(x, y)]));
    if (!std::isfinite(sigma)) {
        sigma = 0.0;
    }
    const double minval = bkgd - 2.0 * sigma;
    double best = std::numeric_limits<float>::max();
    int ngood = 0;
    struct Dir {
        int dx, dy;
        double c1, c2;
    };
    // W-E, N-S, SW-NE, SE-NW (upstream's order; ngood counts adoptions, so the order matters)
    static constexpr Dir kDirs[4] = {{1, 0, kLpcC1, kLpcC2},
                                     {0, 1, kLpcC1, kLpcC2},
                                     {1, 1, kLpcDiagC1, kLpcDiagC2},
                                     {-1, 1, kLpcDiagC1, kLpcDiagC2}};
    for (const Dir& d : kDirs) {
        const int xs[4] = {x - 2 * d.dx, x - d.dx, x + d.dx, x + 2 * d.dx};
        const int ys[4] = {y - 2 * d.dy, y - d.dy, y + d.dy, y + 2 * d.dy};
        bool clean = true;
        double v[4] = {0, 0, 0, 0};
        for (int k = 0; k < 4 && clean; ++k) {
            if (xs[k] < 0 || xs[k] >= p.w || ys[k] < 0 || ys[k] >= p.h) {
                clean = false;
                break;
            }
            const std::ptrdiff_t j = p.idx(xs[k], ys[k]);
            if (isCr[static_cast<std::size_t>(j)] != 0 || (p.msk[j] & bad) != 0) {
                clean = false;
                break;
            }
            v[k] = p.img[j];
        }
        if (!clean) {
            continue;
        }
        const double tmp = d.c1 * (v[1] + v[2]) + d.c2 * (v[0] + v[3]);
        if (tmp > minval && tmp < best) {
            best = tmp;
            ++ngood;
        }
    }
    if (ngood == 0) {
        best = bkgd + sigma * gaussianAt(parentX, parentY);
    } else if (ngood > 1) {
        best -= kMin2GaussianBias * sigma;
    }
    return static_cast<float>(best);
}

/// Shift a box-relative set to PARENT coordinates.
SpanSet toParent(const SpanSet& s, const Box& box) {
    std::vector<Span> out;
    out.reserve(s.spans().size());
    for (const Span& sp : s.spans()) {
        out.push_back(Span{sp.y + box.y0, sp.x0 + box.x0, sp.x1 + box.x0});
    }
    return SpanSet::fromSortedSpans(std::move(out));
}

}  // namespace

void CosmicRayControl::validate() const {
    if (nCrPixelMax < 0) {
        throw InvalidParameter("cosmic rays: nCrPixelMax must be >= 0, got " + std::to_string(nCrPixelMax));
    }
    if (niteration < 0) {
        throw InvalidParameter("cosmic rays: niteration must be >= 0, got " + std::to_string(niteration));
    }
    if (!std::isfinite(minSigma) || !std::isfinite(min_DN) || !std::isfinite(cond3_fac) ||
        !std::isfinite(cond3_fac2) || !std::isfinite(skySigmaDn)) {
        throw InvalidParameter(
            "cosmic rays: minSigma, min_DN, cond3_fac, cond3_fac2 and skySigmaDn must be finite");
    }
}

CosmicRayThresholds cosmicRayThresholds(double psfSigma, double cond3_fac2) {
    if (!std::isfinite(psfSigma) || psfSigma <= 0.0) {
        throw InvalidParameter("cosmic rays: psfSigma must be finite and > 0, got " +
                               std::to_string(psfSigma));
    }
    // Gaussian sampled at pixel centres: a neighbour at distance 1 over the centre is
    // exp(-1/(2σ²)), a diagonal neighbour exp(-2/(2σ²)); both neighbours of a pair are equal.
    const double s2 = psfSigma * psfSigma;
    CosmicRayThresholds th;
    th.h = cond3_fac2 * std::exp(-1.0 / (2.0 * s2));
    th.v = th.h;
    th.d = cond3_fac2 * std::exp(-1.0 / s2);
    return th;
}

CosmicRayResult findCosmicRays(MaskedImage& mi, double psfSigma, double background,
                               const CosmicRayControl& ctrl, MaskPixel badBits, MaskPixel crBit,
                               MaskPixel intrpBit) {
    ctrl.validate();
    if (crBit == 0) {
        throw InvalidParameter("cosmic rays: crBit must not be 0");
    }
    if (!std::isfinite(background)) {
        throw InvalidParameter("cosmic rays: background must be finite");
    }
    const Box box = mi.box();
    if (!(mi.mask.box() == box) || !(mi.variance.box() == box)) {
        throw InvalidParameter("cosmic rays: image, mask and variance boxes differ");
    }
    const CosmicRayThresholds th = cosmicRayThresholds(psfSigma, ctrl.cond3_fac2);
    CosmicRayResult result;
    if (box.width < 3 || box.height < 3) {
        return result;
    }
    Planes p;
    p.w = box.width;
    p.h = box.height;
    p.img = mi.image.data().data();
    p.var = mi.variance.data().data();
    p.msk = mi.mask.data().data();
    const MaskPixel bad = badBits | intrpBit;
    const double bkgd = background;
    Undo undo;

    // ---- 1. first pass, raster order, in place ----
    std::vector<Span> firstSpans;
    std::int64_t nFirst = 0;
    // Condition 2 rejects almost every pixel: prefilterRow marks, at the start of each row, the
    // pixels it might not reject (row y-1 is final then, rows y and y+1 untouched). A candidate
    // changes its own value in place, which only the next pixel of the row reads before the next
    // row's prefilter: that pixel is tested in full whatever its mark. So the first pass tests in
    // full exactly the pixels it could accept and its result is that of testing every pixel.
    const double k = ctrl.minSigma > 0 ? 0.98 * ctrl.minSigma * ctrl.minSigma : -1.0;
    std::vector<unsigned char> maybe(static_cast<std::size_t>(p.w), 1);
    for (int y = 1; y < p.h - 1; ++y) {
        if (k > 0) {
            const float* row = p.img + static_cast<std::ptrdiff_t>(y) * p.w;
            prefilterRow(row - p.w, row, row + p.w, p.var + static_cast<std::ptrdiff_t>(y) * p.w, p.w, k,
                         maybe.data());
        }
        bool previousChanged = false;
        for (int x = 1; x < p.w - 1; ++x) {
            if (maybe[static_cast<std::size_t>(x)] == 0 && !previousChanged) {
                continue;
            }
            previousChanged = false;
            const std::ptrdiff_t i = p.idx(x, y);
            float corr = 0;
            if (!isCrPixel(p, i, ctrl.minSigma, th, bkgd, ctrl.cond3_fac, corr)) {
                continue;
            }
            if ((p.msk[i] & bad) != 0) {  // condition 4
                continue;
            }
            if (intrpBit != 0 && ((p.msk[i - p.w - 1] | p.msk[i - p.w] | p.msk[i - p.w + 1] | p.msk[i - 1] |
                                   p.msk[i + 1] | p.msk[i + p.w - 1] | p.msk[i + p.w] | p.msk[i + p.w + 1]) &
                                  intrpBit) != 0) {
                continue;
            }
            undo.save(i, p.img[i]);
            p.img[i] = corr;
            previousChanged = true;
            ++nFirst;
            if (nFirst > ctrl.nCrPixelMax) {
                undo.restore(p.img);
                throw TooManyCosmicRayPixels(nFirst, ctrl.nCrPixelMax);
            }
            if (!firstSpans.empty() && firstSpans.back().y == y && firstSpans.back().x1 == x - 1) {
                firstSpans.back().x1 = x;
            } else {
                firstSpans.push_back(Span{y, x, x});
            }
        }
    }
    result.nFirstPass = nFirst;
    // ---- 2. group, restore ----
    const SpanSet firstPass = SpanSet::fromSortedSpans(std::move(firstSpans));
    result.firstPass = toParent(firstPass, box);
    std::vector<SpanSet> crs = connectedComponents8(firstPass);
    undo.restore(p.img);
    // ---- 3. condition 1 (min_DN) on the input values ----
    {
        std::vector<SpanSet> kept;
        kept.reserve(crs.size());
        for (SpanSet& cr : crs) {
            double sum = 0;
            for (const Span& sp : cr.spans()) {
                for (int x = sp.x0; x <= sp.x1; ++x) {
                    sum += static_cast<double>(p.img[p.idx(x, sp.y)]) - bkgd;
                }
            }
            if (sum >= minDnThreshold(p, cr, ctrl)) {
                kept.push_back(std::move(cr));
            }
        }
        crs = std::move(kept);
    }
    std::vector<std::uint8_t> isCr(static_cast<std::size_t>(box.area()), 0);
    auto markAll = [&](const std::vector<SpanSet>& sets) {
        for (const SpanSet& s : sets) {
            for (const Span& sp : s.spans()) {
                std::fill_n(isCr.begin() + p.idx(sp.x0, sp.y), sp.width(), std::uint8_t{1});
            }
        }
    };
    // Repair every pixel of `sets` (marked in isCr) from non-CR pixels; values saved in undo.
    auto repairAll = [&](const std::vector<SpanSet>& sets) {
        std::vector<std::pair<std::ptrdiff_t, float>> vals;
        for (const SpanSet& s : sets) {
            for (const Span& sp : s.spans()) {
                for (int x = sp.x0; x <= sp.x1; ++x) {
                    vals.emplace_back(p.idx(x, sp.y),
                                      repairValue(p, isCr, x, sp.y, bad, bkgd, x + box.x0, sp.y + box.y0));
                }
            }
        }
        for (const auto& [i, v] : vals) {
            undo.save(i, p.img[i]);
            p.img[i] = v;
        }
    };
    // ---- 4. repair, then grow niteration times ----
    markAll(crs);
    repairAll(crs);
    std::int64_t nTotal = 0;
    for (const SpanSet& cr : crs) {
        nTotal += cr.area();
    }
    bool tooMany = false;
    for (int it = 0; it < ctrl.niteration && !crs.empty(); ++it) {
        std::vector<SpanSet> rings;
        rings.reserve(crs.size());
        for (const SpanSet& cr : crs) {
            rings.push_back(growthRing(cr, p.w, p.h));
        }
        const SpanSet tested = uniteAll(rings);
        std::vector<Span> extraSpans;
        for (const Span& sp : tested.spans()) {
            for (int x = sp.x0; x <= sp.x1; ++x) {
                const std::ptrdiff_t i = p.idx(x, sp.y);
                if ((p.msk[i] & bad) != 0) {
                    continue;
                }
                float corr = 0;
                if (isCrPixel(p, i, ctrl.minSigma / 2, th, bkgd, 0.0, corr)) {
                    undo.save(i, p.img[i]);
                    p.img[i] = corr;
                    extraSpans.push_back(Span{sp.y, x, x});
                }
            }
        }
        if (extraSpans.empty()) {
            break;
        }
        const SpanSet extra = SpanSet::fromSpans(std::move(extraSpans));
        for (std::size_t k = 0; k < crs.size(); ++k) {
            crs[k] = crs[k].unite(rings[k].intersect(extra));
        }
        nTotal = uniteAll(crs).area();
        if (nTotal > ctrl.nCrPixelMax) {
            tooMany = true;
            break;
        }
    }
    undo.restore(p.img);
    if (tooMany) {
        throw TooManyCosmicRayPixels(nTotal, ctrl.nCrPixelMax);
    }
    // ---- 5, 6. mask, repair ----
    std::fill(isCr.begin(), isCr.end(), std::uint8_t{0});
    markAll(crs);
    if (!ctrl.keepCRs) {
        repairAll(crs);
    }
    const MaskPixel setBits = ctrl.keepCRs ? crBit : (crBit | intrpBit);
    for (std::size_t i = 0; i < isCr.size(); ++i) {
        if (isCr[i] != 0) {
            mi.mask.data()[i] |= setBits;
        }
    }
    result.crs.reserve(crs.size());
    for (const SpanSet& cr : crs) {
        result.crs.push_back(toParent(cr, box));
    }
    result.pixels = uniteAll(result.crs);
    result.nCr = static_cast<std::int64_t>(result.crs.size());
    result.nPixels = result.pixels.area();
    return result;
}

}  // namespace safeclip::kernel
