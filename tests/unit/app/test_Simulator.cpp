/// @file test_Simulator.cpp  `safeclip simulate`: files, determinism, manifest, afw layout read back
/// with WarpReader, NO_DATA conventions, single-epoch DETECTED on the satellite trail; cosmic-ray
/// kinds and rates, and the default output unchanged.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "Files.h"
#include "safeclip/app/Simulator.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/MaskDict.h"

namespace fs = std::filesystem;
using namespace safeclip;

namespace {

using safeclip::test::readFile;

fs::path uniqueTempDir(const std::string& tag) {
    static std::atomic<int> counter{0};
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    return fs::temp_directory_path() / ("safeclip-test-sim-" + tag + "-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(now) + "-" + std::to_string(counter++));
}

constexpr int kWarps = 4;
constexpr int kWidth = 128;
constexpr int kHeight = 96;
constexpr int kPatches = 2;

/// Two identical simulator runs, shared by all tests of this file (removed at the end).
class SimulatorTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        s_dirA = uniqueTempDir("a");
        s_dirB = uniqueTempDir("b");
        app::SimulateOptions opts;
        opts.warps = kWarps;
        opts.width = kWidth;
        opts.height = kHeight;
        opts.patches = kPatches;
        opts.seed = 7;
        opts.outDir = s_dirA.string();
        app::simulate(opts);
        opts.outDir = s_dirB.string();
        app::simulate(opts);
        s_truth = nlohmann::json::parse(readFile(s_dirA / "truth.json"));
    }
    static void TearDownTestSuite() {
        std::error_code ec;
        fs::remove_all(s_dirA, ec);
        fs::remove_all(s_dirB, ec);
    }
    static fs::path s_dirA;
    static fs::path s_dirB;
    static nlohmann::json s_truth;
};

fs::path SimulatorTest::s_dirA;
fs::path SimulatorTest::s_dirB;
nlohmann::json SimulatorTest::s_truth;

/// Row-major index of PARENT (x, y) in an image of `box`.
std::size_t at(const kernel::Box& box, int x, int y) {
    return static_cast<std::size_t>(y - box.y0) * static_cast<std::size_t>(box.width) +
           static_cast<std::size_t>(x - box.x0);
}

/// Value of a numeric card in a list of 80-character FITS cards.
double cardValue(const std::vector<std::string>& cards, const std::string& key) {
    for (const auto& c : cards) {
        std::string k = c.substr(0, 8);
        k.erase(k.find_last_not_of(' ') + 1);
        if (k == key) {
            return std::strtod(c.substr(10, c.find('/', 10) - 10).c_str(), nullptr);  // free-format reals
        }
    }
    ADD_FAILURE() << "no card " << key;
    return std::nan("");
}

}  // namespace

TEST_F(SimulatorTest, WritesEveryFile) {
    for (const auto* f : {"manifest.json", "truth.json", "p000/truth.fits", "p001/truth.fits"}) {
        EXPECT_TRUE(fs::is_regular_file(s_dirA / f)) << f;
    }
    for (int p = 0; p < kPatches; ++p) {
        for (int i = 0; i < kWarps; ++i) {
            const fs::path f =
                s_dirA / ("p00" + std::to_string(p)) / ("warp-" + std::to_string(100 + i) + ".fits");
            EXPECT_TRUE(fs::is_regular_file(f)) << f;
        }
    }
    // no temporaries left behind
    for (const auto& e : fs::recursive_directory_iterator(s_dirA)) {
        EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
    }
}

TEST_F(SimulatorTest, IsDeterministicByteForByte) {
    std::size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(s_dirA)) {
        if (!e.is_regular_file()) {
            continue;
        }
        const fs::path rel = fs::relative(e.path(), s_dirA);
        ASSERT_TRUE(fs::exists(s_dirB / rel)) << rel;
        EXPECT_TRUE(readFile(e.path()) == readFile(s_dirB / rel)) << rel << " differs between two runs";
        ++n;
    }
    EXPECT_EQ(n, static_cast<std::size_t>(2 + kPatches * (kWarps + 1)));
}

