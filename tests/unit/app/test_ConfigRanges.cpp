// Issue 13, items 13 and 15 (app): config ranges (no silent truncation of an int key; psf_sigma and
// zero_point in sensible ranges, the key and range named) and a config that is not a regular file.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <future>
#include <string>

#include "ExpectError.h"
#include "TempDir.h"
#include "safeclip/app/Config.h"
#include "safeclip/kernel/Error.h"

using safeclip::ConfigError;
using safeclip::app::Config;
using safeclip::test::errorMessageOf;
using safeclip::test::TempDir;

namespace {

/// The one-line ConfigError of validate() after --set `assignment`.
std::string validateError(const std::string& assignment) {
    Config c;
    c.set(assignment);
    const std::string what = errorMessageOf<ConfigError>([&] { c.validate(); });
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    return what;
}

void expectValid(const std::string& assignment) {
    Config c;
    c.set(assignment);
    EXPECT_NO_THROW(c.validate()) << assignment;
}

}  // namespace

TEST(ConfigRanges, IntKeysAreRangeCheckedNotTruncated) {
    // 4294967297 = 2^32 + 1 became 1 when cast to int.
    EXPECT_EQ(validateError("detect.min_pixels=4294967297"),
              "config key 'detect.min_pixels': must be in [1, 100000], got 4294967297");
    EXPECT_EQ(validateError("stack.clip_iter=4294967299"),
              "config key 'stack.clip_iter': must be in [1, 100], got 4294967299");
    EXPECT_EQ(validateError("clip.min_big_overlap=9223372036854775807"),
              "config key 'clip.min_big_overlap': must be in [0, 2147483648], got 9223372036854775807");
    EXPECT_EQ(validateError("tile.size=4294967312"),
              "config key 'tile.size': must be 0 (automatic) or in [16, 1073741824], got 4294967312");
    EXPECT_NE(validateError("detect.min_pixels=0").find("must be in [1, 100000]"), std::string::npos);
    expectValid("detect.min_pixels=100000");
    expectValid("stack.clip_iter=100");
    expectValid("clip.min_big_overlap=0");
    expectValid("tile.size=1073741824");
}

TEST(ConfigRanges, PsfSigmaAndZeroPoint) {
    EXPECT_EQ(validateError("detect.psf_sigma=1e6"),
              "config key 'detect.psf_sigma': must be in [0.0, 100.0], got 1.0e+06");
    EXPECT_NE(validateError("detect.psf_sigma=-0.5").find("detect.psf_sigma"), std::string::npos);
    EXPECT_EQ(validateError("stack.zero_point=400"),
              "config key 'stack.zero_point': must be in [0.0, 50.0], got 400.0");
    EXPECT_NE(validateError("stack.zero_point=-1").find("stack.zero_point"), std::string::npos);
    EXPECT_NE(validateError("stack.zero_point=nan").find("finite"), std::string::npos);
    expectValid("detect.psf_sigma=100");
    // Radii in PSF sigmas: 1e6 was an internal error (exit 5) blaming DetectControl.nSigmaToGrow.
    EXPECT_EQ(validateError("detect.n_sigma_to_grow=1e6"),
              "config key 'detect.n_sigma_to_grow': must be in [0.0, 100.0], got 1.0e+06");
    EXPECT_NE(validateError("detect.n_sigma_for_kernel=1e6").find("detect.n_sigma_for_kernel"),
              std::string::npos);
    EXPECT_NE(validateError("detect.n_sigma_for_kernel=0").find("must be > 0"), std::string::npos);
    expectValid("detect.n_sigma_to_grow=100");
    expectValid("stack.zero_point=31.4");
}

TEST(RegularFile, FifoConfigIsRefusedWithoutBlocking) {
    TempDir dir;
    const std::string fifo = dir.file("c.toml");
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    auto f = std::async(std::launch::async,
                        [&] { return errorMessageOf<ConfigError>([&] { (void)Config::fromFile(fifo); }); });
    ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "blocked on a FIFO";
    EXPECT_EQ(f.get(), fifo + ": not a regular file (a FIFO)");
}
