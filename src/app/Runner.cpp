#include "safeclip/app/Runner.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/mpi/collectives.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "safeclip/Version.h"
#include "safeclip/app/Logging.h"
#include "safeclip/app/PatchCoadd.h"
#include "safeclip/app/Signals.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/AtomicFile.h"
#include "safeclip/io/Checkpoint.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/io/RowFormats.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/pipeline/PatchCheckpoint.h"

namespace safeclip::app {

namespace fs = std::filesystem;

namespace {

/// One patch's outcome, gathered to rank 0 for the log and report.json (serialized and written
/// from its one field description, PatchResult::fields).
using PatchOutcome = pipeline::PatchResult;

/// Peak resident set size of this process in bytes (getrusage).
std::int64_t peakRssBytes() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<std::int64_t>(ru.ru_maxrss) * 1024;
}

/// The column `name` of `t`, if it has one of type T.
template <class T>
const std::vector<T>* column(const io::Table& t, const std::string& name) {
    for (const io::Column& c : t.columns) {
        if (c.name == name) {
            return std::get_if<std::vector<T>>(&c.data);
        }
    }
    return nullptr;
}

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
        const auto* status = column<std::string>(inputs, "status");
        const auto* clipped = column<std::int64_t>(inputs, "n_clipped_pixels");
        const auto* big = column<std::int64_t>(inputs, "n_big_footprints");
        o.nWarps = status != nullptr ? static_cast<int>(status->size()) : o.nWarps;
        for (std::size_t i = 0; status != nullptr && i < status->size(); ++i) {
            if ((*status)[i] == "used") {
                ++o.nUsed;
                o.nClippedWarpPixels += clipped != nullptr ? (*clipped)[i] : 0;
                o.nBigFootprints += big != nullptr ? (*big)[i] : 0;
            }
        }
        io::FitsFile f(base.outputPath, io::FitsFile::Mode::Read);
        if (f.findExtension("FOOTPRINTS")) {
            const io::Table fp = io::readTable(base.outputPath, "FOOTPRINTS");
            const auto* rule = column<std::string>(fp, "rule");
            const auto* visits = column<std::string>(fp, "clipped_visits");
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

/// True when `name` is exactly "<base>.tmp.<digits>": the temporary io::temporaryPathFor gives a writer
/// of `base` (io/AtomicFile.h), and nothing else (a finished output of a patch named
/// "<base>.tmp.1" is "<base>.tmp.1.fits" and does not match).
bool isTemporaryOf(const std::string& name, const std::string& base) {
    const std::string prefix = base + ".tmp.";
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) {
        return false;
    }
    return std::all_of(name.begin() + static_cast<std::ptrdiff_t>(prefix.size()), name.end(),
                       [](char c) { return c >= '0' && c <= '9'; });
}

/// True when `name` is a tile checkpoint's name as pipeline::tileCheckpointPath makes it:
/// "tile_<x0>_<y0>_<w>x<h>.h5" (x0, y0 may be negative).
bool isTileCheckpointName(const std::string& name) {
    int x0 = 0;
    int y0 = 0;
    int w = 0;
    int h = 0;
    int end = -1;
    if (std::sscanf(name.c_str(), "tile_%d_%d_%dx%d.h5%n", &x0, &y0, &w, &h, &end) != 4 ||
        end != static_cast<int>(name.size())) {
        return false;
    }
    const kernel::Box b{x0, y0, w, h};
    return name == fs::path(pipeline::tileCheckpointPath(".", "p", b)).filename().string();
}

/// Temporaries left by a killed writer of this patch (this patch belongs to exactly one group of one
/// job, so no live writer can own them). Exactly the names this patch's writers make, nothing else:
/// "<out>.tmp.<digits>", "<ckdir>/<patch>.reduced.h5.tmp.<digits>" and
/// "<ckdir>/<patch>.tiles/tile_X_Y_WxH.h5.tmp.<digits>".
void removeStaleTemporaries(const std::string& out, const std::string& ckdir, const std::string& patch) {
    std::error_code ec;
    auto sweep = [&](const fs::path& dir, const std::function<bool(const std::string&)>& isOurs) {
        if (!fs::is_directory(dir, ec)) {
            return;
        }
        for (const auto& e : fs::directory_iterator(dir, ec)) {
            const std::string name = e.path().filename().string();
            if (isOurs(name) && e.is_regular_file(ec)) {
                log().warn("removing a temporary left by an interrupted writer: {}", e.path().string());
                fs::remove(e.path(), ec);
            }
        }
    };
    const fs::path o(out);
    const std::string outName = o.filename().string();
    sweep(o.parent_path().empty() ? fs::path(".") : o.parent_path(),
          [&](const std::string& n) { return isTemporaryOf(n, outName); });
    const std::string reduced = fs::path(pipeline::decisionCheckpointPath(ckdir, patch)).filename().string();
    sweep(fs::path(ckdir), [&](const std::string& n) { return isTemporaryOf(n, reduced); });
    sweep(fs::path(pipeline::tileCheckpointDir(ckdir, patch)), [](const std::string& n) {
        const auto at = n.rfind(".tmp.");
        return at != std::string::npos && isTileCheckpointName(n.substr(0, at)) &&
               isTemporaryOf(n, n.substr(0, at));
    });
}

/// The HDUs (after the primary) a finished coadd of `mode` has, in order (stage "write").
std::vector<std::string> expectedHdus(const std::string& mode) {
    std::vector<std::string> hdus = {"IMAGE", "MASK", "VARIANCE", "NIMAGE", "INPUTS"};
    if (mode == "safeclip") {
        hdus.insert(hdus.end(), {"FOOTPRINTS", "CANDIDATES", "CLIPPED_SPANS"});
    }
    hdus.emplace_back("CONFIG");
    return hdus;
}

std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) {
        s += (s.empty() ? "" : ",") + x;
    }
    return s.empty() ? "none" : s;
}

