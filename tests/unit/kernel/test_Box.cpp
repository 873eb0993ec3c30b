/// @file test_Box.cpp  Unit tests of integer pixel boxes.
#include <gtest/gtest.h>

#include "safeclip/kernel/Box.h"

namespace safeclip::kernel {
namespace {

TEST(Box, BasicAccessors) {
    const Box b{-3, 4, 10, 5};
    EXPECT_EQ(b.x1(), 7);
    EXPECT_EQ(b.y1(), 9);
    EXPECT_EQ(b.area(), 50);
    EXPECT_FALSE(b.empty());
    EXPECT_TRUE(b.contains(-3, 4));
    EXPECT_TRUE(b.contains(6, 8));
    EXPECT_FALSE(b.contains(7, 8));
    EXPECT_FALSE(b.contains(6, 9));
    EXPECT_TRUE(b.contains(Box{0, 5, 7, 4}));
    EXPECT_FALSE(b.contains(Box{0, 5, 8, 4}));
    EXPECT_TRUE(b.contains(Box{100, 100, 0, 0}));  // empty boxes are contained anywhere
    EXPECT_EQ((Box{0, 0, -2, 5}).area(), 0);
    EXPECT_TRUE((Box{0, 0, 3, 0}).empty());
    EXPECT_EQ(b.str(), "[-3:7,4:9)");
}

TEST(Box, Intersect) {
    const Box a{0, 0, 10, 10};
    EXPECT_EQ(a.intersect(Box{5, -2, 10, 4}), (Box{5, 0, 5, 2}));
    EXPECT_EQ(a.intersect(Box{2, 3, 4, 5}), (Box{2, 3, 4, 5}));
    EXPECT_EQ(a.intersect(a), a);
    const Box disjoint = a.intersect(Box{10, 0, 5, 5});  // touching edge only
    EXPECT_TRUE(disjoint.empty());
    EXPECT_EQ(disjoint.width, 0);
    EXPECT_EQ(disjoint.height, 0);
    EXPECT_EQ(disjoint.area(), 0);
    EXPECT_TRUE(a.intersect(Box{-20, -20, 5, 5}).empty());
}

TEST(Box, RowsAreClipped) {
    const Box a{2, 10, 6, 8};  // rows 10..17
    EXPECT_EQ(a.rows(12, 15), (Box{2, 12, 6, 3}));
    EXPECT_EQ(a.rows(5, 12), (Box{2, 10, 6, 2}));
    EXPECT_EQ(a.rows(16, 100), (Box{2, 16, 6, 2}));
    EXPECT_TRUE(a.rows(18, 20).empty());
    EXPECT_TRUE(a.rows(14, 14).empty());
}

TEST(Box, Grown) {
    const Box a{2, 10, 6, 8};
    EXPECT_EQ(a.grown(3), (Box{-1, 7, 12, 14}));
    EXPECT_EQ(a.grown(-2), (Box{4, 12, 2, 4}));
    EXPECT_EQ(a.grown(0), a);
    EXPECT_TRUE(a.grown(-3).empty());
}

}  // namespace
}  // namespace safeclip::kernel
