// HDF5 checkpoints: round trips, and every reason a checkpoint must not be used.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

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
    s.mode = "safeclip";
    s.warps.push_back(
        {100, 1.25F, 0.5F, true, "used", 12, 1, "crc32:0000abcd", {{3, 1, 4}, {4, 0, 9}}, 0.0F, 1.0, {}});
    s.warps.push_back({101,
                       0.75F,
                       0.0F,
                       false,
                       "skipped: every image pixel is NaN",
                       0,
                       0,
                       "crc32:ffff0000",
                       {},
                       0.0F,
                       1.0,
                       {}});
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
    EXPECT_EQ(s.mode, "safeclip");
    EXPECT_TRUE(s.cwRows.empty());
    EXPECT_TRUE(s.cwEdge.empty());
}

// The comparewarp mode's state (issue 15 item 7): template weights, variance factors, whole-patch
// NO_DATA spans, σ_m, the kernel radius, the mean approximate nImage, FOOTPRINTS rows, EDGE spans.
TEST(Checkpoint, CompareWarpStateRoundTrips) {
    TempDir dir;
    const std::string path = dir.file("cw.reduced.h5");
    io::PatchState e = state();
    e.mode = "comparewarp";
    e.decisions = {};
    e.psfSigma = 2.8;
    e.psfSource = "comparewarp model PSF sigma";
    e.cwMaxRadius = 7;
    e.cwMeanNImage = 7.375;
    e.warps[0].templateWeight = 0.8125F;
    e.warps[0].varianceFactor = 1.0625;
    e.warps[0].noData = {{-2, 5, 9}, {0, -3, 4}};
    e.warps[1].noData = {{11, 0, 0}};
    e.cwEdge = {{1, 2, 3}, {2, 2, 3}};
    kernel::CompareWarpRow a;
    a.id = 0;
    a.visit = 100;
    a.x0 = -1;
    a.y0 = 2;
    a.x1 = 30;
    a.y1 = 40;
    a.area = 77;
    a.nGood = 70;
    a.meanNImage = 7.25;
    a.maxEpochs = 2;
    a.epochFraction = 0.875;
    a.rule = "artefact";
    kernel::CompareWarpRow b = a;
    b.id = 1;
    b.rule = "kept: contained by source";
    e.cwRows = {a, b};
    io::writePatchCheckpoint(path, key(), e);
    const io::CheckpointRead r = io::readPatchCheckpoint(path, key());
    ASSERT_EQ(r.status, io::CheckpointStatus::Ok) << r.reason;
    const io::PatchState& s = r.state;
    EXPECT_EQ(s.mode, "comparewarp");
    EXPECT_EQ(s.psfSigma, 2.8);
    EXPECT_EQ(s.cwMaxRadius, 7);
    EXPECT_EQ(s.cwMeanNImage, 7.375);
    ASSERT_EQ(s.warps.size(), 2U);
    EXPECT_EQ(s.warps[0].templateWeight, 0.8125F);
    EXPECT_EQ(s.warps[0].varianceFactor, 1.0625);
    EXPECT_EQ(s.warps[1].varianceFactor, 1.0);
    EXPECT_EQ(s.warps[0].noData, e.warps[0].noData);
    EXPECT_EQ(s.warps[1].noData, e.warps[1].noData);
    EXPECT_EQ(s.warps[0].clipped, e.warps[0].clipped);
    EXPECT_EQ(s.cwEdge, e.cwEdge);
    EXPECT_EQ(s.cwRows, e.cwRows);  // every field of every row, the rule strings included
}

