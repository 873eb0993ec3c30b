/// @file Simulator.cpp  `safeclip simulate`: seeded, deterministic synthetic warps in afw layout
/// with known truth (static sky, transients, NO_DATA/EDGE/BAD/SAT masks, single-epoch DETECTED).
///
/// Every random quantity comes from its own xoshiro256** stream keyed by (seed, purpose, patch,
/// warp), so the output never depends on loop order. Fluxes are in zero-point-27 units; warp i
/// holds counts = flux / s_i with s_i = 10^(0.4*27) / FLUXMAG0_i.
#include "safeclip/app/Simulator.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <tuple>
#include <vector>

#include "safeclip/io/AtomicFile.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/MaskDict.h"
#include "safeclip/kernel/SpanSet.h"

namespace safeclip::app {

namespace {

namespace fs = std::filesystem;
using kernel::Box;
using kernel::ImageF;
using kernel::MaskedImage;
using kernel::MaskPixel;

constexpr double kZeroPoint = 27.0;
constexpr double kSaturate = 40000.0;      ///< counts
constexpr int kPatchX0 = 1000;             ///< x0 of patch 0 (PARENT)
constexpr int kPatchY0 = 2000;             ///< y0 of every patch
constexpr double kPixelScaleArcsec = 0.2;  ///< tract WCS pixel scale
constexpr double kBadColumnCounts = 300.0;
constexpr int kGapWidth = 10;
constexpr int kEdgeWidth = 4;
constexpr double kDetectThreshold = 5.0;  ///< single-epoch detection, in smoothed-image sigma
constexpr double kDetectGrowSigma = 2.4;
constexpr double kPi = 3.14159265358979323846;

// ---- random numbers ---------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/// Purposes of the independent random streams.
enum class Stream : std::uint64_t {
    Visit = 1,
    Sky = 2,
    Layout = 3,
    Trail = 4,
    CosmicRay = 5,
    Ghost = 6,
    Noise = 7,
    CosmicRayTrack = 8  ///< tracks only, so that the hits' draws do not depend on the track options
};

/// xoshiro256** seeded through splitmix64 from (seed, stream, a, b); Box–Muller normals in double.
class Rng {
public:
    Rng(std::uint64_t seed, Stream stream, std::uint64_t a, std::uint64_t b) {
        std::uint64_t k = seed;
        std::uint64_t mixed = splitmix64(k);
        for (const std::uint64_t part : {static_cast<std::uint64_t>(stream), a, b}) {
            k = mixed ^ (part * 0xd1342543de82ef95ULL + 0x632be59bd9b4e019ULL);
            mixed = splitmix64(k);
        }
        k = mixed;
        for (auto& s : m_s) {
            s = splitmix64(k);
        }
    }

