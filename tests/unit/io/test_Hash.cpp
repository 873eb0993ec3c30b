// The one content hash (FNV-1a 64): its values key old checkpoints and the SCCFGHSH card, so they
// are pinned here.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "safeclip/io/Checkpoint.h"
#include "safeclip/io/Hash.h"

using safeclip::io::fnv1a64Hex;
using safeclip::io::hashStrings;

TEST(Hash, Fnv1a64KnownValues) {
    EXPECT_EQ(fnv1a64Hex(""), "cbf29ce484222325");  // the offset basis
    EXPECT_EQ(fnv1a64Hex("a"), "af63dc4c8601ec8c");
    EXPECT_EQ(fnv1a64Hex("foobar"), "85944171f73967e8");
}

TEST(Hash, LinesAreEachFollowedByNewline) {
    EXPECT_EQ(hashStrings({}), fnv1a64Hex(""));
    EXPECT_EQ(hashStrings({"a", "b"}), fnv1a64Hex("a\nb\n"));
    EXPECT_EQ(hashStrings({""}), fnv1a64Hex("\n"));
    EXPECT_NE(hashStrings({"a", "b"}), hashStrings({"ab"}));
    const std::string h = hashStrings({"stack.sigma_clip = 1.5", "detect.threshold = 5"});
    EXPECT_EQ(h.size(), 16U);
    EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos);
}