TEST_F(SimulatorTest, ManifestAndTruthListTheWarps) {
    const io::Manifest m = io::readManifest((s_dirA / "manifest.json").string());
    ASSERT_EQ(m.patches.size(), static_cast<std::size_t>(kPatches));
    for (int p = 0; p < kPatches; ++p) {
        const auto& mp = m.patches[static_cast<std::size_t>(p)];
        EXPECT_EQ(mp.name, "p00" + std::to_string(p));
        EXPECT_EQ(mp.box, (kernel::Box{1000 + p * kWidth, 2000, kWidth, kHeight}));
        ASSERT_EQ(mp.warps.size(), static_cast<std::size_t>(kWarps));
        for (int i = 0; i < kWarps; ++i) {
            EXPECT_EQ(mp.warps[static_cast<std::size_t>(i)].visit, 100 + i);
            EXPECT_TRUE(fs::is_regular_file(mp.warps[static_cast<std::size_t>(i)].path))
                << mp.warps[static_cast<std::size_t>(i)].path;
        }
    }
    // manifest paths are written relative to OUT
    const auto raw = nlohmann::json::parse(readFile(s_dirA / "manifest.json"));
    EXPECT_EQ(raw["patches"][0]["warps"][0]["path"], "p000/warp-100.fits");

    EXPECT_EQ(s_truth["seed"], 7);
    EXPECT_EQ(s_truth["zero_point"], 27.0);
    ASSERT_EQ(s_truth["patches"].size(), static_cast<std::size_t>(kPatches));
    const auto& pj = s_truth["patches"][1];
    EXPECT_EQ(pj["name"], "p001");
    EXPECT_EQ(pj["box"], nlohmann::json::array({1128, 2000, kWidth, kHeight}));
    ASSERT_EQ(pj["warps"].size(), static_cast<std::size_t>(kWarps));
    int trails = 0;
    int ghosts = 0;
    int crs = 0;
    for (const auto& a : pj["artifacts"]) {
        const std::string type = a["type"];
        trails += type == "trail";
        ghosts += type == "ghost";
        crs += type == "cosmic_ray";
        EXPECT_EQ(a["bbox"].size(), 4U);
    }
    EXPECT_EQ(trails, 2);  // warps 0 and 3
    EXPECT_EQ(ghosts, 1);  // warp 5 % 4 = 1
    EXPECT_GE(crs, kWarps);
    for (const auto& w : pj["warps"]) {
        const double psf = w["psf_sigma"];
        const double sky = w["sky_sigma"];
        EXPECT_GE(psf, 1.3);
        EXPECT_LE(psf, 2.2);
        EXPECT_GE(sky, 6.0);
        EXPECT_LE(sky, 12.0);
        EXPECT_NEAR(double(w["scale"]) * double(w["fluxmag0"]), std::pow(10.0, 0.4 * 27), 1e-3);
    }
    // the same visits have the same parameters in every patch
    EXPECT_EQ(s_truth["patches"][0]["warps"][2]["psf_sigma"], pj["warps"][2]["psf_sigma"]);
}