/// What --resume finds at a patch's output path.
struct OutputCheck {
    enum class Kind { Missing, Current, Damaged, OtherConfig, InputsChanged };
    Kind kind = Kind::Missing;
    std::string why;  ///< one line naming what is wrong (Damaged, OtherConfig, InputsChanged)
};

/// Compares the manifest's warps of a patch with the INPUTS table of its finished output: the same
/// files in the same order, each with the size and mtime it had then; a file whose size is the same
/// but whose mtime differs is read once to compare its CRC with the stored one. Returns what changed
/// ("" when nothing did).
std::string inputsChange(const io::Table& inputs, const io::ManifestPatch& patch) {
    const auto* file = column<std::string>(inputs, "file");
    const auto* checksum = column<std::string>(inputs, "checksum");
    const auto* size = column<std::int64_t>(inputs, "size");
    const auto* mtime = column<std::int64_t>(inputs, "mtime_ns");
    if (file == nullptr) {
        return "its INPUTS table has no file column";
    }
    std::vector<std::string> now;
    for (const auto& w : patch.warps) {
        now.push_back(w.path);
    }
    for (const std::string& f : *file) {
        if (std::find(now.begin(), now.end(), f) == now.end()) {
            return f + " was dropped from the manifest";
        }
    }
    for (const std::string& f : now) {
        if (std::find(file->begin(), file->end(), f) == file->end()) {
            return f + " was added to the manifest";
        }
    }
    if (now != *file) {
        return "the manifest lists its warps in another order or more than once (first: " + now.front() + ")";
    }
    for (std::size_t i = 0; i < now.size(); ++i) {
        const std::string& f = now[i];
        const bool known = size != nullptr && mtime != nullptr;
        struct stat st {};
        if (::stat(f.c_str(), &st) != 0) {
            if (known && (*size)[i] < 0) {
                continue;  // could not be stat'ed when the output was made either (a skipped warp)
            }
            return f + ": cannot stat: " + std::strerror(errno);
        }
        const std::int64_t sz = st.st_size;
        const std::int64_t ns =
            static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
        if (known && (*size)[i] == sz && (*mtime)[i] == ns) {
            continue;  // the cheap check: same size and mtime
        }
        if (known && (*size)[i] != sz) {
            return f + ": size " + std::to_string(sz) + " bytes, was " + std::to_string((*size)[i]);
        }
        const std::string stored = checksum != nullptr ? (*checksum)[i] : std::string();
        if (stored.empty()) {
            return f + ": modified (mtime changed) and no checksum was stored";
        }
        std::string crc;
        try {
            crc = io::fileChecksum(f);
        } catch (const Error& e) {
            return e.what();
        }
        if (crc != stored) {
            return f + ": content changed (" + crc + ", was " + stored + ")";
        }
        log().debug("{}: mtime changed but the content is the same ({})", f, crc);
    }
    return "";
}

/// --resume: is the output at `path` a whole coadd of this configuration made from these inputs?
/// Damage (size, checksums, missing HDUs, unreadable) is told apart from another configuration
/// (a readable file with another SCCFGHSH) and from changed inputs.
OutputCheck checkOutput(const std::string& path, const std::string& cfgHash, const io::ManifestPatch& patch) {
    using Kind = OutputCheck::Kind;
    std::error_code ec;
    const auto st = fs::symlink_status(path, ec);
    if (ec || !fs::exists(st)) {
        return {Kind::Missing, ""};
    }
    if (!fs::is_regular_file(fs::status(path, ec))) {
        return {Kind::Damaged, "is not a regular file"};
    }
    const io::FitsIntegrity integrity = io::checkFitsIntegrity(path);
    if (!integrity.problem.empty()) {
        return {Kind::Damaged, integrity.problem};
    }
    std::optional<std::string> hash;
    std::string mode;
    try {
        io::FitsFile f(path, io::FitsFile::Mode::Read);
        f.moveToHdu(1);
        hash = f.readString("SCCFGHSH");
        mode = f.readString("SCMODE").value_or("");
    } catch (const Error& e) {
        return {Kind::Damaged, e.what()};
    }
    if (!hash || *hash != cfgHash) {
        return {Kind::OtherConfig, hash ? "made with a different configuration (SCCFGHSH differs)"
                                        : "has no SCCFGHSH card (not a coadd of this configuration)"};
    }
    const std::vector<std::string> want = expectedHdus(mode);
    if (integrity.extnames != want) {
        return {Kind::Damaged, "has HDUs " + joined(integrity.extnames) + ", expected " + joined(want)};
    }
    try {
        const std::string change = inputsChange(io::readTable(path, "INPUTS"), patch);
        if (!change.empty()) {
            return {Kind::InputsChanged, change};
        }
    } catch (const Error& e) {
        return {Kind::Damaged, e.what()};
    }
    return {Kind::Current, ""};
}

