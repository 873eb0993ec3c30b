// Tests of the run manifest: parsing, path resolution, atomic writing and every parse error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "ExpectError.h"
#include "Files.h"
#include "TempDir.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/kernel/Error.h"

namespace fs = std::filesystem;
using safeclip::ConfigError;
using safeclip::OutputError;
using safeclip::io::Manifest;
using safeclip::io::ManifestPatch;
using safeclip::io::ManifestWarp;
using safeclip::io::readManifest;
using safeclip::io::writeManifest;
using safeclip::kernel::Box;

namespace {

using safeclip::test::readFile;
using safeclip::test::TempDir;

std::string write(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path) << text;
    return path;
}

/// readManifest(path) must throw a one-line ConfigError naming the path and containing `word`.
void expectConfigError(const std::string& path, const std::string& word) {
    const std::string what =
        safeclip::test::expectErrorNaming<ConfigError>([&] { (void)readManifest(path); }, path, word);
    EXPECT_EQ(what.compare(0, path.size() + 2, path + ": "), 0) << what << "\nfor the manifest:\n"
                                                                << readFile(path);
}

std::string patchJson(const std::string& body) {
    return R"({"patches": [)" + body + "]}";
}

}  // namespace

TEST(Manifest, ParsesAndResolvesPaths) {
    TempDir dir;
    const std::string path = write(dir.file("run/manifest.json"), R"({
      "format": "safeclip-manifest", "version": 1,
      "patches": [
        {"name": "p000", "box": [0, 0, 100, 80],
         "warps": [{"visit": 100, "path": "p000/warp-100.fits"},
                   {"visit": 101, "path": "/abs/warp-101.fits"},
                   {"path": "sub/../p000/./warp.fits"}]},
        {"name": "p001", "box": [-50, 4000, 2048, 1], "warps": []}
      ]})");
    const Manifest m = readManifest(path);
    ASSERT_EQ(m.patches.size(), 2U);
    const ManifestPatch& p = m.patches[0];
    EXPECT_EQ(p.name, "p000");
    EXPECT_EQ(p.box, (Box{0, 0, 100, 80}));
    ASSERT_EQ(p.warps.size(), 3U);
    EXPECT_EQ(p.warps[0].visit, 100);
    EXPECT_EQ(fs::path(p.warps[0].path), dir.path() / "run" / "p000/warp-100.fits");
    EXPECT_EQ(p.warps[1].visit, 101);
    EXPECT_EQ(p.warps[1].path, "/abs/warp-101.fits");
    EXPECT_EQ(p.warps[2].visit, -1);
    EXPECT_EQ(fs::path(p.warps[2].path), dir.path() / "run" / "sub/../p000/./warp.fits");
    EXPECT_EQ(m.patches[1].box, (Box{-50, 4000, 2048, 1}));
    EXPECT_TRUE(m.patches[1].warps.empty());
}

TEST(Manifest, RelativeManifestPathResolvesRelativeToItsDirectory) {
    TempDir dir;
    write(dir.file("sub/m.json"),
          patchJson(R"({"name": "a", "box": [0, 0, 1, 1], "warps": [{"path": "w.fits"}]})"));
    const fs::path old = fs::current_path();
    fs::current_path(dir.path());
    const Manifest m = readManifest("sub/m.json");
    fs::current_path(old);
    EXPECT_EQ(fs::path(m.patches.at(0).warps.at(0).path), fs::path("sub/w.fits"));
    // A manifest in the current directory: paths stay as written.
    fs::current_path(dir.path() / "sub");
    const Manifest m2 = readManifest("m.json");
    fs::current_path(old);
    EXPECT_EQ(m2.patches.at(0).warps.at(0).path, "w.fits");
}

TEST(Manifest, WriteIsAtomicAndRoundTrips) {
    TempDir dir;
    Manifest m;
    m.patches.push_back(
        ManifestPatch{"p000",
                      Box{1, 2, 30, 40},
                      {ManifestWarp{100, "p000/warp-100.fits"}, ManifestWarp{7, "/abs/w.fits"}}});
    m.patches.push_back(ManifestPatch{"p001", Box{-5, -6, 7, 8}, {}});
    const std::string path = dir.file("manifest.json");
    writeManifest(path, m);
    // Paths are written as given.
    const std::string text = readFile(path);
    EXPECT_NE(text.find("\"p000/warp-100.fits\""), std::string::npos);
    EXPECT_NE(text.find("safeclip-manifest"), std::string::npos);
    std::size_t nFiles = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) {
        ++nFiles;
    }
    EXPECT_EQ(nFiles, 1U);
    const Manifest back = readManifest(path);
    ASSERT_EQ(back.patches.size(), 2U);
    EXPECT_EQ(back.patches[0].name, "p000");
    EXPECT_EQ(back.patches[0].box, (Box{1, 2, 30, 40}));
    ASSERT_EQ(back.patches[0].warps.size(), 2U);
    EXPECT_EQ(back.patches[0].warps[0].visit, 100);
    EXPECT_EQ(fs::path(back.patches[0].warps[0].path), dir.path() / "p000/warp-100.fits");
    EXPECT_EQ(back.patches[0].warps[1].path, "/abs/w.fits");
    EXPECT_EQ(back.patches[1].box, (Box{-5, -6, 7, 8}));
    // Overwrite.
    m.patches.pop_back();
    writeManifest(path, m);
    EXPECT_EQ(readManifest(path).patches.size(), 1U);
}