TEST_F(SimulatorTest, WarpReadsBackWithAfwLayout) {
    const auto& wj = s_truth["patches"][1]["warps"][2];
    io::WarpReader r((s_dirA / "p001" / "warp-102.fits").string());
    const io::WarpHeader& h = r.header();
    EXPECT_EQ(h.box, (kernel::Box{1128, 2000, kWidth, kHeight}));
    ASSERT_TRUE(h.calibrationMean.has_value());
    EXPECT_EQ(h.calibrationSource, "FLUXMAG0");
    EXPECT_NEAR(*h.calibrationMean, io::calibrationFromFluxMag0(double(wj["fluxmag0"])),
                1e-9 * *h.calibrationMean);
    ASSERT_TRUE(h.psfSigma.has_value());
    EXPECT_NEAR(*h.psfSigma, double(wj["psf_sigma"]), 1e-9);
    ASSERT_TRUE(h.visit.has_value());
    EXPECT_EQ(*h.visit, 102);
    EXPECT_EQ(h.filter, "r");
    // tract WCS: CRPIX_parent = (1000 + 2*128/2, 2000 + 96/2); FITS local = parent - xy0 + 1
    EXPECT_DOUBLE_EQ(cardValue(h.wcsCards, "CRPIX1"), 1128.0 - 1128.0 + 1.0);
    EXPECT_DOUBLE_EQ(cardValue(h.wcsCards, "CRPIX2"), 2048.0 - 2000.0 + 1.0);
    EXPECT_DOUBLE_EQ(cardValue(h.wcsCards, "CRVAL1"), 150.0);
    EXPECT_DOUBLE_EQ(cardValue(h.wcsCards, "CRVAL2"), 2.0);
    EXPECT_DOUBLE_EQ(cardValue(h.wcsCards, "CD2_2"), 0.2 / 3600.0);
    EXPECT_EQ(h.maskPlanes.bitOf("NO_DATA"), 8);

    kernel::MaskDict dict = kernel::MaskDict::defaults();
    r.conformTo(dict);
    const kernel::MaskedImage mi = r.readAll();
    const kernel::MaskPixel noData = dict.bitMask("NO_DATA");
    const kernel::MaskPixel edge = dict.bitMask("EDGE");
    std::int64_t nNoData = 0;
    std::int64_t nEdge = 0;
    for (std::size_t k = 0; k < mi.image.data().size(); ++k) {
        const kernel::MaskPixel m = mi.mask.data()[k];
        if (m & noData) {
            ++nNoData;
            EXPECT_TRUE(std::isnan(mi.image.data()[k])) << k;
            EXPECT_TRUE(std::isinf(mi.variance.data()[k]) && mi.variance.data()[k] > 0) << k;
            EXPECT_EQ(m & edge, 0) << k;
        } else {
            EXPECT_TRUE(std::isfinite(mi.image.data()[k])) << k;
            EXPECT_TRUE(std::isfinite(mi.variance.data()[k]) && mi.variance.data()[k] > 0) << k;
        }
        nEdge += (m & edge) != 0;
    }
    // chip gap: 10 contiguous full-height columns; warp index 2 also lacks the corner
    // x < x0 + 0.2 W, y < y0 + 0.3 H; nothing else is NO_DATA.
    const kernel::Box b = mi.box();
    const int cornerW = static_cast<int>(std::ceil(0.2 * kWidth));   // x < x0 + 25.6
    const int cornerH = static_cast<int>(std::ceil(0.3 * kHeight));  // y < y0 + 28.8
    std::vector<int> fullColumns;
    for (int x = b.x0; x < b.x1(); ++x) {
        int n = 0;
        for (int y = b.y0; y < b.y1(); ++y) {
            const bool nd = (mi.mask(x, y) & noData) != 0;
            n += nd;
            if (x < b.x0 + cornerW && y < b.y0 + cornerH) {
                EXPECT_TRUE(nd) << x << "," << y;
            }
        }
        if (n == b.height) {
            fullColumns.push_back(x);
        }
    }
    ASSERT_EQ(fullColumns.size(), 10U);
    EXPECT_EQ(fullColumns.back() - fullColumns.front(), 9);
    std::int64_t expected = 10 * kHeight + static_cast<std::int64_t>(cornerW) * cornerH;
    for (const int x : fullColumns) {
        expected -= x < b.x0 + cornerW ? cornerH : 0;
    }
    EXPECT_EQ(nNoData, expected);
    EXPECT_GT(nEdge, 8 * kHeight);
}

TEST_F(SimulatorTest, BadColumnInWarpOne) {
    io::WarpReader r((s_dirA / "p000" / "warp-101.fits").string());
    kernel::MaskDict dict = kernel::MaskDict::defaults();
    r.conformTo(dict);
    const kernel::MaskedImage mi = r.readAll();
    const kernel::Box b = mi.box();
    int badColumns = 0;
    for (int x = b.x0; x < b.x1(); ++x) {
        int n = 0;
        for (int y = b.y0; y < b.y1(); ++y) {
            n += (mi.mask(x, y) & dict.bitMask("BAD")) != 0;
        }
        if (n == b.height) {
            ++badColumns;
        } else {
            EXPECT_EQ(n, 0) << x;
        }
    }
    EXPECT_EQ(badColumns, 1);
}