/// What --resume does with a patch whose output may exist (group root).
enum class OnResume : int { Run = 0, Skip = 1, Refuse = 2 };

/// Decides on the group root: a whole, current output is skipped; a damaged one is redone with a
/// warning; one of another configuration or made from other inputs is refused (`why`) unless
/// --restart, which redoes it.
OnResume decideOnResume(const std::string& out, const std::string& cfgHash, const io::ManifestPatch& patch,
                        bool restart, std::string& why) {
    using Kind = OutputCheck::Kind;
    const OutputCheck c = checkOutput(out, cfgHash, patch);
    switch (c.kind) {
        case Kind::Missing:
            return OnResume::Run;
        case Kind::Current:
            return OnResume::Skip;
        case Kind::Damaged:
            log().warn("{}: damaged output ({}); coadding patch {} again", out, c.why, patch.name);
            return OnResume::Run;
        case Kind::OtherConfig:
            why = out + ": exists but was " + c.why + "; rerun with --restart to redo it";
            break;
        case Kind::InputsChanged:
            why = out + ": input changed since it was made: " + c.why + "; rerun with --restart to redo it";
            break;
    }
    if (restart) {
        log().warn("--restart: {}", why);
        return OnResume::Run;
    }
    return OnResume::Refuse;
}

/// Exit 2 when a patch's output (or the report or the lock file) is, or would replace, a warp of
/// the manifest (any patch's): run would overwrite its own input.
void refuseOutputsThatAreInputs(const io::Manifest& manifest, const std::string& outDir) {
    std::vector<std::string> outputs{(fs::path(outDir) / "report.json").string(),
                                     (fs::path(outDir) / ".safeclip.lock").string()};
    std::vector<std::string> inputs;
    for (const auto& p : manifest.patches) {
        outputs.push_back((fs::path(outDir) / (p.name + ".fits")).string());
        for (const auto& w : p.warps) {
            inputs.push_back(w.path);
        }
    }
    const auto [out, in] = outputReplacingInput(outputs, inputs);
    if (!out.empty()) {
        throw ConfigError(out + ": output would replace the input warp " + in +
                          " (output.dir holds warps of the manifest; choose another output.dir)");
    }
}

}  // namespace