TEST(Manifest, WriteToMissingDirectoryFails) {
    TempDir dir;
    const std::string path = dir.file("nope/manifest.json");
    try {
        writeManifest(path, Manifest{});
        ADD_FAILURE() << "no OutputError";
    } catch (const OutputError& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
    EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(Manifest, Errors) {
    TempDir dir;
    int n = 0;
    auto bad = [&](const std::string& text, const std::string& word) {
        SCOPED_TRACE(text);
        std::string name = std::to_string(n++);  // (not "m" + ...: GCC 12 -Wrestrict false positive)
        name += ".json";
        expectConfigError(write(dir.file(name), text), word);
    };
    expectConfigError(dir.file("missing.json"), "no such file");
    bad("{\"patches\": [", "invalid JSON");
    bad("not json at all", "invalid JSON");
    bad("", "invalid JSON");
    bad("[1, 2]", "JSON object");
    bad("{}", "missing \"patches\"");
    bad(R"({"patches": {}})", "\"patches\" must be an array");
    bad(R"({"format": "other", "patches": []})", "format");
    bad(R"({"version": 2, "patches": []})", "version");
    bad(patchJson("3"), "must be an object");
    bad(patchJson(R"({"box": [0, 0, 1, 1], "warps": []})"), "\"name\"");
    bad(patchJson(R"({"name": 5, "box": [0, 0, 1, 1], "warps": []})"), "\"name\"");
    bad(patchJson(R"({"name": "a", "warps": []})"), "\"box\"");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1, 1]})"), "\"warps\"");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1], "warps": []})"), "4 integers");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1, 1, 1], "warps": []})"), "4 integers");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1.5, 1], "warps": []})"), "4 integers");
    bad(patchJson(R"({"name": "a", "box": [0, "0", 1, 1], "warps": []})"), "4 integers");
    bad(patchJson(R"({"name": "a", "box": "0 0 1 1", "warps": []})"), "4 integers");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 0, 1], "warps": []})"), "positive");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 5, -1], "warps": []})"), "positive");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 5, 9999999999], "warps": []})"), "out of range");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1, 1], "warps": []},
                     {"name": "a", "box": [0, 0, 1, 1], "warps": []})"),
        "duplicate patch name 'a'");
    bad(patchJson(R"({"name": "a/b", "box": [0, 0, 1, 1], "warps": []})"), "plain file name");
    bad(patchJson(R"({"name": ".", "box": [0, 0, 1, 1], "warps": []})"), "plain file name");
    bad(patchJson(R"({"name": "..", "box": [0, 0, 1, 1], "warps": []})"), "plain file name");
    bad(patchJson(R"({"name": "", "box": [0, 0, 1, 1], "warps": []})"), "plain file name");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1, 1], "warps": [{"visit": 1}]})"), "\"path\"");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1, 1], "warps": [{"path": ""}]})"), "\"path\"");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1, 1], "warps": [{"path": 3}]})"), "\"path\"");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1, 1], "warps": ["w.fits"]})"), "must be an object");
    bad(patchJson(R"({"name": "a", "box": [0, 0, 1, 1], "warps": [{"path": "w", "visit": "1"}]})"), "visit");
}

