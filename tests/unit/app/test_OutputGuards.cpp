// Issue 13, items 6 and 8 (app): outputs that are or would replace an input, and the lock on
// output.dir (a second run is refused naming the holder; the shards of one run share it).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "ExpectError.h"
#include "TempDir.h"
#include "safeclip/app/OutputGuards.h"
#include "safeclip/app/Runner.h"
#include "safeclip/kernel/Error.h"

namespace fs = std::filesystem;
using safeclip::OutputError;
using safeclip::app::OutputDirLock;
using safeclip::app::outputReplacingInput;
using safeclip::test::errorMessageOf;
using safeclip::test::TempDir;

TEST(OutputIsInput, SameInodeOrSamePath) {
    TempDir dir;
    const std::string a = dir.write("a.fits", "a");
    const std::string b = dir.write("b.fits", "b");
    EXPECT_EQ(outputReplacingInput({a}, {a, b}), std::make_pair(a, a));
    // Another spelling of the same path, a hard link and a symbolic link are the same file.
    const std::string spelled = (dir.path() / "sub" / ".." / "b.fits").string();
    fs::create_directories(dir.path() / "sub");
    EXPECT_EQ(outputReplacingInput({spelled}, {a, b}).second, b);
    fs::create_hard_link(a, dir.file("hard.fits"));
    EXPECT_EQ(outputReplacingInput({dir.file("hard.fits")}, {a, b}).second, a);
    fs::create_symlink(b, dir.file("sym.fits"));
    EXPECT_EQ(outputReplacingInput({dir.file("sym.fits")}, {a, b}).second, b);
    // An input given through a symbolic link to its directory, output not yet existing: the path.
    fs::create_directory_symlink(dir.path(), dir.file("alias"));
    EXPECT_EQ(outputReplacingInput({dir.file("c.fits")}, {dir.file("alias/c.fits")}).second,
              dir.file("alias/c.fits"));
    // Unrelated files.
    EXPECT_EQ(outputReplacingInput({dir.file("out.fits")}, {a, b}),
              std::make_pair(std::string(), std::string()));
}

TEST(OutputDirLock, SecondHolderIsRefusedNamingTheFirst) {
    TempDir dir;
    const std::string d = dir.path().string();
    {
        const OutputDirLock first(d);
        std::ifstream in(dir.file(".safeclip.lock"));
        std::string host;
        long pid = 0;
        std::string started;
        in >> host >> pid >> started;
        EXPECT_EQ(pid, static_cast<long>(::getpid()));
        EXPECT_EQ(started.size(), 20U) << started;  // 2026-12-04T21:39:24Z
        // flock locks belong to the open file: a second open in this process conflicts as another run.
        const std::string what = errorMessageOf<OutputError>([&] { const OutputDirLock second(d); });
        EXPECT_NE(what.find(d + ": in use by another safeclip run (host " + host + ", pid " +
                            std::to_string(::getpid()) + ", started " + started),
                  std::string::npos)
            << what;
        EXPECT_NE(what.find(".safeclip.lock"), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        // A shard of another run is refused too.
        EXPECT_FALSE(errorMessageOf<OutputError>([&] { const OutputDirLock shard(d, 0, 2); }).empty());
    }
    // Released (and emptied) when the holder ends.
    EXPECT_TRUE(fs::is_regular_file(dir.file(".safeclip.lock")));
    EXPECT_EQ(fs::file_size(dir.file(".safeclip.lock")), 0U);
    EXPECT_NO_THROW(const OutputDirLock again(d));
}

TEST(OutputDirLock, ShardsShareTheDirectoryButNotAShard) {
    TempDir dir;
    const std::string d = dir.path().string();
    const OutputDirLock s0(d, 0, 2);
    const OutputDirLock s1(d, 1, 2);  // the other shard of the same run: fine
    const std::string again = errorMessageOf<OutputError>([&] { const OutputDirLock s0b(d, 0, 2); });
    EXPECT_NE(again.find(".safeclip.shard-0-of-2.lock"), std::string::npos) << again;
    EXPECT_NE(again.find("pid " + std::to_string(::getpid())), std::string::npos) << again;
    const std::string whole = errorMessageOf<OutputError>([&] { const OutputDirLock all(d); });
    EXPECT_NE(whole.find("sharded runs"), std::string::npos) << whole;
}

TEST(OutputDirLock, ShardsOfAnotherSplitAreRefused) {
    // --shard 0/2 and --shard 0/3 in one output.dir would both coadd patch 0 (and 6, ...): while a
    // shard of one split holds its lock, a shard of another split is refused, naming the holder;
    // shards of the same split run side by side, and once the other split ended it can run.
    TempDir dir;
    const std::string d = dir.path().string();
    {
        const OutputDirLock a(d, 0, 2);
        const OutputDirLock b(d, 1, 2);  // the same split: fine
        const std::string what = errorMessageOf<OutputError>([&] { const OutputDirLock c(d, 0, 3); });
        EXPECT_NE(what.find("a shard of another split is running here"), std::string::npos) << what;
        EXPECT_NE(what.find(".safeclip.shard-"), std::string::npos) << what;
        EXPECT_NE(what.find("-of-2.lock"), std::string::npos) << what;
    }
    EXPECT_NO_THROW({ const OutputDirLock c(d, 0, 3); });
}
