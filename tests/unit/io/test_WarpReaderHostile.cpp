// Hostile FITS headers for io::WarpReader, written byte by byte (cfitsio would not write them):
// declared sizes far beyond the data or beyond 2^31 pixels must be refused from the header alone,
// before anything is sized from them; MP_ cards that lost their value are refused.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"

namespace fs = std::filesystem;
using safeclip::InputError;
using safeclip::io::WarpReader;

namespace {

std::string card(const std::string& key, const std::string& value) {
    if (key.size() > 8) {
        std::string c = "HIERARCH " + key + " = " + value;
        c.resize(80, ' ');
        return c;
    }
    std::string c = key;
    c.resize(8, ' ');
    c += "= ";
    std::string v = value;
    if (v.size() < 20) {
        v.insert(0, 20 - v.size(), ' ');
    }
    c += v;
    c.resize(80, ' ');
    return c;
}

std::string raw(const std::string& text) {
    std::string c = text;
    c.resize(80, ' ');
    return c;
}

/// A header block (cards + END, padded to 2880 bytes).
std::string header(std::vector<std::string> cards) {
    cards.push_back(raw("END"));
    std::string h;
    for (const auto& c : cards) {
        h += c;
    }
    h.resize((h.size() + 2879) / 2880 * 2880, ' ');
    return h;
}

std::string imageHeader(const std::string& extname, int bitpix, long w, long h,
                        const std::vector<std::string>& extra = {}) {
    std::vector<std::string> cards = {card("XTENSION", "'IMAGE   '"),
                                      card("BITPIX", std::to_string(bitpix)),
                                      card("NAXIS", "2"),
                                      card("NAXIS1", std::to_string(w)),
                                      card("NAXIS2", std::to_string(h)),
                                      card("PCOUNT", "0"),
                                      card("GCOUNT", "1"),
                                      card("EXTNAME", "'" + extname + "'")};
    cards.insert(cards.end(), extra.begin(), extra.end());
    return header(cards);
}

std::string primary() {
    return header({card("SIMPLE", "T"), card("BITPIX", "8"), card("NAXIS", "0"), card("EXTEND", "T"),
                   card("FLUXMAG0", "1e11")});
}

std::string data(long w, long h) {
    std::string d(static_cast<std::size_t>(w * h * 4), '\0');
    d.resize((d.size() + 2879) / 2880 * 2880, '\0');
    return d;
}

class WarpReaderHostile : public ::testing::Test {
protected:
    void SetUp() override {
        m_dir = fs::temp_directory_path() / ("safeclip-hostile-" + std::to_string(::getpid()));
        fs::create_directories(m_dir);
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(m_dir, ec);
    }
    std::string write(const std::string& name, const std::string& bytes) {
        const std::string p = (m_dir / name).string();
        std::ofstream(p, std::ios::binary) << bytes;
        return p;
    }
    static void expectInputError(const std::string& path, const std::string& word) {
        try {
            WarpReader r(path);
            ADD_FAILURE() << "no InputError for " << path;
        } catch (const InputError& e) {
            const std::string what = e.what();
            EXPECT_EQ(what.rfind(path + ": ", 0), 0U) << what;
            EXPECT_NE(what.find(word), std::string::npos) << "expected '" << word << "' in: " << what;
        }
    }
    fs::path m_dir;
};

const std::vector<std::string> kPlanes = {card("MP_BAD", "0"), card("MP_DETECTED", "5"),
                                          card("MP_NO_DATA", "8")};

}  // namespace

TEST_F(WarpReaderHostile, AValidMinimalWarpOpens) {
    const std::string p = write("ok.fits", primary() + imageHeader("IMAGE", -32, 8, 4) + data(8, 4) +
                                               imageHeader("MASK", 32, 8, 4, kPlanes) + data(8, 4) +
                                               imageHeader("VARIANCE", -32, 8, 4) + data(8, 4));
    WarpReader r(p);
    EXPECT_EQ(r.header().box.width, 8);
    EXPECT_EQ(r.header().maskPlanes.bitOf("DETECTED"), 5);
}

TEST_F(WarpReaderHostile, NaxisLargerThanTheDataIsATruncatedFile) {
    const std::string p = write("lies.fits", primary() + imageHeader("IMAGE", -32, 4096, 4096) + data(8, 4) +
                                                 imageHeader("MASK", 32, 8, 4, kPlanes) + data(8, 4) +
                                                 imageHeader("VARIANCE", -32, 8, 4) + data(8, 4));
    expectInputError(p, "truncated file: HDU 2 needs");
}

TEST_F(WarpReaderHostile, AbsurdDeclaredSizesAreRefusedFromTheHeader) {
    // Under a 1 GiB address-space limit: the 200000^2 planes would need 160 GB each.
    struct rlimit old {};
    ASSERT_EQ(::getrlimit(RLIMIT_AS, &old), 0);
    const std::string p =
        write("huge.fits", primary() + imageHeader("IMAGE", -32, 200000, 200000) + data(8, 4));
    struct rlimit lim = old;
    lim.rlim_cur = std::min<rlim_t>(old.rlim_max, rlim_t{1} << 30);
    // ASan/valgrind builds reserve far more address space: only limit when nothing else does.
    const bool limited = old.rlim_cur == RLIM_INFINITY && ::setrlimit(RLIMIT_AS, &lim) == 0;
    expectInputError(p, "declares a 200000x200000 image, more than the limit of 2^31 pixels");
    // Just above 2^31 pixels.
    expectInputError(write("just.fits", primary() + imageHeader("IMAGE", -32, 46341, 46341)),
                     "46341x46341 image");
    if (limited) {
        ::setrlimit(RLIMIT_AS, &old);
    }
}

TEST_F(WarpReaderHostile, MaskPlaneCardsWithoutAValueAreRefused) {
    std::vector<std::string> planes = kPlanes;
    planes.push_back(raw("HIERARCH MP_" + std::string(68, 'T')));  // the name fills the card
    const std::string p = write("toolong.fits", primary() + imageHeader("IMAGE", -32, 8, 4) + data(8, 4) +
                                                    imageHeader("MASK", 32, 8, 4, planes) + data(8, 4) +
                                                    imageHeader("VARIANCE", -32, 8, 4) + data(8, 4));
    expectInputError(p, "has no value: mask plane name too long for a FITS card");
    // The longest name that fits (63 characters) is fine.
    planes.back() = raw("HIERARCH MP_" + std::string(63, 'L') + " = 21");
    const std::string q = write("long.fits", primary() + imageHeader("IMAGE", -32, 8, 4) + data(8, 4) +
                                                 imageHeader("MASK", 32, 8, 4, planes) + data(8, 4) +
                                                 imageHeader("VARIANCE", -32, 8, 4) + data(8, 4));
    WarpReader r(q);
    EXPECT_EQ(r.header().maskPlanes.bitOf(std::string(63, 'L')), 21);
}

// cfitsio 4.2.0 aborts the process on this corrupt tile-compressed header (found by the fuzzer);
// the reader probes compressed files in a child process and refuses the file instead.
TEST(WarpReaderCrashGuard, CompressedHeaderThatCrashesCfitsioIsRefusedNotFatal) {
    const std::string path =
        std::string(SAFECLIP_TEST_DATA) + "/../fuzz/known-crashes/cfitsio-4.2.0-ffc2j-strncat-overflow.fits";
    try {
        safeclip::io::WarpReader r(path);
        FAIL() << "the file was accepted";
    } catch (const safeclip::InputError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(path), std::string::npos) << what;
        EXPECT_NE(what.find("corrupt tile-compressed header"), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos);
    }
}
