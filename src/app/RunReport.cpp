/// @file RunReport.cpp  report.json of `safeclip run`: the patches' outcomes (from
/// pipeline::PatchResult's field description), each rank's figures, and the run's segments.
#include "safeclip/app/RunReport.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "safeclip/Version.h"
#include "safeclip/app/Logging.h"
#include "safeclip/app/PatchCoadd.h"
#include "safeclip/io/AtomicFile.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/io/RowFormats.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::app {

namespace fs = std::filesystem;

namespace {

/// "YYYY-MM-DDTHH:MM:SSZ" of a system-clock time.
std::string utcText(std::chrono::system_clock::time_point t) {
    const std::time_t tt = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/// This process's command line (/proc/self/cmdline), one string per argument.
std::vector<std::string> commandLine() {
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::vector<std::string> args;
    std::string arg;
    while (std::getline(in, arg, '\0')) {
        args.push_back(arg);
    }
    return args;
}

std::string hostName() {
    char buf[256] = {};
    return ::gethostname(buf, sizeof buf - 1) == 0 ? std::string(buf) : std::string("unknown");
}

/// Fills the fields of `row` that `j` has, by the row's field description (the inverse of
/// io::rowToJson; "a.b" is key b of object a). Fields missing or of another type keep their value.
template <class Row>
void rowFromJson(const nlohmann::json& j, Row& row) {
    Row::fields(row, [&j](const kernel::FieldName& n, auto& member) {
        const std::string key = n.column;
        const auto dot = key.find('.');
        const nlohmann::json* v = nullptr;
        if (dot == std::string::npos) {
            v = j.contains(key) ? &j.at(key) : nullptr;
        } else if (j.contains(key.substr(0, dot)) && j.at(key.substr(0, dot)).is_object() &&
                   j.at(key.substr(0, dot)).contains(key.substr(dot + 1))) {
            v = &j.at(key.substr(0, dot)).at(key.substr(dot + 1));
        }
        if (v == nullptr || v->is_null()) {
            return;
        }
        try {
            member = v->get<std::decay_t<decltype(member)>>();
        } catch (const nlohmann::json::exception&) {
        }
    });
}

}  // namespace

/// Peak resident set size of this process in bytes (getrusage).
std::int64_t peakRssBytes() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<std::int64_t>(ru.ru_maxrss) * 1024;
}

/// The report file of this run: report.json, or report.shard-K-of-N.json with --shard K/N.
std::string reportFileName(const RunOptions& opts) {
    return opts.shardCount > 1 ? "report.shard-" + std::to_string(opts.shardIndex) + "-of-" +
                                     std::to_string(opts.shardCount) + ".json"
                               : std::string("report.json");
}

/// A previous report at `path` (a safeclip-report object), or null when there is none or it cannot
/// be parsed (then with a warning: its history is lost).
nlohmann::json readPreviousReport(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        return nullptr;
    }
    try {
        nlohmann::json j = nlohmann::json::parse(in);
        if (j.is_object() && j.value("format", "") == "safeclip-report") {
            return j;
        }
    } catch (const nlohmann::json::exception&) {
    }
    log().warn("{}: the previous report is not a readable safeclip report; its history is not kept", path);
    return nullptr;
}