RunPlan makePlan(const Config& cfg, int nRanks, int shardIndex, int shardCount) {
    if (nRanks < 1) {
        throw ConfigError("plan: -n must be >= 1");
    }
    const std::string manifestPath = cfg.path("input.manifest");
    if (manifestPath.empty()) {
        throw ConfigError(
            "input.manifest is not set (give it in the config or with --set input.manifest=FILE)");
    }
    io::Manifest manifest = io::readManifest(manifestPath);
    if (shardCount > 1) {  // as runManifest does for --shard K/N
        std::vector<io::ManifestPatch> kept;
        for (std::size_t i = 0; i < manifest.patches.size(); ++i) {
            if (static_cast<int>(i % static_cast<std::size_t>(shardCount)) == shardIndex) {
                kept.push_back(manifest.patches[i]);
            }
        }
        manifest.patches = std::move(kept);
    }
    RunPlan plan;
    plan.nRanks = nRanks;
    plan.shardIndex = shardIndex;
    plan.shardCount = shardCount;
    plan.mode = cfg.getString("coadd.mode");
    plan.budgetBytes = geom::parseByteSize(cfg.getString("memory.max_per_rank"), "memory.max_per_rank");
    const bool trialPass = plan.mode == "safeclip";
    const bool validatePixels = cfg.getBool("input.validate_pixels");
    std::vector<double> costs;
    for (const auto& p : manifest.patches) {
        costs.push_back(static_cast<double>(p.box.area()) *
                        static_cast<double>(std::max<std::size_t>(1, p.warps.size())));
    }
    const geom::GroupPlan groups = geom::planGroups(costs, nRanks);
    plan.nGroups = groups.nGroups;
    plan.ranks.resize(static_cast<std::size_t>(nRanks));
    for (RankPlan& r : plan.ranks) {
        r.budgetBytes = plan.budgetBytes;
    }
    for (std::size_t p = 0; p < manifest.patches.size(); ++p) {
        const auto& patch = manifest.patches[p];
        PatchPlan pp;
        pp.name = patch.name;
        pp.box = patch.box;
        pp.warps = static_cast<int>(patch.warps.size());
        pp.group = groups.groupOfPatch[p];
        for (int r = 0; r < nRanks; ++r) {
            if (groups.groupOfRank[static_cast<std::size_t>(r)] == pp.group) {
                pp.ranks.push_back(r);
            }
        }
        // The warps' headers, as the "open" stage sees them (no pixels are read).
        std::vector<std::optional<double>> sigmas;
        std::string noSigma;  // a warp the "detection" stage would refuse (no PSF card, no override)
        std::vector<bool> opened;
        std::int64_t validationReads = 0;  // input.validate_pixels: the group root scans every warp
        for (const auto& w : patch.warps) {
            try {
                const io::WarpReader reader(w.path);
                sigmas.push_back(reader.header().psfSigma);
                if (!reader.header().psfSigma && noSigma.empty()) {
                    noSigma = w.path;
                }
                opened.push_back(true);
                if (pp.box.empty()) {
                    pp.box = reader.header().box;
                }
                if (validatePixels) {
                    validationReads += reader.header().box.area() * geom::kStackReadBytesPerPixel;
                }
                ++pp.warpsOpened;
            } catch (const Error&) {
                opened.push_back(false);
            }
        }
        pp.haloSigma = haloSigma(cfg, sigmas);
        pp.haloSigmaSource = cfg.getDouble("detect.psf_sigma") > 0 ? "config detect.psf_sigma"
                             : pp.haloSigma > 0 ? "largest PSFSIGMA/FWHM of the warp headers"
                                                : "none: no PSFSIGMA or FWHM card and detect.psf_sigma = 0";
        if (trialPass && !(pp.haloSigma > 0)) {
            pp.error = "no PSFSIGMA or FWHM card and detect.psf_sigma = 0; set detect.psf_sigma";
        } else if (trialPass && !(cfg.getDouble("detect.psf_sigma") > 0) && !noSigma.empty()) {
            // The detection sigma is the adaptive-moment radius of every used warp's Gaussian: each needs
            // one.
            pp.error = noSigma + ": no PSFSIGMA or FWHM card and detect.psf_sigma = 0; set detect.psf_sigma";
        }
        pp.halo = trialPass ? tileHalo(cfg, pp.haloSigma) : 0;  // the "detection" stage (none in mean mode)
        const auto groupSize = static_cast<int>(pp.ranks.size());
        const geom::TilePlan tp =
            geom::planTiles(pp.box, groupSize, static_cast<int>(cfg.getInt("tile.size")), pp.halo,
                            pp.warpsOpened, plan.budgetBytes);
        pp.tileSize = tp.tileSize;
        pp.tiles = static_cast<int>(tp.tiles.size());
        pp.warpBytesRead = geom::expectedWarpBytesRead(pp.box, tp.tiles, pp.halo, pp.warpsOpened, trialPass) +
                           validationReads;
        try {
            pp.perRank =
                geom::checkedPatchBudget(pp.box, tp, groupSize, static_cast<int>(cfg.getInt("tile.size")),
                                         opened, trialPass, plan.budgetBytes, pp.name, validationReads);
        } catch (const ConfigError& e) {
            pp.error = e.what();
        }
        for (const geom::RankBudget& b : pp.perRank) {
            pp.weightsRows = b.weightsRows;
            if (b.trialRows > 0) {
                pp.trialRows = pp.trialRows == 0 ? b.trialRows : std::min(pp.trialRows, b.trialRows);
            }
            if (b.finalRows > 0) {
                pp.finalRows = pp.finalRows == 0 ? b.finalRows : std::min(pp.finalRows, b.finalRows);
            }
        }
        for (std::size_t t = 0; t < tp.tiles.size(); ++t) {
            RankPlan& r =
                plan.ranks[static_cast<std::size_t>(pp.ranks[static_cast<std::size_t>(tp.owner[t])])];
            r.tiles += 1;
            r.pixelWarps += static_cast<double>(tp.tiles[t].area()) * pp.warpsOpened;
        }
        for (std::size_t g = 0; g < pp.perRank.size(); ++g) {
            RankPlan& r = plan.ranks[static_cast<std::size_t>(pp.ranks[g])];
            r.peakBytes = std::max(r.peakBytes, pp.perRank[g].peakBytes);
            r.warpBytesRead += pp.perRank[g].warpBytesRead;
        }
        plan.patches.push_back(std::move(pp));
    }
    return plan;
}

std::string planText(const RunPlan& plan) {
    std::ostringstream os;
    os << "plan: " << plan.patches.size() << " patches on " << plan.nRanks << " ranks in " << plan.nGroups
       << " groups; memory.max_per_rank = " << geom::formatByteSize(plan.budgetBytes);
    if (plan.shardCount > 1) {
        os << "; shard " << plan.shardIndex << "/" << plan.shardCount;
    }
    os << "\n";
    for (const PatchPlan& pp : plan.patches) {
        os << "patch " << pp.name << ": " << pp.box.width << "x" << pp.box.height << ", " << pp.warps
           << " warps, group " << pp.group << " (ranks";
        for (int r : pp.ranks) {
            os << " " << r;
        }
        os << "), " << pp.tiles << " tiles of " << pp.tileSize << " px, halo " << pp.halo << " px";
        if (pp.halo > 0) {
            os << " (PSF sigma " << std::fixed << std::setprecision(2) << pp.haloSigma << " px)";
        }
        os << "; chunk rows: weights " << pp.weightsRows << ", trial " << pp.trialRows << ", final "
           << pp.finalRows << "; reads about " << geom::formatByteSize(pp.warpBytesRead)
           << " (weights pass, trial and final stacks)\n";
        if (!pp.error.empty()) {
            os << "  error: " << pp.error << "\n";
        }
    }
    for (std::size_t r = 0; r < plan.ranks.size(); ++r) {
        const RankPlan& rp = plan.ranks[r];
        os << "rank " << r << ": " << rp.tiles << " tiles, memory <= " << geom::formatByteSize(rp.budgetBytes)
           << " + overhead (model peak " << geom::formatByteSize(rp.peakBytes) << "), reads about "
           << geom::formatByteSize(rp.warpBytesRead) << "\n";
    }
    return os.str();
}