    std::uint64_t next() {
        const std::uint64_t result = rotl(m_s[1] * 5, 7) * 9;
        const std::uint64_t t = m_s[1] << 17;
        m_s[2] ^= m_s[0];
        m_s[3] ^= m_s[1];
        m_s[1] ^= m_s[2];
        m_s[0] ^= m_s[3];
        m_s[2] ^= t;
        m_s[3] = rotl(m_s[3], 45);
        return result;
    }
    /// Uniform in [0, 1).
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
    double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
    /// Uniform integer in [lo, hi] (hi >= lo).
    int uniformInt(int lo, int hi) {
        const auto n = static_cast<std::uint64_t>(static_cast<std::int64_t>(hi) - lo + 1);
        return lo + static_cast<int>(next() % n);
    }
    /// log-uniform in [lo, hi].
    double logUniform(double lo, double hi) { return std::exp(uniform(std::log(lo), std::log(hi))); }
    /// Power-law fluxes with N(>F) ∝ F^-1 between lo and hi (faint sources dominate, as in real
    /// number counts), by inverting the cumulative distribution.
    double powerLaw(double lo, double hi) {
        const double u = uniform(0.0, 1.0);
        return 1.0 / (1.0 / lo - u * (1.0 / lo - 1.0 / hi));
    }
    /// Standard normal (Box–Muller, the second value cached).
    double normal() {
        if (m_haveSpare) {
            m_haveSpare = false;
            return m_spare;
        }
        const double u1 = 1.0 - uniform();  // (0, 1]
        const double u2 = uniform();
        const double r = std::sqrt(-2.0 * std::log(u1));
        const double a = 2.0 * kPi * u2;
        m_spare = r * std::sin(a);
        m_haveSpare = true;
        return r * std::cos(a);
    }
    /// Poisson-distributed count of mean `mean` (Knuth's product of uniforms, in chunks of mean
    /// at most 8 so that exp(-mean) stays far from underflow; a sum of Poissons is Poisson).
    long poisson(double mean) {
        long n = 0;
        while (mean > 0.0) {
            const double m = std::min(mean, 8.0);
            mean -= m;
            const double limit = std::exp(-m);
            double prod = uniform();
            while (prod > limit) {
                ++n;
                prod *= uniform();
            }
        }
        return n;
    }

private:
    static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    std::array<std::uint64_t, 4> m_s{};
    double m_spare = 0.0;
    bool m_haveSpare = false;
};

// ---- the simulated world ----------------------------------------------------------------------

struct Visit {
    std::int64_t visit = 0;
    double psfSigma = 0.0;  ///< pixels
    double skySigma = 0.0;  ///< counts
    double fluxMag0 = 0.0;  ///< counts of a magnitude-0 source
    double scale = 0.0;     ///< s = 10^(0.4*27) / FLUXMAG0: ZP27 flux per count
};

struct Star {
    double x, y, flux;  ///< PARENT position, ZP27 flux
};

struct Galaxy {
    double x, y, flux;
    double sigmaMajor, sigmaMinor, theta;  ///< intrinsic shape (pixels, radians)
};

struct Sky {
    std::vector<Star> stars;  ///< includes the saturated star (last)
    std::vector<Galaxy> galaxies;
};

struct Artifact {
    std::string type;
    std::int64_t visit;
    Box bbox;
    double peakSnr;
    double lengthPx = 0.0;  ///< cosmic-ray tracks only: length of the track's line, pixels
    double angleDeg = 0.0;  ///< cosmic-ray tracks only: angle of the line to the x axis, [0, 180)
};

/// Bounding box accumulator.
struct BoxAcc {
    int x0 = std::numeric_limits<int>::max(), y0 = std::numeric_limits<int>::max();
    int x1 = std::numeric_limits<int>::min(), y1 = std::numeric_limits<int>::min();
    void add(int x, int y) {
        x0 = std::min(x0, x);
        y0 = std::min(y0, y);
        x1 = std::max(x1, x);
        y1 = std::max(y1, y);
    }
    void addRow(int y, int xa, int xb) {
        add(xa, y);
        add(xb, y);
    }
    [[nodiscard]] Box box() const { return x1 < x0 ? Box{} : Box{x0, y0, x1 - x0 + 1, y1 - y0 + 1}; }
};

Visit makeVisit(std::uint64_t seed, int i, double psfSigmaMin, double psfSigmaMax) {
    Rng rng(seed, Stream::Visit, static_cast<std::uint64_t>(i), 0);
    Visit v;
    v.visit = 100 + i;
    v.psfSigma = rng.uniform(psfSigmaMin, psfSigmaMax);
    v.skySigma = rng.uniform(6.0, 12.0);
    const double f27 = std::pow(10.0, 0.4 * kZeroPoint);
    v.fluxMag0 = f27 * rng.uniform(0.6, 1.4);
    v.scale = f27 / v.fluxMag0;
    return v;
}

Sky makeSky(std::uint64_t seed, int patch, const Box& box) {
    Rng rng(seed, Stream::Sky, static_cast<std::uint64_t>(patch), 0);
    const double area = static_cast<double>(box.area());
    auto px = [&] { return rng.uniform(box.x0, box.x1()); };
    auto py = [&] { return rng.uniform(box.y0, box.y1()); };
    Sky sky;
    const auto nStars = std::max<long>(1, std::lround(area / 2500.0));
    for (long k = 0; k < nStars; ++k) {
        const double x = px();
        const double y = py();
        sky.stars.push_back({x, y, rng.powerLaw(300.0, 3e5)});
    }
    const auto nGalaxies = std::max<long>(1, std::lround(area / 5000.0));
    for (long k = 0; k < nGalaxies; ++k) {
        Galaxy g{};
        g.x = px();
        g.y = py();
        g.flux = rng.powerLaw(500.0, 5e4);
        const double a = rng.uniform(2.0, 5.0);
        const double q = rng.uniform(0.3, 1.0);
        g.sigmaMajor = a;
        g.sigmaMinor = std::max(2.0, q * a);
        g.theta = rng.uniform(0.0, kPi);
        sky.galaxies.push_back(g);
    }
    const double x = px();
    const double y = py();
    sky.stars.push_back({x, y, 5e6});  // saturated
    return sky;
}

/// Column range [xa, xb] of `box` within [lo, hi] (continuous), empty when xa > xb.
std::pair<int, int> clipRange(double lo, double hi, int b0, int b1) {
    if (!(lo <= hi)) {  // also NaN
        return {b0, b0 - 1};
    }
    // clamp before converting: lo/hi may be huge for a nearly horizontal trail
    lo = std::clamp(lo, static_cast<double>(b0) - 1.0, static_cast<double>(b1));
    hi = std::clamp(hi, static_cast<double>(b0) - 1.0, static_cast<double>(b1));
    const int xa = std::max(b0, static_cast<int>(std::ceil(lo)));
    const int xb = std::min(b1 - 1, static_cast<int>(std::floor(hi)));
    return {xa, xb};
}

/// Add a pixel-integrated circular Gaussian of total `flux` at (xc, yc), within ±6σ.
void renderStar(ImageF& img, double xc, double yc, double flux, double sigma) {
    const Box& b = img.box();
    const double h = 6.0 * sigma;
    const auto [xa, xb] = clipRange(xc - h, xc + h, b.x0, b.x1());
    const auto [ya, yb] = clipRange(yc - h, yc + h, b.y0, b.y1());
    if (xa > xb || ya > yb) {
        return;
    }
    const double inv = 1.0 / (std::sqrt(2.0) * sigma);
    auto weights = [&](int a, int bEnd, double c) {
        std::vector<double> w(static_cast<std::size_t>(bEnd - a + 1));
        double prev = std::erf((a - 0.5 - c) * inv);
        for (int k = a; k <= bEnd; ++k) {
            const double cur = std::erf((k + 0.5 - c) * inv);
            w[static_cast<std::size_t>(k - a)] = 0.5 * (cur - prev);
            prev = cur;
        }
        return w;
    };
    const auto wx = weights(xa, xb, xc);
    const auto wy = weights(ya, yb, yc);
    for (int y = ya; y <= yb; ++y) {
        float* row = img.row(y);
        const double fy = flux * wy[static_cast<std::size_t>(y - ya)];
        for (int x = xa; x <= xb; ++x) {
            row[x - b.x0] += static_cast<float>(fy * wx[static_cast<std::size_t>(x - xa)]);
        }
    }
}

/// Add an elliptical Gaussian galaxy convolved with a circular Gaussian PSF (analytic
/// normalisation, sampled at pixel centres) within its 6σ ellipse's bounding box.
void renderGalaxy(ImageF& img, const Galaxy& g, double psfSigma) {
    const Box& b = img.box();
    const double c = std::cos(g.theta);
    const double s = std::sin(g.theta);
    const double a2 = g.sigmaMajor * g.sigmaMajor;
    const double b2 = g.sigmaMinor * g.sigmaMinor;
    const double p2 = psfSigma * psfSigma;
    const double cxx = a2 * c * c + b2 * s * s + p2;
    const double cyy = a2 * s * s + b2 * c * c + p2;
    const double cxy = (a2 - b2) * s * c;
    const double det = cxx * cyy - cxy * cxy;
    const double norm = g.flux / (2.0 * kPi * std::sqrt(det));
    const double hx = 6.0 * std::sqrt(cxx);
    const double hy = 6.0 * std::sqrt(cyy);
    const auto [xa, xb] = clipRange(g.x - hx, g.x + hx, b.x0, b.x1());
    const auto [ya, yb] = clipRange(g.y - hy, g.y + hy, b.y0, b.y1());
    const double ixx = cyy / det;
    const double iyy = cxx / det;
    const double ixy = -cxy / det;
    for (int y = ya; y <= yb; ++y) {
        float* row = img.row(y);
        const double dy = y - g.y;
        for (int x = xa; x <= xb; ++x) {
            const double dx = x - g.x;
            const double q = ixx * dx * dx + 2.0 * ixy * dx * dy + iyy * dy * dy;
            if (q <= 36.0) {
                row[x - b.x0] += static_cast<float>(norm * std::exp(-0.5 * q));
            }
        }
    }
}

/// Satellite trail: a straight line through the central half of the patch at a random angle, with
/// a Gaussian cross-profile of width σ and peak `amp` counts. Returns the touched bbox.
/// A trail through (px, py) with py in [yLo, yHi] (fractions of the height) at an angle within
/// ±0.15 rad of the rows. The two trails of a patch run in separate bands so that they never
/// cross: crossing trails of two warps merge into one difference footprint that no single warp
/// covers > 60%, which upstream SafeClip keeps by design (spec §6.3), and would hide what the
/// end-to-end tests measure.
Box renderTrail(ImageF& counts, Rng& rng, double sigma, double amp, double yLo, double yHi) {
    const Box& b = counts.box();
    const double px = rng.uniform(b.x0 + 0.25 * b.width, b.x0 + 0.75 * b.width);
    const double py = rng.uniform(b.y0 + yLo * b.height, b.y0 + yHi * b.height);
    const double theta = rng.uniform(-0.15, 0.15);
    const double sn = std::sin(theta);
    const double cs = std::cos(theta);
    const double h = 6.0 * sigma;
    const double inv2s2 = 1.0 / (2.0 * sigma * sigma);
    BoxAcc acc;
    for (int y = b.y0; y < b.y1(); ++y) {
        // signed distance d(x) = -(x - px) sin + (y - py) cos = c0 - x sin
        const double c0 = px * sn + (y - py) * cs;
        int xa = b.x0;
        int xb = b.x1() - 1;
        if (std::abs(sn) > 1e-12) {
            const double l1 = (c0 - h) / sn;
            const double l2 = (c0 + h) / sn;
            std::tie(xa, xb) = clipRange(std::min(l1, l2), std::max(l1, l2), b.x0, b.x1());
        } else if (std::abs(c0) > h) {
            continue;
        }
        if (xa > xb) {
            continue;
        }
        float* row = counts.row(y);
        for (int x = xa; x <= xb; ++x) {
            const double d = c0 - x * sn;
            row[x - b.x0] += static_cast<float>(amp * std::exp(-d * d * inv2s2));
        }
        acc.addRow(y, xa, xb);
    }
    return acc.box();
}

/// Optical ghost: a uniform disk of radius 20 px with tanh-soft edges (width 2 px), peak `amp`.
Box renderGhost(ImageF& counts, Rng& rng, double amp) {
    const Box& b = counts.box();
    constexpr double radius = 20.0;
    constexpr double soft = 2.0;
    const double reach = radius + 6.0 * soft;
    auto centre = [&](int lo, int n) {
        return n > 2 * radius ? rng.uniform(lo + radius, lo + n - radius) : lo + 0.5 * n;
    };
    const double cx = centre(b.x0, b.width);
    const double cy = centre(b.y0, b.height);
    BoxAcc acc;
    const auto [ya, yb] = clipRange(cy - reach, cy + reach, b.y0, b.y1());
    for (int y = ya; y <= yb; ++y) {
        const double dy = y - cy;
        const double half = std::sqrt(std::max(0.0, reach * reach - dy * dy));
        const auto [xa, xb] = clipRange(cx - half, cx + half, b.x0, b.x1());
        if (xa > xb) {
            continue;
        }
        float* row = counts.row(y);
        for (int x = xa; x <= xb; ++x) {
            const double r = std::hypot(x - cx, dy);
            row[x - b.x0] += static_cast<float>(amp * 0.5 * (1.0 - std::tanh((r - radius) / soft)));
        }
        acc.addRow(y, xa, xb);
    }
    return acc.box();
}

/// Cosmic-ray hits: `n` per warp, each of 1-4 8-connected pixels (a quarter single pixels, the
/// rest 2-4 px clusters), S/N 50-500 per pixel (real hits deposit hundreds to thousands of
/// electrons against a sky noise of tens; fainter single pixels fall below the 2σ detection of
/// the smoothed difference image). The default rate, area/16000 per warp, is sparse, so that hits
/// of different warps rarely share one difference footprint, which SafeClip cannot give to one warp.
void renderCosmicRays(ImageF& counts, Rng& rng, long n, double skySigma, std::int64_t visit,
                      std::vector<Artifact>& artifacts) {
    const Box& b = counts.box();
    static constexpr int kDx[8] = {-1, 0, 1, -1, 1, -1, 0, 1};
    static constexpr int kDy[8] = {-1, -1, -1, 0, 0, 1, 1, 1};
    for (long k = 0; k < n; ++k) {
        std::vector<std::pair<int, int>> pix;
        pix.emplace_back(rng.uniformInt(b.x0, b.x1() - 1), rng.uniformInt(b.y0, b.y1() - 1));
        const int size = rng.uniformInt(1, 4);
        for (int tries = 0; static_cast<int>(pix.size()) < size && tries < 64; ++tries) {
            const auto& from =
                pix[static_cast<std::size_t>(rng.uniformInt(0, static_cast<int>(pix.size()) - 1))];
            const int dir = rng.uniformInt(0, 7);
            const std::pair<int, int> cand{from.first + kDx[dir], from.second + kDy[dir]};
            if (b.contains(cand.first, cand.second) && std::find(pix.begin(), pix.end(), cand) == pix.end()) {
                pix.push_back(cand);
            }
        }
        BoxAcc acc;
        double peak = 0.0;
        for (const auto& [x, y] : pix) {
            const double snr = rng.uniform(50.0, 500.0);
            peak = std::max(peak, snr);
            counts(x, y) += static_cast<float>(snr * skySigma);
            acc.add(x, y);
        }
        artifacts.push_back({"cosmic_ray", visit, acc.box(), peak});
    }
}

/// Cosmic-ray tracks: `n` per warp, each a line of length L uniform in [5, 40] px at an angle
/// uniform in [0, π), centred anywhere in the warp (clipped by its edges), as a muon crossing
/// the thick CCD obliquely leaves. The charge per unit length is q0 = 20-200 sky σ per pixel of
/// length (log-uniform; ~80 e-/µm of silicon over a 10 µm pixel is ~1000 e- against a sky noise
/// of tens of e-), varying along the track: per 1-px segment a log-normal factor (σ_ln = 0.5,
/// mean 1) and, with probability 0.05, a delta-ray knot ×2-5 (the Landau tail). The line is
/// sampled every ≤ 0.2 px and each sample's charge is shared bilinearly by the (up to) four
/// pixels around it (a 1-px-wide charge cloud), so a track's pixels form one 8-connected set.
void renderCosmicRayTracks(ImageF& counts, Rng& rng, long n, double skySigma, std::int64_t visit,
                           std::vector<Artifact>& artifacts) {
    const Box& b = counts.box();
    for (long k = 0; k < n; ++k) {
        const double cx = rng.uniform(b.x0, b.x1() - 1);
        const double cy = rng.uniform(b.y0, b.y1() - 1);
        const double length = rng.uniform(5.0, 40.0);
        const double theta = rng.uniform(0.0, kPi);
        const double q0 = rng.logUniform(20.0, 200.0) * skySigma;  // counts per pixel of length
        const int nSeg = static_cast<int>(std::ceil(length));
        std::vector<double> gain(static_cast<std::size_t>(nSeg));
        for (double& g : gain) {
            g = std::exp(0.5 * rng.normal() - 0.125);
            if (rng.uniform() < 0.05) {
                g *= rng.uniform(2.0, 5.0);
            }
        }
        const double ux = std::cos(theta);
        const double uy = std::sin(theta);
        const int nSamples = static_cast<int>(std::ceil(length / 0.2));
        const double ds = length / nSamples;
        std::map<std::pair<int, int>, double> charge;  // (y, x) -> counts
        for (int j = 0; j < nSamples; ++j) {
            const double t = (j + 0.5) * ds;  // distance from the start
            const double c =
                q0 * gain[std::min<std::size_t>(static_cast<std::size_t>(t), gain.size() - 1)] * ds;
            const double x = cx + (t - 0.5 * length) * ux;
            const double y = cy + (t - 0.5 * length) * uy;
            const double fx = x - std::floor(x);
            const double fy = y - std::floor(y);
            const int ix = static_cast<int>(std::floor(x));
            const int iy = static_cast<int>(std::floor(y));
            const double wx[2] = {1.0 - fx, fx};
            const double wy[2] = {1.0 - fy, fy};
            for (int dy = 0; dy < 2; ++dy) {
                for (int dx = 0; dx < 2; ++dx) {
                    const double w = wx[dx] * wy[dy];
                    if (w > 0.0 && b.contains(ix + dx, iy + dy)) {
                        charge[{iy + dy, ix + dx}] += c * w;
                    }
                }
            }
        }
        if (charge.empty()) {
            continue;  // cannot happen: the centre lies in the warp
        }
        BoxAcc acc;
        double peak = 0.0;
        for (const auto& [yx, q] : charge) {
            counts(yx.second, yx.first) += static_cast<float>(q);
            acc.add(yx.second, yx.first);
            peak = std::max(peak, q / skySigma);
        }
        artifacts.push_back({"cosmic_ray_track", visit, acc.box(), peak, length, theta * 180.0 / kPi});
    }
}

// ---- FITS cards -------------------------------------------------------------------------------

std::string fitsReal(double v) {
    std::array<char, 64> buf{};
    const auto res = std::to_chars(buf.data(), buf.data() + buf.size(), v);
    std::string s(buf.data(), res.ptr);
    const auto e = s.find('e');
    std::string mant = s.substr(0, e);
    std::string expo;
    if (e != std::string::npos) {
        expo.push_back('E');
        expo.append(s, e + 1, std::string::npos);
    }
    if (mant.find('.') == std::string::npos) {
        mant += ".0";
    }
    return mant + expo;
}

/// One 80-column card: key padded to 8, "= ", value right-justified to column 30 (strings
/// left-justified from column 11, at least 8 characters inside the quotes), then " / comment".
std::string fitsCard(const std::string& key, const std::string& value, bool isString,
                     const std::string& comment) {
    std::string v = value;
    if (isString) {
        std::string q = value;
        if (q.size() < 8) {
            q.resize(8, ' ');
        }
        v = "'" + q + "'";
        if (v.size() < 20) {
            v.resize(20, ' ');
        }
    } else if (v.size() < 20) {
        v = std::string(20 - v.size(), ' ') + v;
    }
    std::string k = key;
    k.resize(8, ' ');
    std::string card = k + "= " + v;
    if (!comment.empty()) {
        card += " / " + comment;
    }
    card.resize(80, ' ');
    return card;
}

std::vector<std::string> wcsCards(double crpixParentX, double crpixParentY, const Box& box) {
    const double cd = kPixelScaleArcsec / 3600.0;
    return {
        fitsCard("CTYPE1", "RA---TAN", true, "gnomonic projection"),
        fitsCard("CTYPE2", "DEC--TAN", true, "gnomonic projection"),
        fitsCard("CRPIX1", fitsReal(crpixParentX - box.x0 + 1.0), false, "tract reference pixel, local"),
        fitsCard("CRPIX2", fitsReal(crpixParentY - box.y0 + 1.0), false, "tract reference pixel, local"),
        fitsCard("CRVAL1", fitsReal(150.0), false, "[deg] RA at the reference pixel"),
        fitsCard("CRVAL2", fitsReal(2.0), false, "[deg] Dec at the reference pixel"),
        fitsCard("CD1_1", fitsReal(-cd), false, "0.2 arcsec/pixel"),
        fitsCard("CD1_2", fitsReal(0.0), false, ""),
        fitsCard("CD2_1", fitsReal(0.0), false, ""),
        fitsCard("CD2_2", fitsReal(cd), false, "0.2 arcsec/pixel"),
        fitsCard("CUNIT1", "deg", true, ""),
        fitsCard("CUNIT2", "deg", true, ""),
        fitsCard("RADESYS", "ICRS", true, ""),
    };
}

// ---- one warp ---------------------------------------------------------------------------------

struct WarpLayout {
    std::vector<Box> holes;  ///< NO_DATA rectangles
    int badColumn = -1;      ///< PARENT x of the BAD column, or -1
};

WarpLayout makeLayout(std::uint64_t seed, int patch, int i, int nWarps, const Box& box) {
    Rng rng(seed, Stream::Layout, static_cast<std::uint64_t>(patch), static_cast<std::uint64_t>(i));
    WarpLayout lay;
    const int margin = std::max(kEdgeWidth + 1, box.width / 10);
    const int gapLo = margin;
    const int gapHi = std::max(gapLo, box.width - margin - kGapWidth);
    const int gx = box.x0 + rng.uniformInt(gapLo, gapHi);
    lay.holes.push_back(Box{gx, box.y0, kGapWidth, box.height});
    if (i == 2 && nWarps >= 4) {
        // columns x < x0 + 0.2 W and rows y < y0 + 0.3 H (real-valued bounds)
        const int cw = (2 * box.width + 9) / 10;   // ceil(0.2 W), exact
        const int ch = (3 * box.height + 9) / 10;  // ceil(0.3 H)
        lay.holes.push_back(Box{box.x0, box.y0, cw, ch});
    }
    if (i == 1) {
        for (int tries = 0; tries < 1000; ++tries) {
            const int bx = rng.uniformInt(box.x0, box.x1() - 1);
            if (bx < gx - kEdgeWidth - 1 || bx > gx + kGapWidth + kEdgeWidth) {
                lay.badColumn = bx;
                break;
            }
        }
    }
    return lay;
}

struct WarpProducts {
    MaskedImage exposure;
    ImageF staticTruth;     ///< ZP27 units
    ImageF transientTruth;  ///< ZP27 units
};

struct CosmicRayRates {
    double rate = 0.0;           ///< per Mpx per warp, all kinds
    double trackFraction = 0.0;  ///< of which tracks
};

WarpProducts simulateWarp(std::uint64_t seed, int patch, int i, int nWarps, const Box& box, const Sky& sky,
                          const Visit& v, const CosmicRayRates& cr, const kernel::MaskDict& dict,
                          std::vector<Artifact>& artifacts) {
    WarpProducts out;
    out.staticTruth = ImageF(box, 0.0F);
    for (const auto& s : sky.stars) {
        renderStar(out.staticTruth, s.x, s.y, s.flux, v.psfSigma);
    }
    for (const auto& g : sky.galaxies) {
        renderGalaxy(out.staticTruth, g, v.psfSigma);
    }

    // Transients, in counts.
    ImageF trans(box, 0.0F);
    const auto p = static_cast<std::uint64_t>(patch);
    const auto w = static_cast<std::uint64_t>(i);
    if (i == 0) {
        Rng rng(seed, Stream::Trail, p, w * 2);
        const Box bb = renderTrail(trans, rng, v.psfSigma, 12.0 * v.skySigma, 0.15, 0.3);
        artifacts.push_back({"trail", v.visit, bb, 12.0});
    }
    if (i == 3 % nWarps) {
        Rng rng(seed, Stream::Trail, p, w * 2 + 1);
        const Box bb = renderTrail(trans, rng, v.psfSigma, 5.0 * v.skySigma, 0.7, 0.85);
        artifacts.push_back({"trail", v.visit, bb, 5.0});
    }
    if (i == 5 % nWarps) {
        Rng rng(seed, Stream::Ghost, p, w);
        const Box bb = renderGhost(trans, rng, 3.0 * v.skySigma);
        artifacts.push_back({"ghost", v.visit, bb, 3.0});
    }
    {
        // mu = A * rate / 1e6: with the default rate 62.5 this is exactly A / 16000 (A * 62.5 is
        // exact and both divisions round the same real), so the default output is unchanged.
        const double mu = static_cast<double>(box.area()) * cr.rate / 1e6;
        const double muHits = mu * (1.0 - cr.trackFraction);
        const long nHits = muHits > 0.0 ? std::max<long>(1, std::lround(muHits)) : 0;
        Rng rng(seed, Stream::CosmicRay, p, w);
        renderCosmicRays(trans, rng, nHits, v.skySigma, v.visit, artifacts);
        if (cr.trackFraction > 0.0 && mu > 0.0) {
            Rng trng(seed, Stream::CosmicRayTrack, p, w);
            const long nTracks = trng.poisson(mu * cr.trackFraction);
            renderCosmicRayTracks(trans, trng, nTracks, v.skySigma, v.visit, artifacts);
        }
    }

    const WarpLayout lay = makeLayout(seed, patch, i, nWarps, box);
    const MaskPixel bad = dict.bitMask("BAD");
    const MaskPixel sat = dict.bitMask("SAT");
    const MaskPixel edge = dict.bitMask("EDGE");
    const MaskPixel noData = dict.bitMask("NO_DATA");

    // Pixels: counts = static/s + transient + noise; variance = σ² + max(model + transient, 0).
    out.exposure = MaskedImage(box);
    MaskedImage& mi = out.exposure;
    Rng noise(seed, Stream::Noise, p, w);
    const double invScale = 1.0 / v.scale;
    const double sky2 = v.skySigma * v.skySigma;
    for (int y = box.y0; y < box.y1(); ++y) {
        const float* st = out.staticTruth.row(y);
        const float* tr = trans.row(y);
        float* im = mi.image.row(y);
        float* va = mi.variance.row(y);
        MaskPixel* ma = mi.mask.row(y);
        for (int k = 0; k < box.width; ++k) {
            const double model = st[k] * invScale + tr[k];
            const double var = sky2 + std::max(model, 0.0);
            double val = model + std::sqrt(var) * noise.normal();
            MaskPixel m = 0;
            if (box.x0 + k == lay.badColumn) {
                val += kBadColumnCounts;
                m |= bad;
            }
            if (val >= kSaturate) {
                val = kSaturate;
                m |= sat;
            }
            im[k] = static_cast<float>(val);
            va[k] = static_cast<float>(var);
            ma[k] = m;
        }
    }

    // EDGE: around every hole, a band as wide as the single-epoch detection kernel's half-width
    // (at least kEdgeWidth): there the smoothing reaches missing pixels and detection is impossible,
    // which is where a real pipeline's EDGE plane lies. Then the holes themselves.
    kernel::DetectControl edgeKernel;
    edgeKernel.psfSigma = v.psfSigma;
    const int edgeWidth = std::max(kEdgeWidth, edgeKernel.kernelHalfWidth());
    for (const Box& h : lay.holes) {
        const Box g = h.grown(edgeWidth).intersect(box);
        for (int y = g.y0; y < g.y1(); ++y) {
            MaskPixel* ma = mi.mask.row(y);
            for (int x = g.x0; x < g.x1(); ++x) {
                ma[x - box.x0] |= edge;
            }
        }
    }
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    for (const Box& h : lay.holes) {
        const Box g = h.intersect(box);
        for (int y = g.y0; y < g.y1(); ++y) {
            const int o = g.x0 - box.x0;
            std::fill_n(mi.image.row(y) + o, g.width, nan);
            std::fill_n(mi.variance.row(y) + o, g.width, inf);
            std::fill_n(mi.mask.row(y) + o, g.width, noData);
            std::fill_n(out.staticTruth.row(y) + o, g.width, nan);
            std::fill_n(trans.row(y) + o, g.width, 0.0F);
        }
    }

    // Single-epoch detection, as the pipeline would have run it: BAD pixels are interpolated
    // before detection (here: the +300 offset is taken off), then 5σ on the PSF-smoothed image,
    // both polarities, grown by a disk of int(2.4σ + 0.5) pixels. Growing the union of the
    // components equals growing each component and uniting.
    if (lay.badColumn >= 0) {
        for (int y = box.y0; y < box.y1(); ++y) {
            if ((mi.mask(lay.badColumn, y) & noData) == 0) {
                mi.image(lay.badColumn, y) -= static_cast<float>(kBadColumnCounts);
            }
        }
    }
    {
        const kernel::Smoothed sm = kernel::smoothImage(mi.image, mi.variance, v.psfSigma, 7.0);
        const int grow = static_cast<int>(kDetectGrowSigma * v.psfSigma + 0.5);
        const kernel::SpanSet pos = kernel::thresholdSpans(sm, kDetectThreshold, kernel::Polarity::Positive);
        const kernel::SpanSet neg = kernel::thresholdSpans(sm, kDetectThreshold, kernel::Polarity::Negative);
        pos.dilateDisk(grow, box).paint(mi.mask, dict.bitMask("DETECTED"));
        neg.dilateDisk(grow, box).paint(mi.mask, dict.bitMask("DETECTED_NEGATIVE"));
    }
    if (lay.badColumn >= 0) {
        for (int y = box.y0; y < box.y1(); ++y) {
            if ((mi.mask(lay.badColumn, y) & noData) == 0) {
                mi.image(lay.badColumn, y) += static_cast<float>(kBadColumnCounts);
            }
        }
    }

    // Transient truth in ZP27 units.
    out.transientTruth = std::move(trans);
    for (float& t : out.transientTruth.data()) {
        t = static_cast<float>(t * v.scale);
    }
    return out;
}

io::HeaderCard seedCard(std::uint64_t seed) {
    if (seed <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        return {"SIMSEED", static_cast<std::int64_t>(seed), "simulator seed"};
    }
    return {"SIMSEED", std::to_string(seed), "simulator seed"};
}

nlohmann::ordered_json boxJson(const Box& b) {
    return nlohmann::ordered_json::array({b.x0, b.y0, b.width, b.height});
}

}  // namespace

void simulate(const SimulateOptions& opts) {
    if (opts.outDir.empty()) {
        throw ConfigError("simulate: the output directory is empty");
    }
    if (opts.warps < 1 || opts.warps > 100000) {
        throw ConfigError("simulate: warps must be in [1, 100000], got " + std::to_string(opts.warps));
    }
    if (opts.width < 32 || opts.height < 32 || opts.width > 65536 || opts.height > 65536) {
        throw ConfigError("simulate: width and height must be in [32, 65536], got " +
                          std::to_string(opts.width) + "x" + std::to_string(opts.height));
    }
    if (opts.patches < 1 || opts.patches > 10000) {
        throw ConfigError("simulate: patches must be in [1, 10000], got " + std::to_string(opts.patches));
    }
    if (!(opts.cosmicRayRate >= 0.0 && opts.cosmicRayRate <= 1e5)) {  // also NaN
        throw ConfigError("simulate: the cosmic-ray rate must be in [0, 100000] per Mpx, got " +
                          std::to_string(opts.cosmicRayRate));
    }
    if (!(opts.cosmicRayTrackFraction >= 0.0 && opts.cosmicRayTrackFraction <= 1.0)) {
        throw ConfigError("simulate: the cosmic-ray track fraction must be in [0, 1], got " +
                          std::to_string(opts.cosmicRayTrackFraction));
    }
    if (!(opts.psfSigmaMin >= 0.3 && opts.psfSigmaMax <= 20.0 && opts.psfSigmaMin <= opts.psfSigmaMax)) {
        throw ConfigError("simulate: the PSF sigma range must satisfy 0.3 <= min <= max <= 20 px, got " +
                          std::to_string(opts.psfSigmaMin) + ":" + std::to_string(opts.psfSigmaMax));
    }
    const CosmicRayRates crRates{opts.cosmicRayRate, opts.cosmicRayTrackFraction};
    const fs::path outDir(opts.outDir);
    std::error_code ec;
    fs::create_directories(outDir, ec);
    if (ec) {
        throw OutputError(opts.outDir + ": cannot create directory: " + ec.message());
    }

    const kernel::MaskDict dict = kernel::MaskDict::defaults();
    std::vector<Visit> visits;
    visits.reserve(static_cast<std::size_t>(opts.warps));
    for (int i = 0; i < opts.warps; ++i) {
        visits.push_back(makeVisit(opts.seed, i, opts.psfSigmaMin, opts.psfSigmaMax));
    }
    const double crpixX = kPatchX0 + opts.patches * opts.width / 2.0;
    const double crpixY = kPatchY0 + opts.height / 2.0;

    nlohmann::ordered_json truth;
    truth["seed"] = opts.seed;
    truth["zero_point"] = kZeroPoint;
    truth["patches"] = nlohmann::ordered_json::array();
    io::Manifest manifest;

    for (int p = 0; p < opts.patches; ++p) {
        char name[32];
        std::snprintf(name, sizeof name, "p%03d", p);
        const Box box{kPatchX0 + p * opts.width, kPatchY0, opts.width, opts.height};
        fs::create_directories(outDir / name, ec);
        if (ec) {
            throw OutputError((outDir / name).string() + ": cannot create directory: " + ec.message());
        }
        const Sky sky = makeSky(opts.seed, p, box);
        const std::vector<std::string> cards = wcsCards(crpixX, crpixY, box);

        io::ManifestPatch mp{name, box, {}};
        nlohmann::ordered_json pj;
        pj["name"] = name;
        pj["box"] = boxJson(box);
        pj["warps"] = nlohmann::ordered_json::array();
        std::vector<Artifact> artifacts;
        std::vector<ImageF> statics;
        std::vector<ImageF> transients;
        statics.reserve(static_cast<std::size_t>(opts.warps));
        transients.reserve(static_cast<std::size_t>(opts.warps));

        for (int i = 0; i < opts.warps; ++i) {
            const Visit& v = visits[static_cast<std::size_t>(i)];
            WarpProducts wp =
                simulateWarp(opts.seed, p, i, opts.warps, box, sky, v, crRates, dict, artifacts);
            const std::string rel = std::string(name) + "/warp-" + std::to_string(v.visit) + ".fits";

            io::ExposureData data;
            data.image = &wp.exposure;
            data.maskPlanes = &dict;
            data.primaryCards = {
                {"FLUXMAG0", v.fluxMag0, "counts of a magnitude-0 source"},
                {"VISIT", v.visit, "visit id"},
                {"PSFSIGMA", v.psfSigma, "[pixel] Gaussian PSF sigma"},
                {"FILTER", std::string("r"), "filter"},
                {"SATURATE", kSaturate, "[count] saturation level"},
                {"EXPTIME", 30.0, "[s] exposure time"},
                {"SKYSIGMA", v.skySigma, "[count] sky noise sigma"},
                seedCard(opts.seed),
            };
            data.wcsCards = cards;
            io::writeExposure((outDir / rel).string(), data);

            statics.push_back(std::move(wp.staticTruth));
            transients.push_back(std::move(wp.transientTruth));
            mp.warps.push_back({v.visit, rel});
            nlohmann::ordered_json wj;
            wj["visit"] = v.visit;
            wj["path"] = rel;
            wj["fluxmag0"] = v.fluxMag0;
            wj["scale"] = v.scale;
            wj["psf_sigma"] = v.psfSigma;
            wj["sky_sigma"] = v.skySigma;
            pj["warps"].push_back(std::move(wj));
        }

        std::vector<std::string> hduNames;
        std::vector<std::pair<std::string, const ImageF*>> hdus;
        for (int i = 0; i < opts.warps; ++i) {
            const std::string visit = std::to_string(visits[static_cast<std::size_t>(i)].visit);
            hdus.emplace_back("STATIC_" + visit, &statics[static_cast<std::size_t>(i)]);
            hdus.emplace_back("TRANSIENT_" + visit, &transients[static_cast<std::size_t>(i)]);
        }
        io::writeImageHdus((outDir / name / "truth.fits").string(), hdus,
                           {seedCard(opts.seed),
                            {"PATCH", std::string(name), "patch name"},
                            {"ZEROPT", kZeroPoint, "truth images are in zero-point-27 flux units"}});

        pj["artifacts"] = nlohmann::ordered_json::array();
        for (const auto& a : artifacts) {
            nlohmann::ordered_json aj;
            aj["type"] = a.type;
            aj["visit"] = a.visit;
            aj["bbox"] = boxJson(a.bbox);
            aj["peak_snr"] = a.peakSnr;
            if (a.type == "cosmic_ray_track") {
                aj["length"] = a.lengthPx;
                aj["angle_deg"] = a.angleDeg;
            }
            pj["artifacts"].push_back(std::move(aj));
        }
        truth["patches"].push_back(std::move(pj));
        manifest.patches.push_back(std::move(mp));
    }

    io::writeTextAtomically((outDir / "truth.json").string(), truth.dump(1) + "\n", "the truth file");
    io::writeManifest((outDir / "manifest.json").string(), manifest);
}

}  // namespace safeclip::app