TEST_F(SimulatorTest, TrailIsDetectedOnlyInItsWarp) {
    const auto& pj = s_truth["patches"][0];
    const fs::path dir = s_dirA / "p000";
    const kernel::Box box{1000, 2000, kWidth, kHeight};
    kernel::MaskDict dict = kernel::MaskDict::defaults();
    const kernel::MaskPixel detected = dict.bitMask("DETECTED");
    const kernel::MaskPixel noData = dict.bitMask("NO_DATA");

    std::vector<kernel::MaskedImage> warps;
    std::vector<kernel::ImageF> statics;
    std::vector<kernel::ImageF> transients;
    for (int i = 0; i < kWarps; ++i) {
        io::WarpReader r((dir / ("warp-" + std::to_string(100 + i) + ".fits")).string());
        r.conformTo(dict);
        warps.push_back(r.readAll());
        statics.push_back(
            io::readImageHdu((dir / "truth.fits").string(), "STATIC_" + std::to_string(100 + i)));
        transients.push_back(
            io::readImageHdu((dir / "truth.fits").string(), "TRANSIENT_" + std::to_string(100 + i)));
        ASSERT_EQ(statics.back().data().size(), static_cast<std::size_t>(box.area()));
    }
    auto snr = [&](const kernel::ImageF& img, int i, int x, int y) {
        const auto& w = pj["warps"][static_cast<std::size_t>(i)];
        return double(img.data()[at(box, x, y)]) / (double(w["scale"]) * double(w["sky_sigma"]));
    };

    // Trail pixels of warp 0 (S/N > 5), away from the border where smoothing is undefined and
    // from NO_DATA in any warp.
    const int border = 10;
    std::int64_t trail = 0;
    std::int64_t trailDetected = 0;
    std::vector<std::int64_t> others(kWarps, 0);
    std::vector<std::int64_t> othersDetected(kWarps, 0);
    for (int y = box.y0 + border; y < box.y1() - border; ++y) {
        for (int x = box.x0 + border; x < box.x1() - border; ++x) {
            if (snr(transients[0], 0, x, y) <= 5.0 || (warps[0].mask(x, y) & noData)) {
                continue;
            }
            ++trail;
            trailDetected += (warps[0].mask(x, y) & detected) != 0;
            for (int j = 1; j < kWarps; ++j) {
                // skip pixels near anything real in warp j: a static source, its own transients,
                // or NO_DATA (within the detection growth plus the smoothing kernel)
                bool busy = false;
                const int r = 12;
                for (int yy = std::max(box.y0, y - r); yy < std::min(box.y1(), y + r + 1) && !busy; ++yy) {
                    for (int xx = std::max(box.x0, x - r); xx < std::min(box.x1(), x + r + 1) && !busy;
                         ++xx) {
                        const double s = snr(statics[static_cast<std::size_t>(j)], j, xx, yy);
                        busy = std::isnan(s) || s > 0.2 ||
                               snr(transients[static_cast<std::size_t>(j)], j, xx, yy) > 0.2;
                    }
                }
                if (busy) {
                    continue;
                }
                ++others[static_cast<std::size_t>(j)];
                othersDetected[static_cast<std::size_t>(j)] +=
                    (warps[static_cast<std::size_t>(j)].mask(x, y) & detected) != 0;
            }
        }
    }
    ASSERT_GT(trail, 100);
    EXPECT_GT(static_cast<double>(trailDetected), 0.9 * static_cast<double>(trail))
        << trailDetected << " of " << trail;
    std::int64_t checked = 0;
    for (int j = 1; j < kWarps; ++j) {
        checked += others[static_cast<std::size_t>(j)];
        EXPECT_LE(static_cast<double>(othersDetected[static_cast<std::size_t>(j)]),
                  0.01 * static_cast<double>(others[static_cast<std::size_t>(j)]))
            << "warp " << j << ": " << othersDetected[static_cast<std::size_t>(j)] << " of "
            << others[static_cast<std::size_t>(j)];
    }
    EXPECT_GT(checked, 50);
}

TEST(Simulator, RejectsBadOptions) {
    app::SimulateOptions opts;
    opts.outDir = uniqueTempDir("bad").string();
    opts.warps = 0;
    EXPECT_THROW(app::simulate(opts), ConfigError);
    opts.warps = 2;
    opts.width = 8;
    EXPECT_THROW(app::simulate(opts), ConfigError);
    std::error_code ec;
    fs::remove_all(opts.outDir, ec);
}

// ---- cosmic rays: kinds, rates, determinism of the defaults ------------------------------------