std::string planJson(const RunPlan& plan) {
    nlohmann::json j;
    j["format"] = "safeclip-plan";
    j["version"] = 1;
    j["rank_count"] = plan.nRanks;
    j["group_count"] = plan.nGroups;
    j["shard"] = {{"index", plan.shardIndex}, {"count", plan.shardCount}};
    j["mode"] = plan.mode;
    j["memory_max_per_rank"] = plan.budgetBytes;
    auto& patches = j["patches"];
    patches = nlohmann::json::array();
    std::int64_t largest = 0;
    for (const PatchPlan& pp : plan.patches) {
        largest = std::max(largest, pp.box.area());
        nlohmann::json perRank = nlohmann::json::array();
        for (std::size_t g = 0; g < pp.perRank.size(); ++g) {
            const geom::RankBudget& b = pp.perRank[g];
            perRank.push_back(
                {{"rank", pp.ranks[g]},
                 {"tiles", b.tiles},
                 {"peak_bytes", b.peakBytes},
                 {"warp_bytes_read", b.warpBytesRead},
                 {"chunk_rows",
                  {{"weights", b.weightsRows}, {"trial", b.trialRows}, {"final", b.finalRows}}}});
        }
        patches.push_back(
            {{"name", pp.name},
             {"box",
              {{"x0", pp.box.x0}, {"y0", pp.box.y0}, {"width", pp.box.width}, {"height", pp.box.height}}},
             {"warps", pp.warps},
             {"warps_opened", pp.warpsOpened},
             {"group", pp.group},
             {"ranks", pp.ranks},
             {"pixel_warps", static_cast<double>(pp.box.area()) * std::max(1, pp.warps)},
             {"halo_sigma", pp.haloSigma},
             {"halo_sigma_source", pp.haloSigmaSource},
             {"halo", pp.halo},
             {"tile_size", pp.tileSize},
             {"tiles", pp.tiles},
             {"warp_bytes_read", pp.warpBytesRead},
             {"chunk_rows", {{"weights", pp.weightsRows}, {"trial", pp.trialRows}, {"final", pp.finalRows}}},
             {"memory_per_rank", perRank},
             {"error", pp.error}});
    }
    auto& ranks = j["ranks"];
    ranks = nlohmann::json::array();
    double makespan = 0;
    std::int64_t peak = 0;
    for (std::size_t r = 0; r < plan.ranks.size(); ++r) {
        const RankPlan& rp = plan.ranks[r];
        makespan = std::max(makespan, rp.pixelWarps);
        peak = std::max(peak, rp.peakBytes);
        ranks.push_back({{"rank", r},
                         {"tiles", rp.tiles},
                         {"memory_bytes", rp.budgetBytes},
                         {"peak_bytes", rp.peakBytes},
                         {"warp_bytes_read", rp.warpBytesRead},
                         {"pixel_warps", rp.pixelWarps}});
    }
    j["largest_patch_pixels"] = largest;
    j["max_pixel_warps_per_rank"] = makespan;
    j["max_peak_bytes"] = peak;
    return j.dump(2) + "\n";
}

std::string describePlan(const Config& cfg, int nRanks) {
    return planText(makePlan(cfg, nRanks));
}

std::pair<int, int> parseShard(const std::string& text) {
    int k = -1;
    int n = 0;
    char slash = 0;
    char extra = 0;
    if (std::sscanf(text.c_str(), "%d%c%d%c", &k, &slash, &n, &extra) != 3 || slash != '/' || n < 1 ||
        k < 0 || k >= n) {
        throw ConfigError("--shard: '" + text + "' must be K/N with 0 <= K < N (e.g. 0/4)");
    }
    return {k, n};
}

