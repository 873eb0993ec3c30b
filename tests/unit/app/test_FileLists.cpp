// `@LIST` and `--files-from LIST` (issue 16 item 4): app::expandFileLists.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../../support/ExpectError.h"
#include "../../support/TempDir.h"
#include "safeclip/app/FileLists.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::app {
namespace {

using Paths = std::vector<std::string>;

TEST(FileLists, AtListIsReplacedInPlaceSkippingBlanksAndComments) {
    const test::TempDir dir;
    const std::string list =
        dir.write("warps.txt", "# night 1\n  a.fits  \n\n\tb dir/c.fits\r\n#x.fits\n@d.fits\n");
    EXPECT_EQ(expandFileLists({"first.fits", "@" + list, "last.fits"}, ""),
              (Paths{"first.fits", "a.fits", "b dir/c.fits", "@d.fits", "last.fits"}));
}

TEST(FileLists, FilesFromIsAppendedAndPlainArgumentsStayAsTheyAre) {
    const test::TempDir dir;
    const std::string list = dir.write("more.txt", "x.fits\ny.fits\n");
    EXPECT_EQ(expandFileLists({"a.fits", "./@odd.fits", "@"}, list),
              (Paths{"a.fits", "./@odd.fits", "@", "x.fits", "y.fits"}));
    EXPECT_EQ(expandFileLists({}, list), (Paths{"x.fits", "y.fits"}));
}

TEST(FileLists, UnreadableEmptyAndMissingListsAreConfigErrorsNamingTheList) {
    const test::TempDir dir;
    const std::string missing = dir.file("nope.txt");
    test::expectErrorNaming<ConfigError>([&] { (void)expandFileLists({"@" + missing}, ""); }, missing,
                                         "cannot read");
    const std::string empty = dir.write("empty.txt", "# only a comment\n\n");
    test::expectErrorNaming<ConfigError>([&] { (void)expandFileLists({}, empty); }, empty, "holds no path");
    const std::string what = test::errorMessageOf<ConfigError>([&] { (void)expandFileLists({}, ""); });
    EXPECT_NE(what.find("no input files"), std::string::npos) << what;
}

}  // namespace
}  // namespace safeclip::app