namespace {

/// One simulator run in a temporary directory, removed with the object.
struct SimRun {
    explicit SimRun(app::SimulateOptions opts, const std::string& tag) : dir(uniqueTempDir(tag)) {
        opts.outDir = dir.string();
        app::simulate(opts);
        truth = nlohmann::json::parse(readFile(dir / "truth.json"));
    }
    ~SimRun() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    SimRun(const SimRun&) = delete;
    SimRun& operator=(const SimRun&) = delete;
    fs::path dir;
    nlohmann::json truth;
};

kernel::Box boxOf(const nlohmann::json& b) {
    return {int(b[0]), int(b[1]), int(b[2]), int(b[3])};
}

int countType(const nlohmann::json& truth, const std::string& type) {
    int n = 0;
    for (const auto& p : truth["patches"]) {
        for (const auto& a : p["artifacts"]) {
            n += a["type"] == type;
        }
    }
    return n;
}

/// FNV-1a (64 bit) over every file of `dir` in sorted relative-path order: path, a NUL, contents.
std::uint64_t treeHash(const fs::path& dir) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
        if (e.is_regular_file()) {
            files.push_back(fs::relative(e.path(), dir));
        }
    }
    std::sort(files.begin(), files.end(),
              [](const fs::path& a, const fs::path& b) { return a.generic_string() < b.generic_string(); });
    std::uint64_t h = 0xcbf29ce484222325ULL;
    auto eat = [&h](const std::string& s) {
        for (const char c : s) {
            h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
        }
    };
    for (const auto& f : files) {
        eat(f.generic_string());
        eat(std::string(1, '\0'));
        eat(readFile(dir / f));
    }
    return h;
}

}  // namespace

// The default options must give exactly what the simulator gave before cosmic-ray tracks and
// rates were added (tests and benchmarks depend on the seeds). The value was obtained once with
// `safeclip` built from commit 1b794dd (before the change):
//   safeclip simulate --out D --warps 4 --size 64x48 --patches 2 --seed 7
// hashed with this FNV-1a in Python:
//   h=0xcbf29ce484222325; for each file f of D in sorted relative-path order, for each byte b of
//   f's path + b"\0" + f's contents: h = ((h ^ b) * 0x100000001b3) % 2**64
TEST(SimulatorCosmicRays, DefaultOptionsGiveTheOutputOfBefore) {
    app::SimulateOptions opts;
    opts.warps = 4;
    opts.width = 64;
    opts.height = 48;
    opts.patches = 2;
    opts.seed = 7;
    const SimRun run(opts, "default");
    EXPECT_EQ(treeHash(run.dir), 0x521b82b4a75db312ULL);
    EXPECT_EQ(countType(run.truth, "cosmic_ray_track"), 0);
}

TEST(SimulatorCosmicRays, ZeroRateMakesNone) {
    app::SimulateOptions opts;
    opts.warps = 8;
    opts.width = 96;
    opts.height = 64;
    opts.cosmicRayRate = 0.0;
    opts.cosmicRayTrackFraction = 0.5;
    const SimRun run(opts, "cr0");
    EXPECT_EQ(countType(run.truth, "cosmic_ray"), 0);
    EXPECT_EQ(countType(run.truth, "cosmic_ray_track"), 0);
    // warp 2 has neither a trail (warps 0, 3) nor a ghost (warp 5): no transient at all
    const kernel::ImageF tr = io::readImageHdu((run.dir / "p000" / "truth.fits").string(), "TRANSIENT_102");
    for (const float v : tr.data()) {
        ASSERT_EQ(v, 0.0F);
    }
}

TEST(SimulatorCosmicRays, OnlyTracksWhenTheFractionIsOne) {
    app::SimulateOptions opts;
    opts.warps = 4;
    opts.width = 128;
    opts.height = 128;
    opts.cosmicRayRate = 1000.0;
    opts.cosmicRayTrackFraction = 1.0;
    const SimRun run(opts, "cr1");
    EXPECT_EQ(countType(run.truth, "cosmic_ray"), 0);
    EXPECT_GT(countType(run.truth, "cosmic_ray_track"), 0);
}

