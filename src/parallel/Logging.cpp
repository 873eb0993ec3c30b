/// @file Logging.cpp  The "safeclip" spdlog logger: stderr, no colours, one line per event tagged
/// with the MPI rank.
#include "safeclip/parallel/Logging.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>
#include <vector>

#include "safeclip/kernel/Error.h"

namespace safeclip::parallel {

namespace {

std::mutex g_mutex;
std::shared_ptr<spdlog::logger> g_logger;
/// Loggers replaced by a later initLogging are kept alive: callers may still hold a reference.
std::vector<std::shared_ptr<spdlog::logger>> g_retired;

spdlog::level::level_enum parseLevel(const std::string& level) {
    if (level == "trace") {
        return spdlog::level::trace;
    }
    if (level == "debug") {
        return spdlog::level::debug;
    }
    if (level == "info") {
        return spdlog::level::info;
    }
    if (level == "warn" || level == "warning") {
        return spdlog::level::warn;
    }
    if (level == "error") {
        return spdlog::level::err;
    }
    if (level == "off") {
        return spdlog::level::off;
    }
    throw ConfigError("log.level: unknown level '" + level + "' (expected trace|debug|info|warn|error|off)");
}

std::shared_ptr<spdlog::logger> makeLogger(int rank, spdlog::level::level_enum level) {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::logger>("safeclip", std::move(sink));
    logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [r" + std::to_string(rank) + "] [%l] %v");
    // Ranks other than 0 are quiet below warn unless debugging.
    if (rank != 0 && level > spdlog::level::debug && level < spdlog::level::warn) {
        level = spdlog::level::warn;
    }
    logger->set_level(level);
    logger->flush_on(spdlog::level::warn);
    return logger;
}

}  // namespace

void initLogging(int rank, const std::string& level) {
    const auto lvl = parseLevel(level);
    auto logger = makeLogger(rank, lvl);
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_logger) {
        g_logger->flush();
        g_retired.push_back(g_logger);
    }
    g_logger = logger;
    spdlog::drop("safeclip");
    spdlog::register_logger(logger);
}

spdlog::logger& log() {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_logger) {
        g_logger = makeLogger(0, spdlog::level::info);
        spdlog::drop("safeclip");
        spdlog::register_logger(g_logger);
    }
    return *g_logger;
}

}  // namespace safeclip::parallel