// The path rule: relative warp paths stay inside the manifest's directory; absolute paths are
// taken as given.
TEST(Manifest, RelativeWarpPathsMayNotEscapeTheManifestDirectory) {
    TempDir dir;
    auto manifestWith = [&](const std::string& warpPath) {
        return write(
            dir.file("run/m.json"),
            patchJson(R"({"name": "a", "box": [0, 0, 1, 1], "warps": [{"path": ")" + warpPath + R"("}]})"));
    };
    expectConfigError(manifestWith("../other/warp.fits"),
                      "patches[0] ('a').warps[0].path '../other/warp.fits' "
                      "escapes the manifest's directory");
    expectConfigError(manifestWith("p000/../../warp.fits"), "escapes");
    expectConfigError(manifestWith(".."), "escapes");
    // Inside after normalisation, and absolute paths anywhere, are fine.
    EXPECT_NO_THROW((void)readManifest(manifestWith("p000/../warp.fits")));
    EXPECT_NO_THROW((void)readManifest(manifestWith((dir.path() / "elsewhere/w.fits").string())));

    // A symbolic link inside the directory that leads out of it.
    write(dir.file("outside/w.fits"), "x");
    fs::create_directory_symlink(dir.path() / "outside", dir.path() / "run" / "link");
    expectConfigError(manifestWith("link/w.fits"), "resolves through a symbolic link to");
    fs::create_symlink(dir.path() / "outside" / "w.fits", dir.path() / "run" / "w-link.fits");
    expectConfigError(manifestWith("w-link.fits"), "outside the manifest's directory");
    // A link that stays inside is fine, and so is a manifest directory reached through a link.
    write(dir.file("run/data/w.fits"), "x");
    fs::create_directory_symlink(dir.path() / "run" / "data", dir.path() / "run" / "inner");
    EXPECT_NO_THROW((void)readManifest(manifestWith("inner/w.fits")));
    fs::create_directory_symlink(dir.path() / "run", dir.path() / "run-link");
    const std::string viaLink = (dir.path() / "run-link" / "m.json").string();
    EXPECT_EQ(fs::path(readManifest(viaLink).patches[0].warps[0].path),
              dir.path() / "run-link" / "inner/w.fits");
}

// A warp entry may give its AB zero point (issue 16 item 6: an afw file whose FLUXMAG0 is 0): read,
// written back, and anything but a number in (0, 100) is a config error naming the entry.
TEST(Manifest, ZeroPointsAreReadWrittenAndChecked) {
    TempDir dir;
    const std::string path = write(dir.file("m/manifest.json"), R"({"patches": [
        {"name": "p", "box": [0, 0, 10, 10],
         "warps": [{"visit": 1, "path": "w1.fits", "zero_point": 27.0}, {"visit": 2, "path": "w2.fits"}]}]})");
    const Manifest m = readManifest(path);
    EXPECT_EQ(m.patches[0].warps[0].zeroPoint, std::optional<double>(27.0));
    EXPECT_EQ(m.patches[0].warps[1].zeroPoint, std::nullopt);
    const std::string copy = dir.file("m/copy.json");
    writeManifest(copy, m);
    EXPECT_EQ(readManifest(copy).patches[0].warps[0].zeroPoint, std::optional<double>(27.0));
    for (const char* bad : {"0", "-1", "100", "\"27\"", "null"}) {
        const std::string f =
            write(dir.file("m/bad.json"),
                  patchJson(std::string(R"({"name": "p", "box": [0, 0, 10, 10], "warps": [)") +
                            R"({"path": "w1.fits", "zero_point": )" + bad + "}]}"));
        expectConfigError(f, "zero_point must be an AB zero point in (0, 100)");
    }
}

TEST(Manifest, PsfMatchedCompanionsAreResolvedWrittenAndChecked) {
    // A warp entry may name its PSF-matched companion (coadd.mode = comparewarp reads it instead of
    // matching the warp): resolved like "path", written back, and a wrong type is a config error.
    TempDir dir;
    const std::string path = write(dir.file("m/manifest.json"), R"({"patches": [
        {"name": "p", "box": [0, 0, 10, 10],
         "warps": [{"visit": 1, "path": "w1.fits", "psf_matched": "psfm-1.fits"},
                   {"visit": 2, "path": "w2.fits"}]}]})");
    const Manifest m = readManifest(path);
    ASSERT_EQ(m.patches[0].warps.size(), 2U);
    EXPECT_EQ(fs::path(m.patches[0].warps[0].psfMatched), dir.path() / "m" / "psfm-1.fits");
    EXPECT_TRUE(m.patches[0].warps[1].psfMatched.empty());
    const std::string copy = dir.file("m/copy.json");
    writeManifest(copy, m);
    EXPECT_EQ(readManifest(copy).patches[0].warps[0].psfMatched, m.patches[0].warps[0].psfMatched);
    const std::string bad = write(dir.file("m/bad.json"), patchJson(R"(
        {"name": "p", "box": [0, 0, 10, 10], "warps": [{"path": "w1.fits", "psf_matched": 3}]})"));
    expectConfigError(bad, "psf_matched must be a non-empty path string");
}