/// Tracks: Poisson count at the requested rate, lengths 5-40 px, boxes consistent with the
/// length, S/N in range, and each track's pixels one 8-connected component.
TEST(SimulatorCosmicRays, TracksAtTheRequestedRateAndShape) {
    app::SimulateOptions opts;
    opts.warps = 8;
    opts.width = 256;
    opts.height = 256;
    opts.cosmicRayRate = 400.0;
    opts.cosmicRayTrackFraction = 0.5;
    opts.seed = 11;
    const SimRun run(opts, "tracks");
    const auto& pj = run.truth["patches"][0];
    const kernel::Box box = boxOf(pj["box"]);
    const double area = static_cast<double>(box.area());

    // hits and clusters: lround(A * rate * (1 - f) / 1e6) per warp, exactly
    const long hitsPerWarp = std::lround(area * 400.0 * 0.5 / 1e6);
    EXPECT_EQ(countType(run.truth, "cosmic_ray"), opts.warps * hitsPerWarp);
    // tracks: Poisson with mean A * rate * f / 1e6 per warp; over all warps within 4 sigma
    const double mean = opts.warps * area * 400.0 * 0.5 / 1e6;  // 104.9
    const int nTracks = countType(run.truth, "cosmic_ray_track");
    EXPECT_NEAR(nTracks, mean, 4.0 * std::sqrt(mean)) << "tracks " << nTracks << ", expected " << mean;

    // per warp, the truth images: TRANSIENT (counts > 0 on the track) and STATIC (NaN in NO_DATA)
    const std::string truthFits = (run.dir / "p000" / "truth.fits").string();
    int checkedConnectivity = 0;
    int checkedLength = 0;
    for (const auto& a : pj["artifacts"]) {
        if (a["type"] != "cosmic_ray_track") {
            continue;
        }
        const double length = a["length"];
        const double angle = a["angle_deg"];
        const double peak = a["peak_snr"];
        EXPECT_GE(length, 5.0);
        EXPECT_LE(length, 40.0);
        EXPECT_GE(angle, 0.0);
        EXPECT_LT(angle, 180.0);
        EXPECT_GE(peak, 5.0);
        EXPECT_LE(peak, 5000.0);
        const kernel::Box bb = boxOf(a["bbox"]);
        ASSERT_FALSE(bb.empty());
        EXPECT_EQ(bb.intersect(box), bb);
        const bool atEdge = bb.x0 == box.x0 || bb.y0 == box.y0 || bb.x1() == box.x1() || bb.y1() == box.y1();
        if (!atEdge) {  // unclipped: the box spans the line's extent, plus at most 2 px per axis
            const double diag = std::hypot(bb.width - 1, bb.height - 1);
            EXPECT_GE(diag, length - 0.21) << bb.x0 << "," << bb.y0;
            EXPECT_LE(diag, length + 2.0 * std::sqrt(2.0)) << bb.x0 << "," << bb.y0;
            ++checkedLength;
        }

        // connectivity: warps without trail or ghost, the track's box free of other cosmic rays
        // and of NO_DATA (where the truth is zeroed)
        const std::int64_t visit = a["visit"];
        const std::int64_t i = visit - 100;
        if (i == 0 || i == 3 || i == 5) {
            continue;
        }
        bool alone = true;
        for (const auto& o : pj["artifacts"]) {
            if (&o != &a && o["visit"] == visit && !boxOf(o["bbox"]).intersect(bb).empty()) {
                alone = false;
            }
        }
        if (!alone) {
            continue;
        }
        const kernel::ImageF st = io::readImageHdu(truthFits, "STATIC_" + std::to_string(visit));
        const kernel::ImageF tr = io::readImageHdu(truthFits, "TRANSIENT_" + std::to_string(visit));
        std::vector<std::pair<int, int>> pix;
        bool holes = false;
        for (int y = bb.y0; y < bb.y1(); ++y) {
            for (int x = bb.x0; x < bb.x1(); ++x) {
                holes |= std::isnan(st.data()[at(box, x, y)]);
                if (tr.data()[at(box, x, y)] > 0.0F) {
                    pix.emplace_back(x, y);
                }
            }
        }
        if (holes) {
            continue;
        }
        ASSERT_FALSE(pix.empty());
        // flood fill from the first pixel, 8-connected
        std::vector<char> seen(pix.size(), 0);
        std::vector<std::size_t> stack{0};
        seen[0] = 1;
        std::size_t reached = 1;
        while (!stack.empty()) {
            const auto [x, y] = pix[stack.back()];
            stack.pop_back();
            for (std::size_t k = 0; k < pix.size(); ++k) {
                if (!seen[k] && std::abs(pix[k].first - x) <= 1 && std::abs(pix[k].second - y) <= 1) {
                    seen[k] = 1;
                    ++reached;
                    stack.push_back(k);
                }
            }
        }
        EXPECT_EQ(reached, pix.size()) << "track at " << bb.x0 << "," << bb.y0 << " of warp " << visit;
        // the track's pixels span its box
        int minX = bb.x1(), maxX = bb.x0 - 1, minY = bb.y1(), maxY = bb.y0 - 1;
        for (const auto& [x, y] : pix) {
            minX = std::min(minX, x);
            maxX = std::max(maxX, x);
            minY = std::min(minY, y);
            maxY = std::max(maxY, y);
        }
        EXPECT_EQ((kernel::Box{minX, minY, maxX - minX + 1, maxY - minY + 1}), bb);
        ++checkedConnectivity;
    }
    EXPECT_GE(checkedLength, 50);
    EXPECT_GE(checkedConnectivity, 10);
}

