// HDF5 checkpoints: round trips, and every reason a checkpoint must not be used.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "TempDir.h"
#include "safeclip/io/Checkpoint.h"
#include "safeclip/kernel/Error.h"

using namespace safeclip;
using safeclip::test::TempDir;

namespace {

io::CheckpointKey key() {
    io::CheckpointKey k;
    k.configHash = "00112233aabbccdd";
    k.inputs = {"a.fits|100|1", "b.fits|200|2"};
    k.inputHash = io::hashStrings(k.inputs);
    return k;
}

io::PatchState state() {
    io::PatchState s;
    s.stage = "reduced";
    s.warps.push_back({100, 1.25F, 0.5F, true, "used", 12, 1, "crc32:0000abcd", {{3, 1, 4}, {4, 0, 9}}});
    s.warps.push_back(
        {101, 0.75F, 0.0F, false, "skipped: every image pixel is NaN", 0, 0, "crc32:ffff0000", {}});
    s.nFootprints = 2;
    s.nClippedFootprints = 1;
    s.psfSigma = 1.7;
    s.psfSource = "config";
    s.decisions.footprints = {{0, 1, 2, 3, 4, 9, "single", "1 of 2 candidates above 0.6", "100"},
                              {1, 5, 6, 7, 8, 10, "kept", "no candidates", ""}};
    s.decisions.candidates = {{0, 100, 8, 1, 8.0 / 8.0, 1}};
    return s;
}

}  // namespace

TEST(Checkpoint, PatchStateRoundTrips) {
    TempDir dir;
    const std::string path = dir.file("p.reduced.h5");
    io::writePatchCheckpoint(path, key(), state());
    EXPECT_EQ(dir.list(), std::set<std::string>{"p.reduced.h5"});  // no temporary left
    const io::CheckpointRead r = io::readPatchCheckpoint(path, key());
    ASSERT_EQ(r.status, io::CheckpointStatus::Ok) << r.reason;
    const io::PatchState& s = r.state;
    const io::PatchState e = state();
    ASSERT_EQ(s.warps.size(), 2U);
    EXPECT_EQ(s.warps[0].visit, 100);
    EXPECT_EQ(s.warps[0].scale, 1.25F);
    EXPECT_EQ(s.warps[0].weight, 0.5F);
    EXPECT_TRUE(s.warps[0].used);
    EXPECT_FALSE(s.warps[1].used);
    EXPECT_EQ(s.warps[1].status, e.warps[1].status);
    EXPECT_EQ(s.warps[0].checksum, "crc32:0000abcd");
    EXPECT_EQ(s.warps[0].clipped, e.warps[0].clipped);
    EXPECT_TRUE(s.warps[1].clipped.empty());
    EXPECT_EQ(s.nFootprints, 2);
    EXPECT_EQ(s.nClippedFootprints, 1);
    EXPECT_EQ(s.psfSigma, 1.7);
    EXPECT_EQ(s.psfSource, "config");
    EXPECT_EQ(s.decisions.footprints, e.decisions.footprints);  // every field of every row
    EXPECT_EQ(s.decisions.candidates, e.decisions.candidates);
}

TEST(Checkpoint, TileRoundTripsBitForBit) {
    TempDir dir;
    const kernel::Box box{-3, 7, 33, 17};
    kernel::MaskedImage mi(box);
    kernel::ImageU16 n(box);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            mi.image(x, y) = (x + y) % 11 == 0 ? std::nanf("") : 0.37F * static_cast<float>(x * y);
            mi.variance(x, y) = (x * y) % 13 == 0 ? INFINITY : 1.0F + static_cast<float>(x);
            mi.mask(x, y) = (x ^ y) & 0x7fff;
            n(x, y) = static_cast<std::uint16_t>((x + 100) % 7);
        }
    }
    const std::string path = dir.file("tile.h5");
    io::writeTileCheckpoint(path, key(), mi, n, {5, 0, 7});
    kernel::MaskedImage back;
    kernel::ImageU16 backN;
    std::vector<std::int64_t> used;
    ASSERT_TRUE(io::readTileCheckpoint(path, key(), box, back, backN, used));
    EXPECT_EQ(0, std::memcmp(back.image.data().data(), mi.image.data().data(), 4 * mi.image.data().size()));
    EXPECT_EQ(
        0, std::memcmp(back.variance.data().data(), mi.variance.data().data(), 4 * mi.image.data().size()));
    EXPECT_EQ(back.mask.data(), mi.mask.data());
    EXPECT_EQ(backN.data(), n.data());
    EXPECT_EQ(used, (std::vector<std::int64_t>{5, 0, 7}));
    // Another box (another tiling) is not this tile.
    EXPECT_FALSE(io::readTileCheckpoint(path, key(), kernel::Box{-3, 7, 32, 17}, back, backN, used));
}