int runManifest(const Config& cfg, const RunOptions& opts, const parallel::Comm& comm) {
    const auto t0 = std::chrono::steady_clock::now();
    int code = 0;
    io::Manifest manifest;
    std::string outDir;
    std::optional<OutputDirLock> lock;  // world rank 0 only, held until the run returns
    // Setup errors (bad manifest, unwritable output dir) are detected on every rank alike; agree anyway.
    try {
        const std::string manifestPath = cfg.path("input.manifest");
        if (manifestPath.empty()) {
            throw ConfigError(
                "input.manifest is not set (give it in the config or with --set input.manifest=FILE)");
        }
        manifest = io::readManifest(manifestPath);
        outDir = cfg.path("output.dir");
        if (comm.rank() == 0) {
            std::error_code ec;
            fs::create_directories(outDir, ec);
            if (ec || !fs::is_directory(outDir)) {
                throw OutputError(outDir + ": cannot create output directory: " + ec.message());
            }
            refuseOutputsThatAreInputs(manifest, outDir);
            lock.emplace(outDir, opts.shardIndex, opts.shardCount);
        }
    } catch (const Error& e) {
        log().error("{}", e.what());
        code = static_cast<int>(e.code());
    }
    if (!comm.agree(code == 0)) {
        return static_cast<int>(comm.max(code));
    }

    if (opts.shardCount > 1) {
        std::vector<io::ManifestPatch> kept;
        for (std::size_t i = 0; i < manifest.patches.size(); ++i) {
            if (static_cast<int>(i % static_cast<std::size_t>(opts.shardCount)) == opts.shardIndex) {
                kept.push_back(manifest.patches[i]);
            }
        }
        if (comm.rank() == 0) {
            log().info("run: shard {}/{}: {} of {} patches", opts.shardIndex, opts.shardCount, kept.size(),
                       manifest.patches.size());
        }
        manifest.patches = std::move(kept);
    }
    std::string checkpointDir = cfg.path("checkpoint.dir");
    if (checkpointDir.empty()) {
        checkpointDir = (fs::path(outDir) / "checkpoints").string();
    }
    CheckpointOptions ckpt{checkpointDir, opts.resume, opts.restart,
                           cfg.getDouble("checkpoint.tile_interval")};

    std::vector<double> costs;
    for (const auto& p : manifest.patches) {
        costs.push_back(static_cast<double>(p.box.area()) *
                        static_cast<double>(std::max<std::size_t>(1, p.warps.size())));
    }
    // Rank groups: with at least as many patches as ranks every rank owns whole patches; with fewer,
    // the ranks split into one group per patch and the group shares the patch's tiles.
    const geom::GroupPlan plan = geom::planGroups(costs, comm.size());
    const int color = plan.groupOfRank[static_cast<std::size_t>(comm.rank())];
    const parallel::Comm group(comm.raw().split(color, comm.rank()));
    const std::vector<int>& owner = plan.groupOfPatch;
    long long mine = 0;
    for (int g : owner) {
        mine += g == color ? 1 : 0;
    }
    if (comm.rank() == 0) {
        log().info("run: {} patches on {} ranks in {} groups; output {}", manifest.patches.size(),
                   comm.size(), plan.nGroups, outDir);
    }

    const std::string cfgHash = scienceConfigHash(cfg);
    PreviousReport previousReport{(fs::path(outDir) / reportFileName(opts)).string(), std::nullopt};
    long long done = 0;
    long long skipped = 0;
    long long failed = 0;
    std::vector<PatchOutcome> outcomes;
    long long handled = 0;
    const std::string progress = cfg.getString("log.progress");
    const bool showProgress = progress == "on" || (progress == "auto" && ::isatty(STDERR_FILENO) != 0);
    auto lastProgress = std::chrono::steady_clock::now();
    auto secondsSinceProgress = [&] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - lastProgress).count();
    };
    for (std::size_t p = 0; p < manifest.patches.size(); ++p) {
        if (owner[p] != color) {
            continue;
        }
        const auto& patch = manifest.patches[p];
        const std::string out = (fs::path(outDir) / (patch.name + ".fits")).string();
        PatchOutcome o;
        o.index = static_cast<std::int64_t>(p);
        o.name = patch.name;
        o.outputPath = out;
        o.rank = comm.rank();
        o.nWarps = static_cast<int>(patch.warps.size());
        // --resume: run, skip (finished with this configuration and these inputs) or refuse.
        int current = 0;
        std::string why;
        if (group.rank() == 0 && opts.resume) {
            current = static_cast<int>(decideOnResume(out, cfgHash, patch, opts.restart, why));
        }
        parallel::broadcastFromRoot(&group, current);
        if (current == static_cast<int>(OnResume::Refuse)) {
            if (group.rank() == 0) {
                log().error("patch {}: {}", patch.name, why);
                PatchOutcome f = o;
                f.status = "failed";
                f.error = why;
                outcomes.push_back(f);
                ++failed;
            }
            code = std::max(code, static_cast<int>(ExitCode::Config));
            continue;
        }
        if (current == static_cast<int>(OnResume::Skip)) {
            log().debug("patch {}: {} exists with the same config; skipped (--resume)", patch.name, out);
            o.status = "skipped";
            if (group.rank() == 0) {
                pipeline::removeCheckpoints(ckpt.dir, patch.name);  // left if killed before the cleanup
                ++skipped;
                outcomes.push_back(finishedFigures(o, previousReport.get(), previousReport.path, cfgHash));
            }
            continue;
        }
        std::vector<WarpInput> warps;
        for (const auto& w : patch.warps) {
            warps.push_back(WarpInput{w.visit, w.path});
        }
        try {
            int stop = stopRequested() ? 1 : 0;
            stop = group.agree(stop == 0) ? 0 : 1;
            if (stop == 1) {
                throwIfStopRequested("before the next patch");
                throw Error("stopped by a signal on another rank; rerun with --resume", ExitCode::Resume);
            }
            if (group.rank() == 0) {
                removeStaleTemporaries(out, ckpt.dir, patch.name);
            }
            const std::int64_t readBefore = io::warpBytesRead();
            const PatchResult r = coaddPatch(patch.name, patch.box, warps, cfg, out, &group, ckpt);
            // coaddPatch returns on every rank of the group alike (its stages agree), so this sum is safe.
            const std::int64_t readHere = group.sum(io::warpBytesRead() - readBefore);
            done += group.rank() == 0 ? 1 : 0;
            o = r;
            o.index = static_cast<std::int64_t>(p);
            o.rank = comm.rank();
            o.status = "done";
            o.warpBytesRead = readHere;
        } catch (const Error& e) {
            failed += group.rank() == 0 ? 1 : 0;
            code = std::max(code, static_cast<int>(e.code()));
            const std::string what = e.what();
            const std::string prefix = "patch " + patch.name + ": ";
            log().error("{}{}", what.rfind(prefix, 0) == 0 ? "" : prefix, what);  // one "patch X:" prefix
            o.status = "failed";
            o.error = what;
        } catch (const std::exception& e) {
            failed += group.rank() == 0 ? 1 : 0;
            code = std::max(code, static_cast<int>(ExitCode::Internal));
            log().error("patch {}: internal error: {}", patch.name, e.what());
            o.status = "failed";
            o.error = std::string("internal error: ") + e.what();
        }
        if (group.rank() == 0) {
            outcomes.push_back(o);
        }
        ++handled;
        if (comm.rank() == 0 && showProgress && (secondsSinceProgress() > 10.0 || handled == mine)) {
            lastProgress = std::chrono::steady_clock::now();
            const double elapsed = std::chrono::duration<double>(lastProgress - t0).count();
            const double rate = static_cast<double>(handled) / std::max(elapsed, 1e-9);
            log().info("progress: group {}: {}/{} patches ({} in the run), {:.2f} patches/min, ETA {:.0f} s",
                       color, handled, mine, manifest.patches.size(), rate * 60.0,
                       static_cast<double>(mine - handled) / std::max(rate, 1e-9));
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log().debug("rank summary: {} patches done, {} skipped, {} failed in {:.2f} s", done, skipped, failed,
                seconds);
    const long long allDone = comm.sum(done);
    const long long allSkipped = comm.sum(skipped);
    const long long allFailed = comm.sum(failed);
    const double wall = comm.max(seconds);
    const auto perRank = parallel::gatherToRoot(
        &comm, std::make_pair(seconds, std::make_pair(peakRssBytes(), io::warpBytesRead())));
    if (comm.rank() == 0) {
        double lo = perRank.front().first;
        double hi = lo;
        double sum = 0;
        std::string rss;
        for (std::size_t r = 0; r < perRank.size(); ++r) {
            lo = std::min(lo, perRank[r].first);
            hi = std::max(hi, perRank[r].first);
            sum += perRank[r].first;
            rss += fmt::format("{}r{} {:.1f} MiB", r == 0 ? "" : ", ", r,
                               static_cast<double>(perRank[r].second.first) / (1024.0 * 1024.0));
        }
        log().info("rank timings: min {:.2f} s, mean {:.2f} s, max {:.2f} s; peak RSS: {}", lo,
                   sum / static_cast<double>(perRank.size()), hi, rss);
    }
    int worst = static_cast<int>(comm.max(code));  // every group is done with its patches
    if (comm.rank() == 0) {
        pipeline::removeCheckpointDirIfEmpty(ckpt.dir);
    }
    std::vector<std::vector<PatchOutcome>> all;
    boost::mpi::gather(comm.raw(), outcomes, all, 0);
    if (comm.rank() == 0) {
        std::vector<PatchOutcome> flat;
        for (auto& v : all) {
            flat.insert(flat.end(), v.begin(), v.end());
        }
        std::sort(flat.begin(), flat.end(), [](const auto& a, const auto& b) { return a.index < b.index; });
        long long clipped = 0;
        for (const auto& o : flat) {
            clipped += o.nClippedWarpPixels;
            if (o.status == "done") {
                log().info(
                    "patch {} [r{}]: {}/{} warps used, {} footprints, {} clipped ({} big), {} CLIPPED warp "
                    "pixels, {:.2f} s -> {}",
                    o.name, o.rank, o.nUsed, o.nWarps, o.nFootprints, o.nClippedFootprints, o.nBigFootprints,
                    o.nClippedWarpPixels, o.seconds, o.outputPath);
            } else if (o.status == "skipped") {
                log().info("patch {} [r{}]: output exists with the same configuration; skipped (--resume)",
                           o.name, o.rank);
            }
        }
        log().info(
            "run summary: {} patches coadded, {} skipped (already done), {} failed; {} CLIPPED warp pixels; "
            "{:.2f} s on {} ranks; report in {}",
            allDone, allSkipped, allFailed, clipped, wall, comm.size(), outDir);
        try {
            writeReport(outDir, reportFileName(opts), flat, perRank, wall, cfg, opts, worst);
        } catch (const Error& e) {
            log().error("{}", e.what());
            worst = std::max(worst, static_cast<int>(e.code()));
        }
    }
    boost::mpi::broadcast(comm.raw(), worst, 0);
    return worst;
}

namespace {

/// Device and inode of `path` (symbolic links followed), if it exists.
std::optional<std::pair<dev_t, ino_t>> fileIdentity(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return std::nullopt;
    }
    return std::make_pair(st.st_dev, st.st_ino);
}

std::string normalizedPath(const std::string& path) {
    std::error_code ec;
    fs::path p = fs::absolute(path, ec);
    if (ec) {
        p = path;
    }
    const fs::path canon = fs::weakly_canonical(p, ec);
    return (ec ? p.lexically_normal() : canon).string();
}

/// The text of a lock file (its holder), one line, or "".
std::string lockHolder(int fd) {
    char buf[512] = {};
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    std::string text(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.pop_back();
    }
    for (char& c : text) {
        const auto u = static_cast<unsigned char>(c);
        c = u < 0x20 || u == 0x7f ? ' ' : c;
    }
    return text;
}

/// "host H, pid P, started T" from a lock file's "H P T".
std::string describeHolder(const std::string& text) {
    std::istringstream in(text);
    std::string host;
    std::string pid;
    std::string started;
    if (!(in >> host >> pid >> started)) {
        return text.empty() ? "holder unknown" : "holder " + text;
    }
    return "host " + host + ", pid " + pid + ", started " + started;
}

int openLockFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        throw OutputError(path + ": cannot open the output directory's lock file: " + std::strerror(errno));
    }
    return fd;
}

