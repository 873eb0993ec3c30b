// Tests of io::writeAtomically / io::writeTextAtomically: the published file is complete, failures
// leave the previous file byte for byte and no temporary, and errors name the final path.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>

#include "ExpectError.h"
#include "Files.h"
#include "TempDir.h"
#include "safeclip/io/AtomicFile.h"
#include "safeclip/kernel/Error.h"

namespace fs = std::filesystem;
using safeclip::InputError;
using safeclip::OutputError;
using safeclip::io::temporaryPathFor;
using safeclip::io::writeAtomically;
using safeclip::io::writeTextAtomically;
using safeclip::test::expectErrorNaming;
using safeclip::test::readFile;
using safeclip::test::TempDir;

namespace {

/// An OutputError naming `path` (first), containing `word`, one line, never naming the temporary.
void expectOutputError(const std::function<void()>& fn, const std::string& path, const std::string& word) {
    const std::string what = expectErrorNaming<OutputError>(fn, path, word);
    EXPECT_EQ(what.rfind(path + ": ", 0), 0U) << what;
    EXPECT_EQ(what.find(".tmp."), std::string::npos) << what;
}

}  // namespace

TEST(AtomicFile, TemporaryNameIsPathDotTmpDotPid) {
    EXPECT_EQ(temporaryPathFor("out/a.fits"), "out/a.fits.tmp." + std::to_string(::getpid()));
}

TEST(AtomicFile, TextIsPublishedWithoutTemporary) {
    TempDir dir;
    const std::string path = dir.file("report.json");
    const std::string text = std::string("{\n  \"a\": 1\n}\n") + std::string(1, '\0') + "tail";
    writeTextAtomically(path, text, "the report");
    EXPECT_EQ(readFile(path), text);
    EXPECT_EQ(dir.list(), (std::set<std::string>{"report.json"}));

    // Replacing an existing file, and an empty text.
    writeTextAtomically(path, "", "the report");
    EXPECT_EQ(readFile(path), "");
    EXPECT_TRUE(fs::exists(path));
    EXPECT_EQ(dir.list(), (std::set<std::string>{"report.json"}));
}

TEST(AtomicFile, WriterGetsTheTemporaryAndResultIsPublished) {
    TempDir dir;
    const std::string path = dir.file("image.bin");
    std::string seen;
    writeAtomically(
        path,
        [&](const std::string& tmp) {
            seen = tmp;
            EXPECT_FALSE(fs::exists(path));
            std::ofstream(tmp, std::ios::binary) << "pixels";
        },
        "the image");
    EXPECT_EQ(seen, temporaryPathFor(path));
    EXPECT_EQ(readFile(path), "pixels");
    EXPECT_EQ(dir.list(), (std::set<std::string>{"image.bin"}));
}

TEST(AtomicFile, StaleTemporaryOfThisPidIsReplaced) {
    TempDir dir;
    const std::string path = dir.file("a.json");
    std::ofstream(temporaryPathFor(path)) << "stale content, longer than the new one";
    writeTextAtomically(path, "new", "the file");
    EXPECT_EQ(readFile(path), "new");
    EXPECT_EQ(dir.list(), (std::set<std::string>{"a.json"}));
}

TEST(AtomicFile, ThrowingWriterLeavesOldFileAndNoTemporary) {
    TempDir dir;
    const std::string path = dir.file("coadd.fits");
    writeTextAtomically(path, "the old bytes\n", "the coadd");
    const std::string before = readFile(path);

    // A safeclip::Error that names the temporary is reported under the final name.
    expectOutputError(
        [&] {
            writeAtomically(
                path,
                [](const std::string& tmp) {
                    std::ofstream(tmp) << "half a file";
                    throw OutputError(tmp + ": table T: column b has 1 rows, expected 2");
                },
                "the coadd");
        },
        path, "column b has 1 rows");
    EXPECT_EQ(readFile(path), before);
    EXPECT_EQ(dir.list(), (std::set<std::string>{"coadd.fits"}));

    // Any safeclip::Error becomes an OutputError; a message without the path gets it in front.
    expectOutputError(
        [&] {
            writeAtomically(
                path,
                [](const std::string& tmp) {
                    std::ofstream(tmp) << "x";
                    throw InputError("some input went away");
                },
                "the coadd");
        },
        path, "cannot write the coadd: some input went away");
    EXPECT_EQ(readFile(path), before);
    EXPECT_EQ(dir.list(), (std::set<std::string>{"coadd.fits"}));

    // A std::exception from a library.
    expectOutputError(
        [&] {
            writeAtomically(
                path,
                [](const std::string& tmp) {
                    std::ofstream(tmp) << "x";
                    throw std::runtime_error("library failure on " + tmp);
                },
                "the coadd");
        },
        path, "library failure on " + path);
    EXPECT_EQ(readFile(path), before);
    EXPECT_EQ(dir.list(), (std::set<std::string>{"coadd.fits"}));

    // A writer that writes nothing: nothing to fsync, nothing published.
    expectOutputError(
        [&] {
            writeAtomically(
                path, [](const std::string&) {}, "the coadd");
        },
        path, "cannot write the coadd: cannot open for fsync");
    EXPECT_EQ(readFile(path), before);
    EXPECT_EQ(dir.list(), (std::set<std::string>{"coadd.fits"}));

    // Something that is not an exception class still removes the temporary.
    EXPECT_THROW(writeAtomically(
                     path,
                     [](const std::string& tmp) {
                         std::ofstream(tmp) << "x";
                         throw 42;
                     },
                     "the coadd"),
                 int);
    EXPECT_EQ(readFile(path), before);
    EXPECT_EQ(dir.list(), (std::set<std::string>{"coadd.fits"}));
}

