// `safeclip validate`: every problem of every warp is listed, with the file named, fatal or not.
#include <fitsio.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "safeclip/app/Simulator.h"
#include "safeclip/app/Validate.h"
#include "safeclip/io/Manifest.h"

namespace fs = std::filesystem;
using namespace safeclip;

namespace {

/// Open a FITS file for update, run `edit` on it, close; fails the test on a cfitsio error.
template <typename F>
void editFits(const std::string& path, F edit) {
    fitsfile* fp = nullptr;
    int status = 0;
    fits_open_file(&fp, path.c_str(), READWRITE, &status);
    ASSERT_EQ(status, 0) << path;
    edit(fp, status);
    fits_close_file(fp, &status);
    ASSERT_EQ(status, 0) << path;
}

void moveTo(fitsfile* fp, const char* extname, int& status) {
    fits_movnam_hdu(fp, ANY_HDU, const_cast<char*>(extname), 0, &status);
}

void fillFloat(fitsfile* fp, const char* extname, float value, long n, int& status) {
    moveTo(fp, extname, status);
    std::vector<float> v(static_cast<std::size_t>(n), value);
    fits_write_img(fp, TFLOAT, 1, n, v.data(), &status);
}

class Validate : public ::testing::Test {
protected:
    void SetUp() override {
        m_dir = fs::temp_directory_path() / ("safeclip-validate-" + std::to_string(::getpid()) + "-" +
                                             ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(m_dir);
        app::SimulateOptions so;
        so.outDir = m_dir.string();
        so.warps = 4;
        so.width = 64;
        so.height = 48;
        so.seed = 5;
        app::simulate(so);
        const io::Manifest m = io::readManifest((m_dir / "manifest.json").string());
        m_box = m.patches[0].box;
        for (const auto& w : m.patches[0].warps) {
            m_warps.push_back(w.path);
        }
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(m_dir, ec);
    }
    /// A copy of warp i under a new name.
    std::string copy(int i, const std::string& name) {
        const std::string p = (m_dir / name).string();
        fs::copy_file(m_warps[static_cast<std::size_t>(i)], p, fs::copy_options::overwrite_existing);
        return p;
    }
    static std::vector<app::WarpProblem> of(const std::vector<app::WarpProblem>& all, const std::string& f) {
        std::vector<app::WarpProblem> out;
        for (const auto& p : all) {
            if (p.file == f) {
                out.push_back(p);
            }
        }
        return out;
    }
    static bool says(const std::vector<app::WarpProblem>& ps, const std::string& text, bool fatal = true) {
        for (const auto& p : ps) {
            if (p.problem.find(text) != std::string::npos && p.fatal == fatal) {
                return true;
            }
        }
        return false;
    }
    static std::string dump(const std::vector<app::WarpProblem>& ps) { return app::formatProblems(ps); }

    fs::path m_dir;
    kernel::Box m_box;
    std::vector<std::string> m_warps;
};

}  // namespace

TEST_F(Validate, GoodWarpsHaveNoProblems) {
    const auto ps = app::validateWarps(m_warps, nullptr);
    EXPECT_TRUE(ps.empty()) << dump(ps);
    EXPECT_TRUE(app::validateWarps(m_warps, &m_box).empty());
    EXPECT_EQ(app::formatProblems({}), "");
}

TEST_F(Validate, ListsEveryProblemWithItsFile) {
    const long n = static_cast<long>(m_box.area());
    const std::string allNaN = copy(0, "allnan.fits");
    editFits(allNaN, [&](fitsfile* fp, int& st) {
        fillFloat(fp, "IMAGE", std::numeric_limits<float>::quiet_NaN(), n, st);
    });
    const std::string zeroVar = copy(1, "zerovar.fits");
    editFits(zeroVar, [&](fitsfile* fp, int& st) {
        moveTo(fp, "VARIANCE", st);
        // Three pixels of row 20 with a finite image and no mask bit.
        const LONGLONG first = 20 * m_box.width + 30;
        std::vector<float> v = {0.0F, -1.0F, std::numeric_limits<float>::infinity()};
        fits_write_img(fp, TFLOAT, first, 3, v.data(), &st);
        moveTo(fp, "IMAGE", st);
        std::vector<float> im = {1.0F, 2.0F, 3.0F};
        fits_write_img(fp, TFLOAT, first, 3, im.data(), &st);
        moveTo(fp, "MASK", st);
        std::vector<int> mk = {0, 0, 0};
        fits_write_img(fp, TINT, first, 3, mk.data(), &st);
    });
    const std::string badZp = copy(2, "badzp.fits");
    editFits(badZp, [&](fitsfile* fp, int& st) {
        fits_movabs_hdu(fp, 1, nullptr, &st);
        fits_update_key_dbl(fp, "FLUXMAG0", -5.0, 6, nullptr, &st);
    });
    const std::string wcs = copy(3, "wcs.fits");
    editFits(wcs, [&](fitsfile* fp, int& st) {
        moveTo(fp, "IMAGE", st);
        fits_update_key_dbl(fp, "CRVAL1", 150.001, 12, nullptr, &st);
        moveTo(fp, "MASK", st);
        fits_delete_key(fp, "MP_DETECTED", &st);
    });
    const std::string shifted = copy(3, "shifted.fits");
    editFits(shifted, [&](fitsfile* fp, int& st) {
        fits_movabs_hdu(fp, 1, nullptr, &st);
        fits_update_key_lng(fp, "VISIT", 999, nullptr, &st);
        for (const char* ext : {"IMAGE", "MASK", "VARIANCE"}) {
            moveTo(fp, ext, st);
            fits_update_key_dbl(fp, "CRVAL1A", m_box.x0 + 5, 12, nullptr, &st);
            fits_update_key_dbl(fp, "LTV1", -(m_box.x0 + 5), 12, nullptr, &st);
        }
    });
    const std::string missing = (m_dir / "missing.fits").string();
    const std::string dupVisit = copy(0, "dupvisit.fits");
    const std::vector<std::string> files = {m_warps[0], allNaN,  zeroVar, badZp,
                                            wcs,        shifted, missing, dupVisit};
    const auto ps = app::validateWarps(files, nullptr);
    const std::string table = dump(ps);
    EXPECT_TRUE(app::anyFatal(ps));
    EXPECT_TRUE(of(ps, m_warps[0]).empty()) << table;
    EXPECT_TRUE(says(of(ps, allNaN), "all NaN")) << table;
    EXPECT_TRUE(says(of(ps, zeroVar), "VARIANCE: 3 of")) << table;
    EXPECT_TRUE(says(of(ps, zeroVar), "1 zero, 1 negative, 1 NaN/inf")) << table;
    EXPECT_TRUE(says(of(ps, badZp), "FLUXMAG0 = -5 is not positive")) << table;
    EXPECT_TRUE(says(of(ps, wcs), "WCS differs from " + m_warps[0] + ": CRVAL1 = 150.001 vs 150")) << table;
    EXPECT_TRUE(says(of(ps, wcs), "no DETECTED mask plane", false)) << table;
    // Shifted xy0: a different box, and CRPIX in PARENT pixels differs by 5.
    EXPECT_TRUE(says(of(ps, shifted), "mismatched grid")) << table;
    EXPECT_TRUE(says(of(ps, shifted), "CRPIX1 + xy0")) << table;
    EXPECT_TRUE(says(of(ps, missing), "no such file")) << table;
    EXPECT_TRUE(says(of(ps, dupVisit), "duplicate visit 100")) << table;
    // One line per problem, each naming its file.
    std::size_t lines = 0;
    for (const char c : table) {
        lines += c == '\n' ? 1 : 0;
    }
    EXPECT_EQ(lines, ps.size() + 1);
}

TEST_F(Validate, APatchBoxMustBeCovered) {
    const kernel::Box inside{m_box.x0 + 4, m_box.y0 + 4, 20, 20};
    EXPECT_FALSE(app::anyFatal(app::validateWarps(m_warps, &inside)));
    const kernel::Box outside{m_box.x0 + 4, m_box.y0 + 4, m_box.width, 20};
    const auto ps = app::validateWarps(m_warps, &outside);
    ASSERT_EQ(ps.size(), m_warps.size()) << dump(ps);
    EXPECT_TRUE(says(ps, "does not cover patch box"));
}

TEST_F(Validate, OnlyWarningsAreNotFatal) {
    const std::string noDet = copy(0, "nodet.fits");
    editFits(noDet, [&](fitsfile* fp, int& st) {
        moveTo(fp, "MASK", st);
        fits_delete_key(fp, "MP_DETECTED", &st);
    });
    const auto ps = app::validateWarps({noDet, m_warps[1]}, nullptr);
    ASSERT_EQ(ps.size(), 1U) << dump(ps);
    EXPECT_FALSE(ps[0].fatal);
    EXPECT_FALSE(app::anyFatal(ps));
}