/// The hits come from their own stream: turning tracks on keeps the first hits of a warp as they
/// were, and the same seed gives the same tracks.
TEST(SimulatorCosmicRays, TracksDoNotMoveTheHitsAndAreDeterministic) {
    app::SimulateOptions opts;
    opts.warps = 2;
    opts.width = 128;
    opts.height = 128;
    opts.cosmicRayRate = 1000.0;
    const SimRun hitsOnly(opts, "hits");
    opts.cosmicRayTrackFraction = 0.5;
    const SimRun mixedA(opts, "mixa");
    const SimRun mixedB(opts, "mixb");
    auto ofType = [](const SimRun& r, const std::string& type, std::int64_t visit) {
        std::vector<nlohmann::json> out;
        for (const auto& a : r.truth["patches"][0]["artifacts"]) {
            if (a["type"] == type && a["visit"] == visit) {
                out.push_back(a);
            }
        }
        return out;
    };
    for (const std::int64_t visit : {100, 101}) {
        const auto all = ofType(hitsOnly, "cosmic_ray", visit);
        const auto some = ofType(mixedA, "cosmic_ray", visit);
        ASSERT_EQ(all.size(), 16U);  // lround(16384 * 1000 / 1e6)
        ASSERT_EQ(some.size(), 8U);
        for (std::size_t k = 0; k < some.size(); ++k) {
            EXPECT_EQ(some[k], all[k]) << k;
        }
        EXPECT_EQ(ofType(mixedA, "cosmic_ray_track", visit), ofType(mixedB, "cosmic_ray_track", visit));
    }
    EXPECT_EQ(treeHash(mixedA.dir), treeHash(mixedB.dir));
}

TEST(SimulatorCosmicRays, RejectsBadRates) {
    app::SimulateOptions opts;
    opts.outDir = uniqueTempDir("badcr").string();
    opts.cosmicRayRate = -1.0;
    EXPECT_THROW(app::simulate(opts), ConfigError);
    opts.cosmicRayRate = std::nan("");
    EXPECT_THROW(app::simulate(opts), ConfigError);
    opts.cosmicRayRate = 1e6;
    EXPECT_THROW(app::simulate(opts), ConfigError);
    opts.cosmicRayRate = 62.5;
    opts.cosmicRayTrackFraction = 1.5;
    EXPECT_THROW(app::simulate(opts), ConfigError);
    opts.cosmicRayTrackFraction = -0.1;
    EXPECT_THROW(app::simulate(opts), ConfigError);
    std::error_code ec;
    fs::remove_all(opts.outDir, ec);
}

TEST(SimulatorPsf, PsfSigmasAreDrawnFromTheRequestedRange) {
    // --psf-sigma 1.0:2.6 (issue 15's set of very different seeing): every warp's PSFSIGMA and its
    // truth entry lie in the range, and over 32 warps they spread over most of it (uniform draws:
    // the chance that 32 of them miss either end's 0.3-px stretch is 2·(1 - 0.3/1.6)^32 < 2e-3, and
    // the seed is fixed). A reversed range is refused.
    app::SimulateOptions opts;
    opts.warps = 32;
    opts.width = 64;
    opts.height = 48;
    opts.psfSigmaMin = 1.0;
    opts.psfSigmaMax = 2.6;
    const SimRun run(opts, "psf");
    double lo = 1e9;
    double hi = 0;
    for (const auto& w : run.truth["patches"][0]["warps"]) {
        const double s = w["psf_sigma"].get<double>();
        EXPECT_GE(s, 1.0);
        EXPECT_LE(s, 2.6);
        lo = std::min(lo, s);
        hi = std::max(hi, s);
    }
    EXPECT_LT(lo, 1.3);
    EXPECT_GT(hi, 2.3);
    opts.psfSigmaMin = 2.0;
    opts.psfSigmaMax = 1.0;
    EXPECT_THROW(app::simulate(opts), ConfigError);
}