TEST(AtomicFile, UnwritableDirectoryGivesOutputErrorNamingThePath) {
    // A directory in which nobody, not even root, can create files.
    const std::string proc = "/proc/self/safeclip-atomic-test.json";
    expectOutputError([&] { writeTextAtomically(proc, "{}", "the report"); }, proc,
                      "cannot write the report: cannot create the temporary file");

    TempDir dir;
    const fs::path ro = dir.path() / "readonly";
    fs::create_directories(ro);
    const std::string path = (ro / "report.json").string();
    writeTextAtomically(path, "old", "the report");
    ::chmod(ro.c_str(), 0555);
    if (::geteuid() != 0) {  // root may write anyway
        expectOutputError([&] { writeTextAtomically(path, "new", "the report"); }, path,
                          "cannot create the temporary file");
        EXPECT_EQ(readFile(path), "old");
    }
    ::chmod(ro.c_str(), 0755);
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(ro)) {
        names.insert(e.path().filename().string());
    }
    EXPECT_EQ(names, (std::set<std::string>{"report.json"}));
}

TEST(AtomicFile, BadTargetsAreRefusedBeforeWriting) {
    TempDir dir;
    fs::create_directories(dir.path() / "adir");
    const std::string adir = dir.file("adir");
    expectOutputError([&] { writeTextAtomically(adir, "x", "the file"); }, adir,
                      "output path is a directory");

    const std::string missing = dir.file("no-such-dir/a.json");
    expectOutputError([&] { writeTextAtomically(missing, "x", "the file"); }, missing,
                      dir.file("no-such-dir") + " does not exist");

    const std::string file = dir.write("plain", "p");
    const std::string under = dir.file("plain/a.json");
    expectOutputError([&] { writeTextAtomically(under, "x", "the file"); }, under,
                      "plain is not a directory");
    EXPECT_EQ(dir.list(), (std::set<std::string>{"adir", "plain"}));
}

TEST(AtomicFile, ATemporaryOfALiveWriterIsInUseOfAZombieIsNot) {
    // A killed writer whose parent has not reaped it (a zombie; in a container whose PID 1 does not
    // reap orphans it stays one) answers kill(pid, 0) but writes nothing: its temporary is stale and
    // a sweep may remove it. A running writer's is in use.
    const pid_t running = ::fork();
    ASSERT_GE(running, 0);
    if (running == 0) {
        ::pause();
        ::_exit(0);
    }
    const pid_t zombie = ::fork();
    ASSERT_GE(zombie, 0);
    if (zombie == 0) {
        ::_exit(0);
    }
    // Wait until the exited child is a zombie (not yet reaped: no waitpid on it until the end).
    for (int k = 0; k < 200; ++k) {
        std::ifstream stat("/proc/" + std::to_string(zombie) + "/stat");
        std::string line;
        std::getline(stat, line);
        if (line.find(") Z") != std::string::npos) {
            break;
        }
        ::usleep(10000);
    }
    EXPECT_TRUE(safeclip::io::temporaryInUse("out/p.fits.tmp." + std::to_string(running)));
    EXPECT_FALSE(safeclip::io::temporaryInUse("out/p.fits.tmp." + std::to_string(zombie)));
    ::kill(running, SIGKILL);
    ::waitpid(running, nullptr, 0);
    ::waitpid(zombie, nullptr, 0);
}