void writeHolder(int fd, const std::string& path) {
    const std::string text = OutputDirLock::holderText() + "\n";
    if (::ftruncate(fd, 0) != 0 ||
        ::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
        throw OutputError(path + ": cannot write the lock file: " + std::strerror(errno));
    }
}

}  // namespace

std::pair<std::string, std::string> outputReplacingInput(const std::vector<std::string>& outputs,
                                                         const std::vector<std::string>& inputs) {
    std::map<std::pair<dev_t, ino_t>, std::string> byId;
    std::map<std::string, std::string> byPath;
    for (const std::string& in : inputs) {
        if (const auto id = fileIdentity(in)) {
            byId.emplace(*id, in);
        }
        byPath.emplace(normalizedPath(in), in);
    }
    for (const std::string& out : outputs) {
        if (const auto id = fileIdentity(out)) {
            if (const auto it = byId.find(*id); it != byId.end()) {
                return {out, it->second};
            }
        }
        if (const auto it = byPath.find(normalizedPath(out)); it != byPath.end()) {
            return {out, it->second};
        }
    }
    return {};
}

std::string OutputDirLock::holderText() {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
        std::snprintf(host, sizeof host, "unknown-host");
    }
    static const std::time_t start = std::time(nullptr);  // first call: before any work
    std::tm tm{};
    ::gmtime_r(&start, &tm);
    char when[32] = {};
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return std::string(host) + " " + std::to_string(::getpid()) + " " + when;
}

