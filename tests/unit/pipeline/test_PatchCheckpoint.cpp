// Removing a patch's checkpoints (issue 13 item 11): exactly the names this writer produces,
// never a foreign file; empty directories go, non-empty ones stay.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "TempDir.h"
#include "safeclip/pipeline/PatchCheckpoint.h"

using namespace safeclip;
using safeclip::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::set<std::string> tree(const fs::path& root) {
    std::set<std::string> names;
    for (const auto& e : fs::recursive_directory_iterator(root)) {
        names.insert(fs::relative(e.path(), root).string());
    }
    return names;
}

}  // namespace

TEST(PatchCheckpoint, RemovesOnlyItsOwnNames) {
    TempDir dir;
    const std::string ck = dir.file("ck");
    const std::string tiles = pipeline::tileCheckpointDir(ck, "p0");
    fs::create_directories(tiles);
    for (const std::string& name : {std::string("p0.reduced.h5"), std::string("p0.reduced.h5.tmp.123"),
                                    std::string("p0.reduced.h5.bak"), std::string("p0.reduced.h5.tmp.x"),
                                    std::string("p00.reduced.h5"), std::string("notes.txt")}) {
        std::ofstream(ck + "/" + name) << "x";
    }
    const std::string tile = pipeline::tileCheckpointPath(ck, "p0", kernel::Box{-16, 32, 128, 64});
    EXPECT_EQ(fs::path(tile).filename().string(), "tile_-16_32_128x64.h5");
    for (const std::string& name :
         {fs::path(tile).filename().string(), std::string("tile_0_0_16x16.h5.tmp.77"),
          std::string("tile_0_0_16x16.h5.old"), std::string("tile_a_0_16x16.h5"), std::string("keep.me")}) {
        std::ofstream(tiles + "/" + name) << "x";
    }
    pipeline::removeCheckpoints(ck, "p0");
    EXPECT_EQ(tree(ck), (std::set<std::string>{"p0.reduced.h5.bak", "p0.reduced.h5.tmp.x", "p00.reduced.h5",
                                               "notes.txt", "p0.tiles", "p0.tiles/tile_0_0_16x16.h5.old",
                                               "p0.tiles/tile_a_0_16x16.h5", "p0.tiles/keep.me"}));
    pipeline::removeCheckpointDirIfEmpty(ck);
    EXPECT_TRUE(fs::exists(ck));  // not empty

    // Only own names in the tile dir: the dir goes too; an empty checkpoint dir goes at the end.
    fs::remove_all(ck);
    fs::create_directories(tiles);
    std::ofstream(tile) << "x";
    std::ofstream(pipeline::decisionCheckpointPath(ck, "p0")) << "x";
    pipeline::removeCheckpoints(ck, "p0");
    EXPECT_TRUE(tree(ck).empty());
    pipeline::removeCheckpointDirIfEmpty(ck);
    EXPECT_FALSE(fs::exists(ck));
    pipeline::removeCheckpoints(ck, "p0");  // nothing there: no error
    pipeline::removeCheckpointDirIfEmpty("");
}