/// The figures of a patch skipped as finished (--resume), on its group root: copied from the
/// previous report when it describes this very output (same science configuration and output file
/// name -- the report lives beside it, so the directory may have moved -- and the report written
/// after the output), else read from the output's INPUTS and FOOTPRINTS tables.
PatchOutcome finishedFigures(const PatchOutcome& base, const nlohmann::json& previous,
                             const std::string& reportPath, const std::string& cfgHash) {
    std::error_code ec;
    const auto outTime = fs::last_write_time(base.outputPath, ec);
    const auto reportTime = fs::last_write_time(reportPath, ec);
    if (!ec && previous.is_object() && previous.value("science_config_hash", "") == cfgHash &&
        reportTime >= outTime && previous.contains("patches") && previous.at("patches").is_array()) {
        for (const nlohmann::json& e : previous.at("patches")) {
            if (!e.is_object() || e.value("name", "") != base.name ||
                fs::path(e.value("output", "")).filename() != fs::path(base.outputPath).filename() ||
                e.value("figures_from", "").empty()) {
                continue;
            }
            PatchOutcome o = base;
            rowFromJson(e, o);
            o.index = base.index;
            o.rank = base.rank;
            o.status = "skipped";
            o.error.clear();
            o.figuresFrom = "report";
            return o;
        }
    }
    PatchOutcome o = base;
    o.figuresFrom = "output";
    try {
        const io::Table inputs = io::readTable(base.outputPath, "INPUTS");
        const auto* status = io::column<std::string>(inputs, "status");
        const auto* clipped = io::column<std::int64_t>(inputs, "n_clipped_pixels");
        const auto* big = io::column<std::int64_t>(inputs, "n_big_footprints");
        const auto* file = io::column<std::string>(inputs, "file");
        o.nWarps = status != nullptr ? static_cast<int>(status->size()) : o.nWarps;
        for (std::size_t i = 0; status != nullptr && i < status->size(); ++i) {
            if ((*status)[i] == "used") {
                ++o.nUsed;
                o.nClippedWarpPixels += clipped != nullptr ? (*clipped)[i] : 0;
                o.nBigFootprints += big != nullptr ? (*big)[i] : 0;
            } else if (file != nullptr && i < file->size()) {
                o.skippedWarps.push_back((*file)[i] + ": " + (*status)[i]);
            }
        }
        io::FitsFile f(base.outputPath, io::FitsFile::Mode::Read);
        if (f.findExtension("FOOTPRINTS")) {
            const io::Table fp = io::readTable(base.outputPath, "FOOTPRINTS");
            const auto* rule = io::column<std::string>(fp, "rule");
            const auto* visits = io::column<std::string>(fp, "clipped_visits");
            for (std::size_t i = 0; rule != nullptr && i < rule->size(); ++i) {
                ++o.nFootprints;
                o.nClippedFootprints += visits != nullptr && !(*visits)[i].empty() ? 1 : 0;
                o.nSingle += (*rule)[i] == "single" ? 1 : 0;
                o.nSingleOnly += (*rule)[i] == "single-only-candidate" ? 1 : 0;
                o.nDouble += (*rule)[i] == "double" ? 1 : 0;
            }
        }
    } catch (const Error& e) {
        log().warn("patch {}: cannot read its figures back: {}", base.name, e.what());
    }
    return o;
}

/// Write <outDir>/<fileName> atomically (io::writeTextAtomically). With --resume the previous report's
/// `segments` are kept and this run is appended as one more segment.
void writeReport(const std::string& outDir, const std::string& fileName, std::vector<PatchOutcome> outcomes,
                 const std::vector<std::pair<double, std::pair<std::int64_t, std::int64_t>>>& perRank,
                 double wall, const Config& cfg, const RunOptions& opts, int exitCode) {
    const std::string path = (fs::path(outDir) / fileName).string();
    nlohmann::json segments = nlohmann::json::array();
    if (opts.resume) {
        const nlohmann::json previous = readPreviousReport(path);
        if (previous.is_object() && previous.contains("segments") && previous.at("segments").is_array()) {
            segments = previous.at("segments");
        }
    }
    const auto index = static_cast<std::int64_t>(segments.size());
    const auto end = std::chrono::system_clock::now();
    const auto start =
        end - std::chrono::duration_cast<std::chrono::system_clock::duration>(
                  std::chrono::duration<double>(perRank.empty() ? wall : perRank.front().first));
    segments.push_back({{"segment", index},
                        {"start_utc", utcText(start)},
                        {"end_utc", utcText(end)},
                        {"host", hostName()},
                        {"command_line", commandLine()},
                        {"ranks", perRank.size()},
                        {"exit_code", exitCode}});
    nlohmann::json j;
    j["format"] = "safeclip-report";
    j["version"] = 1;
    j["safeclip_version"] = kVersion;
    j["git_revision"] = kGitRevision;
    j["rank_count"] = perRank.size();
    j["config"] = cfg.dump();  // the effective configuration, execution keys included
    j["science_config_hash"] = scienceConfigHash(cfg);
    j["wall_seconds"] = wall;
    auto& ranks = j["ranks"];
    ranks = nlohmann::json::array();
    for (std::size_t r = 0; r < perRank.size(); ++r) {
        ranks.push_back({{"rank", r},
                         {"seconds", perRank[r].first},
                         {"peak_rss_bytes", perRank[r].second.first},
                         {"warp_bytes_read", perRank[r].second.second}});
    }
    j["segments"] = segments;
    auto& arr = j["patches"];
    arr = nlohmann::json::array();
    for (auto& o : outcomes) {
        if (o.status != "skipped") {  // coadded (or failed) by this segment
            o.figuresFrom = o.status == "done" ? "run" : "";
            o.segment = index;
        }
        nlohmann::json entry = io::rowToJson(o);
        entry.erase("index");  // the manifest order is the order of the list
        arr.push_back(std::move(entry));
    }
    // replace: a command line or name that is not UTF-8 must not lose the report
    io::writeTextAtomically(path, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                            "the run report");
}

}  // namespace safeclip::app
