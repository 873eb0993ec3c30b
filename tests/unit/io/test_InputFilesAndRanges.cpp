// Issue 13, items 13 and 15 (io): a warp or manifest that is not a regular file is refused before it
// is opened (a FIFO must not block), manifest boxes whose far edge leaves int32 or whose area is
// absurd, and patch names that cannot become file names, are one-line errors naming the patch.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include "ExpectError.h"
#include "TempDir.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/io/WarpValidation.h"
#include "safeclip/kernel/Error.h"

using safeclip::ConfigError;
using safeclip::InputError;
using safeclip::io::notRegularFileProblem;
using safeclip::io::readManifest;
using safeclip::io::WarpReader;
using safeclip::test::expectErrorNaming;
using safeclip::test::TempDir;

namespace {

std::string makeFifo(const TempDir& dir, const std::string& name) {
    const std::string p = dir.file(name);
    EXPECT_EQ(::mkfifo(p.c_str(), 0600), 0);
    return p;
}

/// Runs fn on another thread and fails (instead of hanging the suite) when it takes more than 10 s.
template <class Fn>
void withinSeconds(Fn fn) {
    auto f = std::async(std::launch::async, fn);
    ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "blocked on a FIFO";
    f.get();
}

std::string manifestWithPatch(const TempDir& dir, const std::string& name, const std::string& box) {
    return dir.write("m.json",
                     R"({"patches": [{"name": )" + name + R"(, "box": )" + box + R"(, "warps": []}]})");
}

}  // namespace

TEST(RegularFile, Kinds) {
    TempDir dir;
    EXPECT_EQ(notRegularFileProblem(dir.write("a.fits", "x")), "");
    EXPECT_EQ(notRegularFileProblem(dir.file("missing.fits")), "");  // the open reports it
    EXPECT_EQ(notRegularFileProblem(makeFifo(dir, "f")), "not a regular file (a FIFO)");
    EXPECT_EQ(notRegularFileProblem(dir.path().string()), "not a regular file (a directory)");
    EXPECT_EQ(notRegularFileProblem("/dev/null"), "not a regular file (a character device)");
}

TEST(RegularFile, FifoWarpIsRefusedWithoutBlocking) {
    TempDir dir;
    const std::string fifo = makeFifo(dir, "warp.fits");
    withinSeconds([&] {
        expectErrorNaming<InputError>([&] { WarpReader r(fifo); }, fifo, "not a regular file (a FIFO)");
    });
    withinSeconds([&] {
        const auto problems = safeclip::io::validateWarps({fifo}, nullptr);
        ASSERT_EQ(problems.size(), 1U);
        EXPECT_TRUE(problems[0].fatal);
        EXPECT_NE(problems[0].problem.find("not a regular file (a FIFO)"), std::string::npos)
            << problems[0].problem;
    });
}

TEST(RegularFile, FifoManifestIsRefusedWithoutBlocking) {
    TempDir dir;
    const std::string fifo = makeFifo(dir, "manifest.json");
    withinSeconds([&] {
        expectErrorNaming<ConfigError>([&] { (void)readManifest(fifo); }, fifo,
                                       "not a regular file (a FIFO)");
    });
}

TEST(ManifestRanges, BoxFarEdgeOutOfInt32) {
    TempDir dir;
    const std::string m = manifestWithPatch(dir, R"("p1")", "[2147483000, 2147483000, 1024, 1024]");
    const std::string what = expectErrorNaming<ConfigError>([&] { (void)readManifest(m); }, m, "'p1'");
    EXPECT_NE(what.find("x0 + width = 2147484024 is out of range (at most 2147483647)"), std::string::npos)
        << what;
    const std::string m2 = manifestWithPatch(dir, R"("p2")", "[0, 2147483000, 1024, 1024]");
    expectErrorNaming<ConfigError>([&] { (void)readManifest(m2); }, m2, "y0 + height");
    // The largest box that fits is fine.
    const std::string ok = manifestWithPatch(dir, R"("p3")", "[2147482623, -5, 1024, 1024]");
    EXPECT_EQ(readManifest(ok).patches.at(0).box.x1(), 2147483647);
}

TEST(ManifestRanges, AbsurdArea) {
    TempDir dir;
    const std::string m = manifestWithPatch(dir, R"("huge")", "[0, 0, 65536, 65536]");
    const std::string what = expectErrorNaming<ConfigError>([&] { (void)readManifest(m); }, m, "'huge'");
    EXPECT_NE(what.find("box area 65536x65536"), std::string::npos) << what;
    EXPECT_NE(what.find("2^31"), std::string::npos) << what;
    EXPECT_NO_THROW((void)readManifest(manifestWithPatch(dir, R"("big")", "[0, 0, 32768, 65536]")));
}

TEST(ManifestRanges, PatchNamesThatCannotBeFileNames) {
    TempDir dir;
    // A newline would forge a log line: refused, and the message shows it escaped on one line.
    const std::string m = manifestWithPatch(dir, R"("p\n[error] forged")", "[0, 0, 4, 4]");
    const std::string what =
        expectErrorNaming<ConfigError>([&] { (void)readManifest(m); }, m, "control character 0x0a");
    EXPECT_NE(what.find(R"('p\x0a[error] forged')"), std::string::npos) << what;
    const std::string tab = manifestWithPatch(dir, R"("a\tb")", "[0, 0, 4, 4]");
    expectErrorNaming<ConfigError>([&] { (void)readManifest(tab); }, tab, "control character 0x09");
    // Length: "<name>.reduced.h5.tmp.<pid>" must fit in 255 bytes.
    const std::string longest(safeclip::io::kMaxPatchNameBytes, 'p');
    EXPECT_LE(longest.size() + std::string(".reduced.h5.tmp.4194304").size(), 255U);
    EXPECT_NO_THROW((void)readManifest(manifestWithPatch(dir, "\"" + longest + "\"", "[0, 0, 4, 4]")));
    const std::string tooLong = manifestWithPatch(dir, "\"" + longest + "q\"", "[0, 0, 4, 4]");
    expectErrorNaming<ConfigError>([&] { (void)readManifest(tooLong); }, tooLong,
                                   std::to_string(longest.size() + 1) + " bytes long");
    const std::string slash = manifestWithPatch(dir, R"("a/b")", "[0, 0, 4, 4]");
    expectErrorNaming<ConfigError>([&] { (void)readManifest(slash); }, slash, "contains '/'");
    const std::string empty = manifestWithPatch(dir, R"("")", "[0, 0, 4, 4]");
    expectErrorNaming<ConfigError>([&] { (void)readManifest(empty); }, empty, "is empty");
}