TEST(Checkpoint, MissingTruncatedGarbageAndIncompleteAreNotUsed) {
    TempDir dir;
    EXPECT_EQ(io::readPatchCheckpoint(dir.file("none.h5"), key()).status, io::CheckpointStatus::Missing);

    const std::string good = dir.file("good.h5");
    io::writePatchCheckpoint(good, key(), state());
    const auto size = std::filesystem::file_size(good);
    for (const std::uintmax_t cut : {size / 2, std::uintmax_t{100}, std::uintmax_t{0}}) {
        const std::string torn = dir.file("torn.h5");
        std::filesystem::copy_file(good, torn, std::filesystem::copy_options::overwrite_existing);
        std::filesystem::resize_file(torn, cut);
        const io::CheckpointRead r = io::readPatchCheckpoint(torn, key());
        EXPECT_EQ(r.status, io::CheckpointStatus::Invalid) << "cut at " << cut;
        EXPECT_NE(r.reason.find(torn), std::string::npos) << r.reason;
    }
    std::ofstream(dir.file("text.h5")) << "not hdf5\n";
    EXPECT_EQ(io::readPatchCheckpoint(dir.file("text.h5"), key()).status, io::CheckpointStatus::Invalid);

    // A file whose writer died before the last attribute: no complete = 1.
    const std::string partial = dir.file("partial.h5");
    const hid_t f = H5Fcreate(partial.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    H5Fclose(f);
    const io::CheckpointRead r = io::readPatchCheckpoint(partial, key());
    EXPECT_EQ(r.status, io::CheckpointStatus::Invalid);
    EXPECT_NE(r.reason.find("incomplete"), std::string::npos) << r.reason;
}

TEST(Checkpoint, AnotherConfigOrInputListIsRefusedWithWhatChanged) {
    TempDir dir;
    const std::string path = dir.file("p.h5");
    io::writePatchCheckpoint(path, key(), state());

    io::CheckpointKey otherConfig = key();
    otherConfig.configHash = "ffffffffffffffff";
    io::CheckpointRead r = io::readPatchCheckpoint(path, otherConfig);
    EXPECT_EQ(r.status, io::CheckpointStatus::ConfigChanged);
    EXPECT_NE(r.reason.find("00112233aabbccdd"), std::string::npos) << r.reason;

    io::CheckpointKey otherInput = key();
    otherInput.inputs[1] = "b.fits|200|3";
    otherInput.inputHash = io::hashStrings(otherInput.inputs);
    r = io::readPatchCheckpoint(path, otherInput);
    EXPECT_EQ(r.status, io::CheckpointStatus::InputChanged);
    EXPECT_NE(r.reason.find("b.fits|200|2"), std::string::npos) << r.reason;
    EXPECT_NE(r.reason.find("b.fits|200|3"), std::string::npos) << r.reason;
}

TEST(Checkpoint, FingerprintAndChecksum) {
    TempDir dir;
    const std::string p = dir.write("x.bin", "123456789");
    EXPECT_EQ(io::fileChecksum(p), "crc32:cbf43926");  // the standard CRC-32 check value
    EXPECT_NE(io::fileFingerprint(p).find("|9|"), std::string::npos);
    EXPECT_NE(io::fileFingerprint(dir.file("nope")).find("missing"), std::string::npos);
    EXPECT_THROW(io::fileChecksum(dir.file("nope")), InputError);
    EXPECT_NE(io::hashStrings({"a", "b"}), io::hashStrings({"ab"}));
}