OutputDirLock::OutputDirLock(const std::string& dir, int shardIndex, int shardCount) {
    const std::string dirLock = (fs::path(dir) / ".safeclip.lock").string();
    m_exclusive = shardCount <= 1;
    m_dirFd = openLockFile(dirLock);
    auto refuse = [&](int fd, const std::string& path, const std::string& extra) {
        const std::string holder = lockHolder(fd);
        throw OutputError(dir + ": in use by another safeclip run (" +
                          (holder.empty() ? extra : describeHolder(holder)) + "; lock " + path +
                          "); wait for it to end, or give another output.dir");
    };
    try {
        if (::flock(m_dirFd, (m_exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK) {
                throw OutputError(dirLock + ": cannot lock: " + std::strerror(errno));
            }
            refuse(m_dirFd, dirLock,
                   "sharded runs: see " + (fs::path(dir) / ".safeclip.shard-*.lock").string());
        }
        if (m_exclusive) {
            writeHolder(m_dirFd, dirLock);
            return;
        }
        // Shared: no unsharded run holds it, so any text in it is stale.
        (void)::ftruncate(m_dirFd, 0);
        const std::string shardLock = (fs::path(dir) / (".safeclip.shard-" + std::to_string(shardIndex) +
                                                        "-of-" + std::to_string(shardCount) + ".lock"))
                                          .string();
        m_shardFd = openLockFile(shardLock);
        if (::flock(m_shardFd, LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK) {
                throw OutputError(shardLock + ": cannot lock: " + std::strerror(errno));
            }
            refuse(m_shardFd, shardLock, "holder unknown");
        }
        writeHolder(m_shardFd, shardLock);
    } catch (...) {
        if (m_shardFd >= 0) {
            ::close(m_shardFd);
        }
        ::close(m_dirFd);
        throw;
    }
}

OutputDirLock::~OutputDirLock() {
    // Empty the holder text while still holding the lock, so it never names a finished run.
    if (m_shardFd >= 0) {
        (void)::ftruncate(m_shardFd, 0);
        ::close(m_shardFd);
    }
    if (m_dirFd >= 0) {
        if (m_exclusive) {
            (void)::ftruncate(m_dirFd, 0);
        }
        ::close(m_dirFd);
    }
}

}  // namespace safeclip::app
