#pragma once
/// @file RunReport.h  report.json of `safeclip run` (and of a shard: report.shard-K-of-N.json):
/// format "safeclip-report" version 1 — the run's version, git revision, ranks (seconds, peak RSS,
/// warp bytes read), the effective configuration and its science hash, one segment per run of the
/// output dir (start/end UTC, host, command line, ranks, exit code; kept across --resume), and one
/// entry per patch made by io::rowToJson from pipeline::PatchResult's field description.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "safeclip/app/Config.h"
#include "safeclip/app/Runner.h"
#include "safeclip/pipeline/PatchResult.h"

namespace safeclip::app {

/// One patch's outcome, gathered to rank 0 for the log and report.json.
using PatchOutcome = pipeline::PatchResult;

/// Peak resident set size of this process in bytes (getrusage).
std::int64_t peakRssBytes();

/// report.json, or report.shard-K-of-N.json with --shard K/N.
std::string reportFileName(const RunOptions& opts);

/// A previous report at `path` (a safeclip-report object), or null when there is none or it cannot
/// be parsed (then with a warning: its history is lost).
nlohmann::json readPreviousReport(const std::string& path);

/// The previous report of the output dir, read when first needed.
struct PreviousReport {
    std::string path;
    std::optional<nlohmann::json> json;
    const nlohmann::json& get() {
        if (!json) {
            json = readPreviousReport(path);
        }
        return *json;
    }
};

/// The figures of a patch skipped as finished (--resume), on its group root: from the previous
/// report when it describes this very output, else read back from the output's tables.
PatchOutcome finishedFigures(const PatchOutcome& base, const nlohmann::json& previous,
                             const std::string& reportPath, const std::string& cfgHash);

/// Write <outDir>/<fileName> atomically. With --resume the previous report's segments are kept and
/// this run is appended as one more segment.
void writeReport(const std::string& outDir, const std::string& fileName, std::vector<PatchOutcome> outcomes,
                 const std::vector<std::pair<double, std::pair<std::int64_t, std::int64_t>>>& perRank,
                 double wall, const Config& cfg, const RunOptions& opts, int exitCode);

}  // namespace safeclip::app
