// End to end on a simulated patch with known truth: SafeClip removes the injected transients,
// leaves static sources alone, and its coadd, variance and nImage agree with independent
// computations from the truth models and the input warps.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <variant>

#include "safeclip/app/Config.h"
#include "safeclip/app/PatchCoadd.h"
#include "safeclip/app/Simulator.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/MaskDict.h"
#include "safeclip/kernel/SpanSet.h"

namespace fs = std::filesystem;
using namespace safeclip;
using kernel::Box;

namespace {

const std::vector<std::int64_t>& intColumn(const io::Table& t, const std::string& name) {
    for (const auto& c : t.columns) {
        if (c.name == name) {
            return std::get<std::vector<std::int64_t>>(c.data);
        }
    }
    throw std::runtime_error("no column " + name + " in " + t.extname);
}

const std::vector<double>& doubleColumn(const io::Table& t, const std::string& name) {
    for (const auto& c : t.columns) {
        if (c.name == name) {
            return std::get<std::vector<double>>(c.data);
        }
    }
    throw std::runtime_error("no column " + name + " in " + t.extname);
}

struct WarpData {
    std::int64_t visit = 0;
    float scale = 0;
    float weight = 0;
    kernel::MaskedImage pixels;  // raw (unscaled) as read
    kernel::ImageF staticModel;  // ZP27 units
    kernel::ImageF transient;    // ZP27 units
    kernel::SpanSet clipped;
};

/// One simulated patch coadded once for all tests of this suite.
class EndToEnd : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        // An exception here would make gtest (and ctest) report the tests as skipped: keep it and
        // fail every test in SetUp instead.
        try {
            setUpSuite();
        } catch (const std::exception& e) {
            s_setupError = e.what();
        }
    }
    void SetUp() override { ASSERT_TRUE(s_setupError.empty()) << "suite setup failed: " << s_setupError; }

    static void setUpSuite() {
        s_dir = fs::temp_directory_path() / ("safeclip-e2e-" + std::to_string(::getpid()));
        fs::remove_all(s_dir);
        app::SimulateOptions so;
        so.outDir = s_dir.string();
        so.warps = 8;
        so.width = 320;
        so.height = 288;
        so.patches = 1;
        so.seed = 11;
        app::simulate(so);
        const io::Manifest m = io::readManifest((s_dir / "manifest.json").string());
        ASSERT_EQ(m.patches.size(), 1U);
        const auto& patch = m.patches[0];
        std::vector<app::WarpInput> inputs;
        for (const auto& w : patch.warps) {
            inputs.push_back({w.visit, w.path});
        }
        s_coaddPath = (s_dir / "coadd.fits").string();
        app::Config cfg;
        s_result = app::coaddPatch(patch.name, patch.box, inputs, cfg, s_coaddPath);

        s_dict = kernel::MaskDict::canonical();
        io::WarpReader coaddReader(s_coaddPath);
        coaddReader.conformTo(s_dict);
        s_coadd = coaddReader.readAll();
        s_nImage = io::readNImage(s_coaddPath);
        const io::Table inputsTable = io::readTable(s_coaddPath, "INPUTS");
        const io::Table spans = io::readTable(s_coaddPath, "CLIPPED_SPANS");
        const auto& visits = intColumn(inputsTable, "visit");
        const auto& scales = doubleColumn(inputsTable, "scale");
        const auto& weights = doubleColumn(inputsTable, "weight");
        const std::string truthPath = (s_dir / patch.name / "truth.fits").string();
        for (std::size_t i = 0; i < patch.warps.size(); ++i) {
            WarpData w;
            w.visit = visits[i];
            ASSERT_EQ(w.visit, patch.warps[i].visit);
            w.scale = static_cast<float>(scales[i]);
            w.weight = static_cast<float>(weights[i]);
            io::WarpReader r(patch.warps[i].path);
            r.conformTo(s_dict);
            w.pixels = r.readAll();
            w.staticModel = io::readImageHdu(truthPath, "STATIC_" + std::to_string(w.visit));
            w.transient = io::readImageHdu(truthPath, "TRANSIENT_" + std::to_string(w.visit));
            std::vector<kernel::Span> sp;
            const auto& sv = intColumn(spans, "visit");
            const auto& sy = intColumn(spans, "y");
            const auto& sx0 = intColumn(spans, "x0");
            const auto& sx1 = intColumn(spans, "x1");
            for (std::size_t k = 0; k < sv.size(); ++k) {
                if (sv[k] == w.visit) {
                    sp.push_back(
                        {static_cast<int>(sy[k]), static_cast<int>(sx0[k]), static_cast<int>(sx1[k])});
                }
            }
            w.clipped = kernel::SpanSet::fromSpans(sp);
            s_warps.push_back(std::move(w));
        }
        s_box = s_coadd.box();
        s_bad = s_dict.bitMask(std::vector<std::string>{"NO_DATA", "BAD", "SAT", "EDGE"});
        // Pixels within 3 px of any injected transient, in any warp.
        std::vector<kernel::Span> tr;
        for (const auto& w : s_warps) {
            for (int y = s_box.y0; y < s_box.y1(); ++y) {
                for (int x = s_box.x0; x < s_box.x1(); ++x) {
                    if (w.transient(x, y) != 0.0F) {
                        tr.push_back({y, x, x});
                    }
                }
            }
        }
        s_nearTransient = kernel::SpanSet::fromSpans(tr).dilateDisk(3, s_box);
    }

    static void TearDownTestSuite() { fs::remove_all(s_dir); }

    /// Is warp i's pixel accepted by the final stack?
    static bool accepted(const WarpData& w, int x, int y) {
        return (w.pixels.mask(x, y) & s_bad) == 0 && std::isfinite(w.pixels.image(x, y)) &&
               !w.clipped.contains(x, y);
    }

    /// The noiseless coadd given the accepted set: Σ w S / Σ w over accepted warps.
    static double expected(int x, int y, int* n = nullptr) {
        double sw = 0;
        double swx = 0;
        int count = 0;
        for (const auto& w : s_warps) {
            if (accepted(w, x, y)) {
                sw += w.weight;
                swx += w.weight * static_cast<double>(w.staticModel(x, y));
                ++count;
            }
        }
        if (n != nullptr) {
            *n = count;
        }
        return sw > 0 ? swx / sw : std::nan("");
    }

    static inline std::string s_setupError;
    static inline fs::path s_dir;
    static inline std::string s_coaddPath;
    static inline app::PatchResult s_result;
    static inline kernel::MaskDict s_dict;
    static inline kernel::MaskedImage s_coadd;
    static inline kernel::ImageU16 s_nImage;
    static inline std::vector<WarpData> s_warps;
    static inline Box s_box;
    static inline kernel::MaskPixel s_bad = 0;
    static inline kernel::SpanSet s_nearTransient;
};

