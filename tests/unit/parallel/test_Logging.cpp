/// @file test_Logging.cpp  initLogging: levels per rank, unknown levels.
#include <gtest/gtest.h>

#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Logging.h"

using safeclip::ConfigError;
using safeclip::parallel::initLogging;
using safeclip::parallel::log;

TEST(Logging, LevelsPerRank) {
    EXPECT_EQ(log().name(), "safeclip");  // usable before initLogging
    initLogging(0, "info");
    EXPECT_EQ(log().level(), spdlog::level::info);
    initLogging(3, "info");  // other ranks: warn and above
    EXPECT_EQ(log().level(), spdlog::level::warn);
    initLogging(3, "debug");
    EXPECT_EQ(log().level(), spdlog::level::debug);
    initLogging(2, "error");
    EXPECT_EQ(log().level(), spdlog::level::err);
    initLogging(0, "off");
    EXPECT_EQ(log().level(), spdlog::level::off);
    initLogging(0, "trace");
    EXPECT_EQ(log().level(), spdlog::level::trace);
    EXPECT_EQ(spdlog::get("safeclip").get(), &log());
    initLogging(0, "warn");
}

TEST(Logging, UnknownLevelIsAConfigError) {
    EXPECT_THROW(initLogging(0, "verbose"), ConfigError);
    EXPECT_THROW(initLogging(0, ""), ConfigError);
}