// A checkpoint of another format version (2: no comparewarp state) is Invalid with the reason, so
// the stage is recomputed, as for a damaged file.
TEST(Checkpoint, AnotherFormatVersionIsInvalid) {
    TempDir dir;
    const std::string path = dir.file("p.reduced.h5");
    io::writePatchCheckpoint(path, key(), state());
    std::string bytes;
    {
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    const std::string now = "SAFECLIP-CHECKPOINT " + std::to_string(io::kCheckpointFormatVersion) + "\n";
    ASSERT_EQ(bytes.compare(0, now.size(), now), 0);
    bytes.replace(0, now.size(), "SAFECLIP-CHECKPOINT 2\n");  // the CRC covers bytes 512 on: still whole
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    const io::CheckpointRead r = io::readPatchCheckpoint(path, key());
    EXPECT_EQ(r.status, io::CheckpointStatus::Invalid);
    EXPECT_NE(r.reason.find("unsupported checkpoint format version 2"), std::string::npos) << r.reason;
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

    // A plain HDF5 file (format version 1 had no integrity header): reported, never parsed.
    const std::string partial = dir.file("partial.h5");
    const hid_t f = H5Fcreate(partial.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    H5Fclose(f);
    const io::CheckpointRead r = io::readPatchCheckpoint(partial, key());
    EXPECT_EQ(r.status, io::CheckpointStatus::Invalid);
    EXPECT_NE(r.reason.find("format version 1"), std::string::npos) << r.reason;
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

namespace {

std::string readAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void writeAll(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

// Issue 13 items 1 and 2: every damage (a bit flip anywhere, a zeroed block, truncation, appended
// bytes) is caught by the integrity header before HDF5 parses a byte; a special file is refused
// without blocking.
TEST(Checkpoint, EveryCorruptionIsCaughtBeforeParsing) {
    TempDir dir;
    const std::string good = dir.file("good.h5");
    io::writePatchCheckpoint(good, key(), state());
    const std::string bytes = readAll(good);
    ASSERT_GT(bytes.size(), 4096U + 1024U);
    EXPECT_EQ(
        bytes.compare(0, 22, "SAFECLIP-CHECKPOINT " + std::to_string(io::kCheckpointFormatVersion) + "\n"),
        0);
    const std::string bad = dir.file("bad.h5");
    auto expectInvalid = [&](const std::string& damaged, const std::string& what, const char* reason) {
        writeAll(bad, damaged);
        const io::CheckpointRead r = io::readPatchCheckpoint(bad, key());
        EXPECT_EQ(r.status, io::CheckpointStatus::Invalid) << what;
        EXPECT_EQ(r.reason.rfind(bad + ": ", 0), 0U) << what << ": " << r.reason;
        if (reason != nullptr) {
            EXPECT_NE(r.reason.find(reason), std::string::npos) << what << ": " << r.reason;
        }
    };
    // One flipped bit at every 13th byte, header and padding included (fixed offsets).
    for (std::size_t at = 0; at < bytes.size(); at += 13) {
        std::string d = bytes;
        d[at] = static_cast<char>(d[at] ^ (1 << (at % 8)));
        expectInvalid(d, "bit flip at " + std::to_string(at), nullptr);
    }
    std::string zeroed = bytes;
    std::fill(zeroed.begin() + 1024, zeroed.begin() + 1024 + 4096, '\0');
    expectInvalid(zeroed, "zeroed 4 KiB block", "checksum mismatch");
    for (const std::size_t keep :
         {bytes.size() * 9 / 10, bytes.size() - 1, std::size_t{600}, std::size_t{100}}) {
        expectInvalid(bytes.substr(0, keep), "truncated to " + std::to_string(keep), "truncated");
    }
    expectInvalid(bytes + "garbage appended", "appended", "appended");
    // The undamaged bytes still read.
    writeAll(bad, bytes);
    EXPECT_EQ(io::readPatchCheckpoint(bad, key()).status, io::CheckpointStatus::Ok);

    // A FIFO (nobody writing) or a directory under the checkpoint's name: refused, no blocking.
    const std::string fifo = dir.file("fifo.h5");
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const io::CheckpointRead rf = io::readPatchCheckpoint(fifo, key());
    EXPECT_EQ(rf.status, io::CheckpointStatus::Invalid);
    EXPECT_NE(rf.reason.find("not a regular file"), std::string::npos) << rf.reason;
    std::filesystem::create_directory(dir.file("dir.h5"));
    EXPECT_EQ(io::readPatchCheckpoint(dir.file("dir.h5"), key()).status, io::CheckpointStatus::Invalid);
}

// Strings are fixed-length (no global heap for a damaged file to send HDF5 around in).
TEST(Checkpoint, StringsAreFixedLength) {
    TempDir dir;
    const std::string path = dir.file("p.h5");
    io::writePatchCheckpoint(path, key(), state());
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);  // finds the superblock at 512
    ASSERT_GE(f, 0);
    for (const char* name :
         {"warp_status", "warp_checksum", "inputs", "fp_rule", "fp_reason", "fp_clipped", "cw_rule"}) {
        const hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
        ASSERT_GE(ds, 0) << name;
        const hid_t t = H5Dget_type(ds);
        EXPECT_EQ(H5Tget_class(t), H5T_STRING) << name;
        EXPECT_EQ(H5Tis_variable_str(t), 0) << name;
        H5Tclose(t);
        H5Dclose(ds);
    }
    H5Fclose(f);
}

// Issue 13 item 9: a rejected tile checkpoint leaves the outputs as they were and says why.
TEST(Checkpoint, RejectedTileLeavesOutputsUntouched) {
    TempDir dir;
    const kernel::Box box{0, 0, 16, 8};
    kernel::MaskedImage mi(box);
    kernel::ImageU16 n(box, 3);
    const std::string path = dir.file("tile.h5");
    io::writeTileCheckpoint(path, key(), mi, n, {5, 0, 7});
    std::string bytes = readAll(path);
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x40);
    writeAll(path, bytes);
    kernel::MaskedImage back;
    kernel::ImageU16 backN;
    std::vector<std::int64_t> used{1, 2};
    std::string why;
    EXPECT_FALSE(io::readTileCheckpoint(path, key(), box, back, backN, used, &why));
    EXPECT_NE(why.find(path), std::string::npos) << why;
    EXPECT_EQ(used, (std::vector<std::int64_t>{1, 2}));
    EXPECT_TRUE(back.image.data().empty());
    EXPECT_TRUE(backN.data().empty());
    // A count that cannot be (more used pixels than the tile has): refused, nothing filled.
    io::writeTileCheckpoint(path, key(), mi, n, {box.area() + 1});
    why.clear();
    EXPECT_FALSE(io::readTileCheckpoint(path, key(), box, back, backN, used, &why));
    EXPECT_NE(why.find("used pixels"), std::string::npos) << why;
    EXPECT_EQ(used, (std::vector<std::int64_t>{1, 2}));
    // A missing tile is not a problem worth a warning: no reason.
    why = "x";
    EXPECT_FALSE(io::readTileCheckpoint(dir.file("none.h5"), key(), box, back, backN, used, &why));
    EXPECT_TRUE(why.empty()) << why;
}

// Issue 13 item 3: a write that fails (here RLIMIT_FSIZE -> EFBIG, as ENOSPC on a full disk) is an
// OutputError (exit 4) naming the file and the system's reason; no temporary is left, HDF5 holds
// no open file.
TEST(Checkpoint, FailedWriteNamesTheFileAndTheReason) {
    TempDir dir;
    const std::string path = dir.file("p.reduced.h5");
    rlimit old{};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
    const auto oldHandler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit small = old;
    small.rlim_cur = 2048;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    std::string message;
    int code = 0;
    try {
        io::writePatchCheckpoint(path, key(), state());
    } catch (const Error& e) {
        message = e.what();
        code = static_cast<int>(e.code());
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, oldHandler);
    EXPECT_EQ(code, 4) << message;
    EXPECT_EQ(message.rfind(path + ": ", 0), 0U) << message;
    EXPECT_NE(message.find(std::strerror(EFBIG)), std::string::npos) << message;
    EXPECT_EQ(message.find(".tmp."), std::string::npos) << message;
    EXPECT_TRUE(dir.list().empty());
    EXPECT_EQ(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_FILE), 0);
    // And the next write, with room, works.
    io::writePatchCheckpoint(path, key(), state());
    EXPECT_EQ(io::readPatchCheckpoint(path, key()).status, io::CheckpointStatus::Ok);
}