TEST_F(EndToEnd, FindsAndClipsFootprints) {
    EXPECT_EQ(s_result.nUsed, 8);
    EXPECT_GT(s_result.nFootprints, 0);
    EXPECT_GT(s_result.nClippedFootprints, 0);
    EXPECT_GT(s_result.nCoaddClippedPixels, 0);
}

TEST_F(EndToEnd, InjectedTransientPixelsAreExcluded) {
    std::int64_t total = 0;
    std::int64_t excluded = 0;
    std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> perVisit;
    for (const auto& w : s_warps) {
        for (int y = s_box.y0; y < s_box.y1(); ++y) {
            for (int x = s_box.x0; x < s_box.x1(); ++x) {
                const double sigma = std::sqrt(static_cast<double>(w.pixels.variance(x, y))) * w.scale;
                const double t = w.transient(x, y);
                if (!(t / sigma > 3.0)) {
                    continue;
                }
                ++total;
                ++perVisit[w.visit].first;
                const bool out = (w.pixels.mask(x, y) & s_bad) != 0 || w.clipped.contains(x, y);
                excluded += out ? 1 : 0;
                perVisit[w.visit].second += out ? 1 : 0;
            }
        }
    }
    std::string detail;
    for (const auto& [v, c] : perVisit) {
        detail +=
            " visit " + std::to_string(v) + ": " + std::to_string(c.second) + "/" + std::to_string(c.first);
    }
    std::cout << "[ measured ] transient pixels with S/N > 3 excluded: " << excluded << "/" << total << " ("
              << 100.0 * static_cast<double>(excluded) / static_cast<double>(total) << "%);" << detail
              << "\n";
    ASSERT_GT(total, 100) << "the simulator injected too few transient pixels with S/N > 3";
    EXPECT_GE(static_cast<double>(excluded) / static_cast<double>(total), 0.95)
        << "excluded/total per warp:" << detail;
}

