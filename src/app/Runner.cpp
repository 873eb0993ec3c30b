#include "safeclip/app/Runner.h"

#include <sys/resource.h>
#include <unistd.h>

#include <boost/mpi/collectives.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "safeclip/Version.h"
#include "safeclip/app/Logging.h"
#include "safeclip/app/PatchCoadd.h"
#include "safeclip/app/Signals.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/AtomicFile.h"
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

/// Write <outDir>/<fileName> atomically (io::writeTextAtomically).
void writeReport(const std::string& outDir, const std::string& fileName,
                 const std::vector<PatchOutcome>& outcomes,
                 const std::vector<std::pair<double, std::pair<std::int64_t, std::int64_t>>>& perRank,
                 double wall, const Config& cfg) {
    nlohmann::json j;
    j["format"] = "safeclip-report";
    j["version"] = 1;
    j["safeclip_version"] = kVersion;
    j["git_revision"] = kGitRevision;
    j["rank_count"] = perRank.size();
    j["config"] = cfg.dump();  // the effective configuration, execution keys included
    j["wall_seconds"] = wall;
    auto& ranks = j["ranks"];
    ranks = nlohmann::json::array();
    for (std::size_t r = 0; r < perRank.size(); ++r) {
        ranks.push_back({{"rank", r},
                         {"seconds", perRank[r].first},
                         {"peak_rss_bytes", perRank[r].second.first},
                         {"warp_bytes_read", perRank[r].second.second}});
    }
    auto& arr = j["patches"];
    arr = nlohmann::json::array();
    for (const auto& o : outcomes) {
        nlohmann::json entry = io::rowToJson(o);
        entry.erase("index");  // the manifest order is the order of the list
        arr.push_back(std::move(entry));
    }
    const std::string path = (fs::path(outDir) / fileName).string();
    io::writeTextAtomically(path, j.dump(2) + "\n", "the run report");
}

/// Temporaries left by a killed writer of this patch (this patch belongs to exactly one group of one
/// job, so no live writer can own them): "<out>.tmp.*", "<ckdir>/<patch>.reduced.h5.tmp.*" and
/// "<ckdir>/<patch>.tiles/*.tmp.*".
void removeStaleTemporaries(const std::string& out, const std::string& ckdir, const std::string& patch) {
    std::error_code ec;
    auto sweep = [&](const fs::path& dir, const std::string& prefix) {
        if (!fs::is_directory(dir, ec)) {
            return;
        }
        for (const auto& e : fs::directory_iterator(dir, ec)) {
            const std::string name = e.path().filename().string();
            if (name.rfind(prefix, 0) == 0 && name.find(".tmp.") != std::string::npos) {
                log().warn("removing a temporary left by an interrupted writer: {}", e.path().string());
                fs::remove(e.path(), ec);
            }
        }
    };
    const fs::path o(out);
    sweep(o.parent_path().empty() ? fs::path(".") : o.parent_path(), o.filename().string());
    sweep(fs::path(ckdir), fs::path(pipeline::decisionCheckpointPath(ckdir, patch)).filename().string());
    sweep(fs::path(pipeline::tileCheckpointDir(ckdir, patch)), "tile_");
}

bool outputExists(const std::string& path) {
    std::error_code ec;
    return fs::exists(path, ec);
}

/// An existing output is reusable when it opens as FITS and carries the same config hash.
bool outputIsCurrent(const std::string& path, const std::string& cfgHash) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
        return false;
    }
    try {
        io::FitsFile f(path, io::FitsFile::Mode::Read);
        f.moveToHdu(1);
        const auto h = f.readString("SCCFGHSH");
        return h && *h == cfgHash && f.findExtension("NIMAGE").has_value();
    } catch (const Error&) {
        return false;
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
        // The warps' headers, as PatchRun sees them when it opens the warps (no pixels are read).
        std::vector<std::optional<double>> sigmas;
        std::vector<bool> opened;
        std::int64_t validationReads = 0;  // input.validate_pixels: the group root scans every warp
        for (const auto& w : patch.warps) {
            try {
                const io::WarpReader reader(w.path);
                sigmas.push_back(reader.header().psfSigma);
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
        }
        pp.halo =
            trialPass ? tileHalo(cfg, pp.haloSigma) : 0;  // PatchRun::setupDetection (none in mean mode)
        const auto groupSize = static_cast<int>(pp.ranks.size());
        const geom::TilePlan tp =
            geom::planTiles(pp.box, groupSize, static_cast<int>(cfg.getInt("tile.size")), pp.halo,
                            pp.warpsOpened, plan.budgetBytes);
        pp.tileSize = tp.tileSize;
        pp.tiles = static_cast<int>(tp.tiles.size());
        pp.warpBytesRead = geom::expectedWarpBytesRead(pp.box, tp.tiles, pp.halo, pp.warpsOpened, trialPass) +
                           validationReads;
        try {
            pp.perRank = geom::patchBudget(pp.box, tp.tiles, tp.owner, pp.halo, groupSize, opened, trialPass,
                                           plan.budgetBytes, pp.name, pp.tileSize, validationReads);
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
        // 1: finished with this configuration; 2: finished with another one (refused without --restart).
        int current = 0;
        if (group.rank() == 0 && opts.resume) {
            current = outputIsCurrent(out, cfgHash) ? 1 : (outputExists(out) && !opts.restart ? 2 : 0);
        }
        parallel::broadcastFromRoot(&group, current);
        if (current == 2) {
            const std::string why =
                out +
                ": exists but was made with a different configuration (SCCFGHSH differs); "
                "rerun with --restart to redo it";
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
        if (current == 1) {
            log().debug("patch {}: {} exists with the same config; skipped (--resume)", patch.name, out);
            o.status = "skipped";
            if (group.rank() == 0) {
                pipeline::removeCheckpoints(ckpt.dir, patch.name);  // left if killed before the cleanup
                ++skipped;
                outcomes.push_back(o);
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
            log().error("patch {}: {}", patch.name, e.what());
            o.status = "failed";
            o.error = e.what();
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
            writeReport(outDir,
                        opts.shardCount > 1 ? "report.shard-" + std::to_string(opts.shardIndex) + "-of-" +
                                                  std::to_string(opts.shardCount) + ".json"
                                            : std::string("report.json"),
                        flat, perRank, wall, cfg);
        } catch (const Error& e) {
            log().error("{}", e.what());
            worst = std::max(worst, static_cast<int>(e.code()));
        }
    }
    boost::mpi::broadcast(comm.raw(), worst, 0);
    return worst;
}

}  // namespace safeclip::app
