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
#include <sstream>
#include <nlohmann/json.hpp>

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
void writeReport(const std::string& outDir, const std::string& fileName, const std::vector<PatchOutcome>& outcomes,
                 const std::vector<std::pair<double, std::pair<std::int64_t, std::int64_t>>>& perRank, double wall,
                 const Config& cfg) {
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
    sweep(fs::path(ckdir), patch + ".reduced.h5");
    sweep(fs::path(ckdir) / (patch + ".tiles"), "tile_");
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

std::string describePlan(const Config& cfg, int nRanks) {
    if (nRanks < 1) {
        throw ConfigError("plan: -n must be >= 1");
    }
    const std::string manifestPath = cfg.path("input.manifest");
    if (manifestPath.empty()) {
        throw ConfigError("input.manifest is not set (give it in the config or with --set input.manifest=FILE)");
    }
    const io::Manifest manifest = io::readManifest(manifestPath);
    const std::int64_t budget = geom::parseByteSize(cfg.getString("memory.max_per_rank"), "memory.max_per_rank");
    std::vector<double> costs;
    for (const auto& p : manifest.patches) {
        costs.push_back(static_cast<double>(p.box.area()) *
                        static_cast<double>(std::max<std::size_t>(1, p.warps.size())));
    }
    const geom::GroupPlan groups = geom::planGroups(costs, nRanks);
    std::ostringstream os;
    os << "plan: " << manifest.patches.size() << " patches on " << nRanks << " ranks in " << groups.nGroups
       << " groups; memory.max_per_rank = " << geom::formatByteSize(budget) << "\n";
    std::vector<std::int64_t> tilesOfRank(static_cast<std::size_t>(nRanks), 0);
    std::vector<std::int64_t> memOfRank(static_cast<std::size_t>(nRanks), 0);
    std::vector<std::int64_t> readsOfRank(static_cast<std::size_t>(nRanks), 0);
    for (std::size_t p = 0; p < manifest.patches.size(); ++p) {
        const auto& patch = manifest.patches[p];
        const int g = groups.groupOfPatch[p];
        std::vector<int> ranks;
        for (int r = 0; r < nRanks; ++r) {
            if (groups.groupOfRank[static_cast<std::size_t>(r)] == g) {
                ranks.push_back(r);
            }
        }
        kernel::DetectControl dc;
        dc.psfSigma = cfg.getDouble("detect.psf_sigma");
        if (dc.psfSigma <= 0 && !patch.warps.empty()) {
            try {
                dc.psfSigma = io::WarpReader(patch.warps.front().path).header().psfSigma.value_or(2.0);
            } catch (const Error&) {
                dc.psfSigma = 2.0;
            }
        }
        dc.nSigmaToGrow = cfg.getDouble("detect.n_sigma_to_grow");
        dc.minPixels = static_cast<int>(cfg.getInt("detect.min_pixels"));
        dc.nSigmaForKernel = cfg.getDouble("detect.n_sigma_for_kernel");
        const int halo = detectionHalo(dc);
        const geom::TilePlan tp = geom::planTiles(patch.box, static_cast<int>(ranks.size()),
                                                  static_cast<int>(cfg.getInt("tile.size")), halo,
                                                  static_cast<int>(patch.warps.size()), budget);
        std::int64_t haloArea = 0;
        for (const kernel::Box& t : tp.tiles) {
            haloArea += t.grown(halo).intersect(patch.box).area();
        }
        const double readFactor = static_cast<double>(haloArea) / static_cast<double>(patch.box.area());
        os << "patch " << patch.name << ": " << patch.box.width << "x" << patch.box.height << ", "
           << patch.warps.size() << " warps, group " << g << " (ranks";
        for (int r : ranks) {
            os << " " << r;
        }
        os << "), " << tp.tiles.size() << " tiles of " << tp.tileSize << " px, halo " << halo
           << " px; reads per warp: VARIANCE+MASK once, all planes " << std::fixed << std::setprecision(2)
           << 1.0 + readFactor << "x\n";
        for (std::size_t t = 0; t < tp.tiles.size(); ++t) {
            const int r = ranks[static_cast<std::size_t>(tp.owner[t])];
            tilesOfRank[static_cast<std::size_t>(r)] += 1;
        }
        for (int r : ranks) {
            memOfRank[static_cast<std::size_t>(r)] = budget;
            readsOfRank[static_cast<std::size_t>(r)] +=
                static_cast<std::int64_t>(static_cast<double>(patch.box.area() * 12) *
                                          static_cast<double>(patch.warps.size()) * (1.0 + readFactor) /
                                          static_cast<double>(ranks.size()));
        }
    }
    for (int r = 0; r < nRanks; ++r) {
        os << "rank " << r << ": " << tilesOfRank[static_cast<std::size_t>(r)]
           << " tiles, memory <= " << geom::formatByteSize(memOfRank[static_cast<std::size_t>(r)])
           << " + overhead, reads about " << geom::formatByteSize(readsOfRank[static_cast<std::size_t>(r)]) << "\n";
    }
    return os.str();
}

std::pair<int, int> parseShard(const std::string& text) {
    int k = -1;
    int n = 0;
    char slash = 0;
    char extra = 0;
    if (std::sscanf(text.c_str(), "%d%c%d%c", &k, &slash, &n, &extra) != 3 || slash != '/' || n < 1 || k < 0 ||
        k >= n) {
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
    CheckpointOptions ckpt{checkpointDir, opts.resume, opts.restart, cfg.getDouble("checkpoint.tile_interval")};

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
        log().info("run: {} patches on {} ranks in {} groups; output {}", manifest.patches.size(), comm.size(),
                   plan.nGroups, outDir);
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
            const std::string why = out + ": exists but was made with a different configuration (SCCFGHSH differs); "
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
            const PatchResult r = coaddPatch(patch.name, patch.box, warps, cfg, out, &group, ckpt);
            done += group.rank() == 0 ? 1 : 0;
            o = r;
            o.index = static_cast<std::int64_t>(p);
            o.rank = comm.rank();
            o.status = "done";
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
            log().info("progress: group {}: {}/{} patches ({} in the run), {:.2f} patches/min, ETA {:.0f} s", color,
                       handled, mine, manifest.patches.size(), rate * 60.0,
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
    const auto perRank = parallel::gatherToRoot(&comm, std::make_pair(seconds, std::make_pair(peakRssBytes(), io::warpBytesRead())));
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
    int worst = static_cast<int>(comm.max(code));
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