TEST_F(EndToEnd, ClippedCoaddPixelsAreClean) {
    const kernel::MaskPixel clippedBit = s_dict.bitMask("CLIPPED");
    const kernel::MaskPixel noData = s_dict.bitMask("NO_DATA");
    std::int64_t n = 0;
    std::int64_t clean = 0;
    for (int y = s_box.y0; y < s_box.y1(); ++y) {
        for (int x = s_box.x0; x < s_box.x1(); ++x) {
            const auto m = s_coadd.mask(x, y);
            if ((m & clippedBit) == 0 || (m & noData) != 0) {
                continue;
            }
            ++n;
            const double d = s_coadd.image(x, y) - expected(x, y);
            clean += std::abs(d) <= 5.0 * std::sqrt(static_cast<double>(s_coadd.variance(x, y))) ? 1 : 0;
        }
    }
    std::cout << "[ measured ] CLIPPED coadd pixels within 5 sigma of truth: " << clean << "/" << n << "\n";
    ASSERT_GT(n, 50);
    EXPECT_GE(static_cast<double>(clean) / static_cast<double>(n), 0.99) << clean << " of " << n;
}

TEST_F(EndToEnd, StaticSourcesAreNotClippedOutsideTransientRegions) {
    // SafeClip legitimately clips a star in the one warp whose trail or big artefact runs through
    // it (the big-footprint rule clips that warp's whole DETECTED component). So count, per warp,
    // only the connected CLIPPED regions that hold none of that warp's injected transient pixels.
    std::vector<kernel::SpanSet> innocent;
    for (const auto& w : s_warps) {
        std::vector<kernel::SpanSet> keep;
        for (const auto& region : kernel::connectedComponents8(w.clipped)) {
            bool holdsTransient = false;
            for (const auto& sp : region.spans()) {
                for (int x = sp.x0; x <= sp.x1 && !holdsTransient; ++x) {
                    holdsTransient = w.transient(x, sp.y) != 0.0F;
                }
            }
            if (!holdsTransient) {
                keep.push_back(region);
            }
        }
        innocent.push_back(kernel::uniteAll(keep));
    }
    std::int64_t n = 0;
    std::int64_t clipped = 0;
    for (int y = s_box.y0; y < s_box.y1(); ++y) {
        for (int x = s_box.x0; x < s_box.x1(); ++x) {
            const double noise = std::sqrt(static_cast<double>(s_coadd.variance(x, y)));
            const double model = s_warps[0].staticModel(x, y);
            if (!(model > 5.0 * noise)) {
                continue;
            }
            ++n;
            bool any = false;
            for (const auto& set : innocent) {
                any = any || set.contains(x, y);
            }
            clipped += any ? 1 : 0;
        }
    }
    std::cout << "[ measured ] static-source pixels clipped outside transient regions: " << clipped << "/"
              << n << "\n";
    ASSERT_GT(n, 200) << "too few static source pixels to test";
    EXPECT_LT(static_cast<double>(clipped) / static_cast<double>(n), 0.01) << clipped << " of " << n;
}

TEST_F(EndToEnd, InputTableHasPerWarpUsedPixelsAndChecksums) {
    const io::Table inputs = io::readTable(s_coaddPath, "INPUTS");
    const auto& used = intColumn(inputs, "n_used_pixels");
    const std::vector<std::string>* sums = nullptr;
    for (const auto& c : inputs.columns) {
        if (c.name == "checksum") {
            sums = &std::get<std::vector<std::string>>(c.data);
        }
    }
    ASSERT_NE(sums, nullptr);
    for (std::size_t i = 0; i < s_warps.size(); ++i) {
        std::int64_t n = 0;
        for (int y = s_box.y0; y < s_box.y1(); ++y) {
            for (int x = s_box.x0; x < s_box.x1(); ++x) {
                n += accepted(s_warps[i], x, y) ? 1 : 0;
            }
        }
        EXPECT_EQ(used[i], n) << "visit " << s_warps[i].visit;
        EXPECT_EQ((*sums)[i].rfind("crc32:", 0), 0U) << (*sums)[i];
        EXPECT_EQ((*sums)[i].size(), 14U);
    }
}

TEST_F(EndToEnd, CoaddMinusTruthIsConsistentWithVariance) {
    const kernel::MaskPixel skip = s_dict.bitMask("NO_DATA") | s_dict.bitMask("INTRP");
    double chi2 = 0;
    std::int64_t n = 0;
    for (int y = s_box.y0; y < s_box.y1(); ++y) {
        for (int x = s_box.x0; x < s_box.x1(); ++x) {
            if ((s_coadd.mask(x, y) & skip) != 0 || s_nearTransient.contains(x, y)) {
                continue;
            }
            const double d = s_coadd.image(x, y) - expected(x, y);
            chi2 += d * d / static_cast<double>(s_coadd.variance(x, y));
            ++n;
        }
    }
    std::cout << "[ measured ] chi2/dof of coadd - truth: " << chi2 / static_cast<double>(n) << " over " << n
              << " pixels\n";
    ASSERT_GT(n, 10000);
    EXPECT_NEAR(chi2 / static_cast<double>(n), 1.0, 0.1) << "chi2/dof over " << n << " pixels";
}

TEST_F(EndToEnd, NImageMatchesIndependentCount) {
    const kernel::MaskPixel clippedBit = s_dict.bitMask("CLIPPED");
    std::int64_t mismatches = 0;
    std::int64_t lowerWhereClipped = 0;
    std::int64_t clippedPixels = 0;
    for (int y = s_box.y0; y < s_box.y1(); ++y) {
        for (int x = s_box.x0; x < s_box.x1(); ++x) {
            int n = 0;
            int notBad = 0;
            for (const auto& w : s_warps) {
                const bool good = (w.pixels.mask(x, y) & s_bad) == 0;  // nImage does not test NaN (§7.2.3d)
                notBad += good ? 1 : 0;
                n += good && !w.clipped.contains(x, y) ? 1 : 0;
            }
            mismatches += s_nImage(x, y) == n ? 0 : 1;
            // Where an input was excluded by CLIPPED (CLIPPED on a warp that is not otherwise bad),
            // the coadd says CLIPPED and nImage is lower than the count of good inputs. (The coadd
            // can also carry CLIPPED where the clipped warp was bad anyway: §4.3.3 maps the bit of
            // any input once something was masked.)
            bool clippedGood = false;
            for (const auto& w : s_warps) {
                clippedGood = clippedGood || ((w.pixels.mask(x, y) & s_bad) == 0 && w.clipped.contains(x, y));
            }
            if (clippedGood) {
                ++clippedPixels;
                lowerWhereClipped +=
                    s_nImage(x, y) < notBad && (s_coadd.mask(x, y) & clippedBit) != 0 ? 1 : 0;
            }
        }
    }
    EXPECT_EQ(mismatches, 0);
    ASSERT_GT(clippedPixels, 0);
    EXPECT_EQ(lowerWhereClipped, clippedPixels);
}

}  // namespace
