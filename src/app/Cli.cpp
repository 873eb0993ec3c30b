#include "safeclip/app/Cli.h"

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/mpi/environment.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <tuple>

#include "safeclip/Version.h"
#include "safeclip/app/Config.h"
#include "safeclip/app/FileLists.h"
#include "safeclip/app/Ingest.h"
#include "safeclip/app/Logging.h"
#include "safeclip/app/MakeManifest.h"
#include "safeclip/app/OutputGuards.h"
#include "safeclip/app/PatchCoadd.h"
#include "safeclip/app/Qa.h"
#include "safeclip/app/RunPlan.h"
#include "safeclip/app/Runner.h"
#include "safeclip/app/Signals.h"
#include "safeclip/app/Simulator.h"
#include "safeclip/app/Validate.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/pipeline/Driver.h"

namespace safeclip::app {

namespace {

/// Config file (optional) + --set overrides + --log-level, validated.
Config loadConfig(const std::string& file, const std::vector<std::string>& sets,
                  const std::string& logLevel) {
    Config cfg = file.empty() ? Config() : Config::fromFile(file);
    for (const auto& s : sets) {
        cfg.set(s);
    }
    if (!logLevel.empty()) {
        cfg.set("log.level=\"" + logLevel + "\"");
    }
    cfg.validate();
    return cfg;
}

/// Before MPI starts: when every rank of the job is on this node (or the process runs alone, an
/// MPI singleton), Open MPI's shared-memory transport is all that is needed, and probing the
/// network transports (UCX, openib, ofi) costs ~0.2 s per process start (measured: a singleton
/// `safeclip coadd` that fails at once takes 0.31 s by default, 0.03 s with ob1/self,vader and an
/// isolated singleton). Settings the user made (OMPI_MCA_* in the environment, which is also how
/// `mpirun --mca` reaches the ranks) are kept; SAFECLIP_MPI_TUNING=0 turns this off. Multi-node
/// jobs and srun launches are left alone.
/// What tuneMpiTransport did, for a debug line once logging is set up.
std::string g_mpiTransport = "not chosen";

void tuneMpiTransport() {
    const char* off = std::getenv("SAFECLIP_MPI_TUNING");
    if (off != nullptr && std::string(off) == "0") {
        g_mpiTransport = "left to Open MPI (SAFECLIP_MPI_TUNING=0)";
        return;
    }
    const char* worldSize = std::getenv("OMPI_COMM_WORLD_SIZE");
    const char* localSize = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    // Not started by Open MPI's mpirun: a singleton unless another launcher (srun's PMI/PMIx)
    // started it. (SLURM_PROCID alone is also set in a batch script's own shell.)
    const bool launchedByOtherPmi = std::getenv("PMIX_RANK") != nullptr || std::getenv("PMI_RANK") != nullptr;
    const bool singleton = worldSize == nullptr && !launchedByOtherPmi;
    const bool oneNode = worldSize != nullptr && localSize != nullptr && std::string(worldSize) == localSize;
    if (!singleton && !oneNode) {
        g_mpiTransport = "left to Open MPI (ranks on several nodes, or another launcher)";
        return;
    }
    ::setenv("OMPI_MCA_pml", "ob1", 0);
    ::setenv("OMPI_MCA_btl", "self,vader", 0);
    if (singleton) {
        ::setenv("OMPI_MCA_ess_singleton_isolated", "1", 0);
    }
    g_mpiTransport = std::string(singleton ? "singleton" : "one node") + ": pml " +
                     std::getenv("OMPI_MCA_pml") + ", btl " + std::getenv("OMPI_MCA_btl");
}

/// Each warp holds up to two open files (cfitsio's and the direct reader's), so a patch of many
/// warps can need more descriptors than the usual soft limit of 1024: raise the soft limit to the
/// hard one. Returns a line for the debug log.
std::string raiseOpenFileLimit() {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        return "open-file limit unknown";
    }
    if (lim.rlim_cur < lim.rlim_max) {
        const rlim_t before = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &lim) == 0) {
            return "open-file limit raised from " + std::to_string(before) + " to " +
                   std::to_string(lim.rlim_max);
        }
        return "open-file limit " + std::to_string(before) + " (could not raise it)";
    }
    return "open-file limit " + std::to_string(lim.rlim_cur);
}

/// Before any work: `coadd -o OUT` must not be, nor replace, one of its warps (exit 2), and replaces
/// an existing file only with --overwrite (exit 2 otherwise).
void checkCoaddOutput(const std::string& out, const std::vector<std::string>& warpPaths, bool overwrite) {
    std::error_code ec;
    if (std::filesystem::is_directory(out, ec)) {
        throw OutputError(out + ": output path is a directory");
    }
    const auto [o, in] = outputReplacingInput({out}, warpPaths);
    if (!o.empty()) {
        throw ConfigError(out + ": output would replace the input warp " + in + " (give another -o)");
    }
    if (!overwrite &&
        std::filesystem::symlink_status(out, ec).type() != std::filesystem::file_type::not_found && !ec) {
        throw ConfigError(out + ": output exists; give --overwrite to replace it");
    }
    // Its directory must exist and take a new file now, not after all the computing (exit 4).
    const std::filesystem::path parent = std::filesystem::path(out).parent_path();
    const std::string dir = parent.empty() ? std::string(".") : parent.string();
    if (!std::filesystem::is_directory(dir, ec)) {
        throw OutputError(out + ": cannot create: " + dir +
                          (std::filesystem::exists(dir, ec) ? " is not a directory" : " does not exist"));
    }
    if (::access(dir.c_str(), W_OK) != 0) {
        throw OutputError(out + ": cannot create: " + dir + ": " + std::strerror(errno));
    }
}

int cmdCoadd(const std::string& out, bool overwrite, const std::string& configFile,
             const std::vector<std::string>& sets, const std::string& logLevel,
             const std::vector<std::string>& warpPaths) {
    // Under mpirun the ranks share the patch's tiles; run alone it is a one-rank group.
    tuneMpiTransport();
    boost::mpi::environment env(boost::mpi::threading::single, /*abort_on_exception=*/true);
    const parallel::Comm world;
    Config cfg;
    int code = 0;
    try {
        cfg = loadConfig(configFile, sets, logLevel);
        initLogging(world.rank(), cfg.getString("log.level"));
        log().debug("MPI transport: {}; {}", g_mpiTransport, raiseOpenFileLimit());
        checkCoaddOutput(out, warpPaths, overwrite);
    } catch (const Error& e) {
        initLogging(world.rank(), "info");
        if (world.rank() == 0) {
            log().error("{}", e.what());
        }
        code = static_cast<int>(e.code());
    }
    if (!world.agree(code == 0)) {
        return static_cast<int>(world.max(code));
    }
    std::vector<WarpInput> warps;
    warps.reserve(warpPaths.size());
    for (const auto& p : warpPaths) {
        warps.push_back(WarpInput{-1, p});
    }
    const std::string name = std::filesystem::path(out).stem().string();
    try {
        const PatchResult r = coaddPatch(name, kernel::Box{}, warps, cfg, out, &world);
        if (world.rank() == 0) {
            log().info(
                "coadd: {} of {} warps used, {} footprints, {} clipped ({} big), {} CLIPPED warp pixels, {} "
                "CLIPPED coadd pixels, {} tiles of {} px on {} ranks, {:.2f} s -> {}",
                r.nUsed, r.nWarps, r.nFootprints, r.nClippedFootprints, r.nBigFootprints,
                r.nClippedWarpPixels, r.nCoaddClippedPixels, r.nTiles, r.tileSize, world.size(), r.seconds,
                out);
        }
    } catch (const Error& e) {
        log().error("{}", e.what());
        code = static_cast<int>(e.code());
    }
    return static_cast<int>(world.max(code));
}

int cmdRun(const std::string& configFile, const std::vector<std::string>& sets, const std::string& logLevel,
           const RunOptions& opts) {
    tuneMpiTransport();
    boost::mpi::environment env(boost::mpi::threading::single, /*abort_on_exception=*/true);
    parallel::Comm comm;
    int code = 0;
    Config cfg;
    try {
        cfg = loadConfig(configFile, sets, logLevel);
        initLogging(comm.rank(), cfg.getString("log.level"));
        log().debug("MPI transport: {}; {}", g_mpiTransport, raiseOpenFileLimit());
    } catch (const Error& e) {
        initLogging(comm.rank(), "info");
        if (comm.rank() == 0) {
            log().error("{}", e.what());
        }
        code = static_cast<int>(e.code());
    }
    if (!comm.agree(code == 0)) {
        return code != 0 ? code : static_cast<int>(ExitCode::Config);
    }
    return runManifest(cfg, opts, comm);
}

/// Default QA picture name: COADD.fits -> COADD.qa.png (next to the coadd).
std::string defaultQaPath(const std::string& coadd) {
    std::filesystem::path p(coadd);
    if (p.extension() == ".fits" || p.extension() == ".fit" || p.extension() == ".fz") {
        p.replace_extension();
    }
    return p.string() + ".qa.png";
}

int cmdQa(const std::vector<std::string>& coadds, const std::string& out) {
    if (!out.empty() && coadds.size() != 1) {
        throw ConfigError("qa: -o/--output needs exactly one coadd (got " + std::to_string(coadds.size()) +
                          ")");
    }
    for (const std::string& c : coadds) {
        const std::string png = out.empty() ? defaultQaPath(c) : out;
        writeQaPng(c, png);
        log().info("qa: {} -> {}", c, png);
    }
    return 0;
}

/// `validate WARP...` (one patch, common box) or `validate CONFIG.toml` (every patch of its
/// manifest, each against its box). Prints the problem table on stdout; exit 3 on any error.
int cmdValidate(const std::string& configFile, const std::vector<std::string>& sets,
                const std::string& logLevel, const std::vector<std::string>& args) {
    std::vector<WarpProblem> problems;
    std::size_t nFiles = 0;
    const bool fromConfig = args.size() == 1 && std::filesystem::path(args[0]).extension() == ".toml";
    if (fromConfig && !configFile.empty()) {
        throw ConfigError("validate: give the config either as --config or as the argument, not both");
    }
    Config cfg = loadConfig(fromConfig ? args[0] : configFile, sets, logLevel);
    initLogging(0, cfg.getString("log.level"));
    // What the coadd of this config needs of each warp (its PSF width; see pipeline::psfSigmaNeed).
    const std::string mode = cfg.getString("coadd.mode");
    const double psfSigma = cfg.getDouble("detect.psf_sigma");
    if (fromConfig) {
        if (cfg.getString("input.manifest").empty()) {
            throw ConfigError(args[0] + ": input.manifest is not set");
        }
        const io::Manifest m = io::readManifest(cfg.path("input.manifest"));
        for (const io::ManifestPatch& p : m.patches) {
            std::vector<std::string> paths;
            std::vector<bool> zeroPointGiven;
            std::vector<std::string> psfNeeds;
            for (const io::ManifestWarp& w : p.warps) {
                paths.push_back(w.path);
                zeroPointGiven.push_back(w.zeroPoint.has_value());
                psfNeeds.push_back(pipeline::psfSigmaNeed(mode, psfSigma, !w.psfMatched.empty()));
            }
            nFiles += paths.size();
            auto pp = validateWarps(paths, &p.box, true, cfg.getBool("input.allow_mixed_filters"),
                                    &zeroPointGiven, &psfNeeds);
            problems.insert(problems.end(), pp.begin(), pp.end());
            if (mode == "comparewarp") {  // the PSF-matched companions the run reads
                for (const io::ManifestWarp& w : p.warps) {
                    if (w.psfMatched.empty()) {
                        continue;
                    }
                    ++nFiles;
                    try {
                        const io::WarpReader c(w.psfMatched);
                        const io::WarpReader d(w.path);
                        if (c.header().box != d.header().box) {
                            problems.push_back({w.psfMatched, "PSF-matched companion of " + w.path +
                                                                  " has the box " + c.header().box.str() +
                                                                  ", the warp " + d.header().box.str()});
                        } else if (!c.header().psfSigma) {
                            problems.push_back(
                                {w.psfMatched, "no PSF width on the PSF-matched companion of " + w.path +
                                                   " (PSFSIGMA: the model PSF sigma)"});
                        }
                    } catch (const Error& e) {
                        problems.push_back({w.psfMatched, "PSF-matched companion of " + w.path + ": " +
                                                              std::string(e.what())});
                    }
                }
            }
        }
    } else {
        nFiles = args.size();
        const std::vector<std::string> psfNeeds(args.size(), pipeline::psfSigmaNeed(mode, psfSigma, false));
        problems =
            validateWarps(args, nullptr, true, cfg.getBool("input.allow_mixed_filters"), nullptr, &psfNeeds);
    }
    std::cout << formatProblems(problems) << std::flush;
    const auto nErrors =
        std::count_if(problems.begin(), problems.end(), [](const WarpProblem& p) { return p.fatal; });
    const auto nWarnings = static_cast<std::ptrdiff_t>(problems.size()) - nErrors;
    if (nErrors > 0) {
        log().error("validate: {} problem(s) in {} warp(s) ({} error(s), {} warning(s))", problems.size(),
                    nFiles, nErrors, nWarnings);
        return static_cast<int>(ExitCode::Input);
    }
    log().info("validate: {} warp(s) OK ({} warning(s))", nFiles, nWarnings);
    return 0;
}

std::pair<int, int> parseSize(const std::string& s) {
    int w = 0;
    int h = 0;
    char x = 0;
    char extra = 0;
    if (std::sscanf(s.c_str(), "%d%c%d%c", &w, &x, &h, &extra) != 3 || (x != 'x' && x != 'X') || w < 16 ||
        h < 16) {
        throw ConfigError("--size: '" + s + "' must be WxH with W, H >= 16 (e.g. 512x512)");
    }
    return {w, h};
}

/// "LO:HI" of --psf-sigma (two numbers; the range itself is checked by simulate()).
std::pair<double, double> parseRange(const std::string& s, const std::string& option) {
    double lo = 0;
    double hi = 0;
    char sep = 0;
    char extra = 0;
    if (std::sscanf(s.c_str(), "%lf%c%lf%c", &lo, &sep, &hi, &extra) != 3 || sep != ':') {
        throw ConfigError(option + ": '" + s + "' must be LO:HI (e.g. 1.0:2.6)");
    }
    return {lo, hi};
}

constexpr const char* kFilesFromHelp =
    "read more input paths from this file, one per line ('#' comments; '-' = standard input)";

}  // namespace

int runCli(int argc, char** argv) {
    CLI::App app{
        "safeclip " + std::string(kVersion) +
        ": SafeClip coadds of astronomical warps (LSST SafeClipAssembleCoaddTask), at HPC scale with MPI"};
    app.set_version_flag("--version", std::string("safeclip ") + kVersion + " (git " + kGitRevision + ")");
    app.require_subcommand(1);
    app.fallthrough();  // global options (--log-level) may follow the subcommand
    std::string logLevel;
    app.add_option("--log-level", logLevel, "trace|debug|info|warn|error|off (overrides log.level)");

    // coadd
    auto* coadd =
        app.add_subcommand("coadd", "SafeClip coadd of one patch; the patch box is the warps' common box");
    std::string coaddOut;
    std::string coaddConfig;
    std::vector<std::string> coaddSets;
    std::vector<std::string> coaddWarps;
    coadd->add_option("-o,--output", coaddOut, "output coadd FITS (written atomically)")->required();
    bool coaddOverwrite = false;
    coadd->add_flag("--overwrite", coaddOverwrite,
                    "replace OUT when it exists (never allowed when OUT is one of the warps)");
    coadd->add_option("--config", coaddConfig, "TOML config file (see `safeclip config`)");
    coadd->add_option("--set", coaddSets, "override a config key: key=value (repeatable)")
        ->allow_extra_args(false);
    std::string coaddFilesFrom;
    coadd->add_option("warps", coaddWarps,
                      "input warp FITS files (afw Exposure layout); @LIST reads paths from LIST");
    coadd->add_option("--files-from", coaddFilesFrom, kFilesFromHelp);
    coadd->footer("Set coadd.mode=mean for a plain weighted mean without clipping.");

    // run
    auto* run =
        app.add_subcommand("run", "coadd every patch of a manifest; launch with mpirun -n R for R ranks");
    std::string runConfig;
    std::vector<std::string> runSets;
    RunOptions runOpts;
    run->add_option("config", runConfig, "TOML config file with input.manifest and output.dir")->required();
    run->add_option("--set", runSets, "override a config key: key=value (repeatable)")
        ->allow_extra_args(false);
    run->footer(
        "Exit codes: 0 ok, 2 config/manifest (or an output that is an input), 3 input warp, 4 output (or "
        "output.dir locked by another run), 5 internal, 75 stopped by SIGTERM/SIGUSR1/SIGINT (rerun with "
        "--resume). Checkpoints: checkpoint.dir (default <output.dir>/checkpoints).");
    std::string runShard;
    run->add_option("--shard", runShard, "K/N: only patches whose manifest index i has i % N == K (0-based)");
    run->add_flag("--restart", runOpts.restart,
                  "discard outputs and checkpoints made with another configuration or input list");
    run->add_flag(
        "--resume", runOpts.resume,
        "skip finished patches (output made with the same configuration) and reload the checkpoints of "
        "unfinished ones");

    // simulate
    auto* sim =
        app.add_subcommand("simulate", "write seeded synthetic warps with known truth and a manifest");
    SimulateOptions simOpts;
    std::string simSize = "256x256";
    std::string simPsf = "1.3:2.2";
    sim->add_option("--out", simOpts.outDir, "output directory")->required();
    sim->add_option("--warps", simOpts.warps, "warps per patch")->check(CLI::Range(1, 1000));
    sim->add_option("--size", simSize, "patch size WxH in pixels");
    sim->add_option("--patches", simOpts.patches, "number of patches")->check(CLI::Range(1, 10000));
    sim->add_option("--seed", simOpts.seed, "random seed");
    sim->add_option("--cosmic-rays", simOpts.cosmicRayRate,
                    "cosmic rays per million pixels per warp, all kinds (0: none; hits and clusters are at "
                    "least one per warp when their rate is > 0)")
        ->check(CLI::Range(0.0, 1e5))
        ->capture_default_str();
    sim->add_option("--cr-track-fraction", simOpts.cosmicRayTrackFraction,
                    "fraction of the cosmic rays that are 5-40 px tracks at random angles (Poisson count); "
                    "the rest are single-pixel hits and 2-4 px clusters")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    sim->add_option("--psf-sigma", simPsf,
                    "range LO:HI (px) of the warps' Gaussian PSF sigmas, drawn uniformly per warp; "
                    "0.3 <= LO <= HI <= 20 (e.g. 1.0:2.6 for very different seeing)")
        ->capture_default_str();

    // ingest
    auto* ing =
        app.add_subcommand("ingest",
                           "turn single-HDU exposures already on one grid into afw-layout warps (variance, "
                           "masks, DETECTED, zero point)");
    IngestOptions ingOpts;
    double ingFwhm = 0;
    double ingZp = 0;
    ing->add_option("--out", ingOpts.outDir, "output directory")->required();
    std::string ingFilesFrom;
    ing->add_option("files", ingOpts.files, "input FITS images (primary HDU); @LIST reads paths from LIST");
    ing->add_option("--files-from", ingFilesFrom, kFilesFromHelp);
    ing->add_option("--threshold", ingOpts.detectThreshold, "DETECTED threshold in sigma (default 5)");
    ing->add_option("--fwhm", ingFwhm, "PSF FWHM in pixels for every file (default: FWHM header card)");
    ing->add_option("--zero-point", ingZp, "AB zero point for every file (default: --zero-point-key card)");
    ing->add_option("--zero-point-key", ingOpts.zeroPointKey,
                    "header card with the zero point (default MAGZERO)");
    std::int64_t ingFirstVisit = 0;
    ing->add_option("--first-visit", ingFirstVisit,
                    "number the visits N, N+1, ... in input order (default: each file's EXPNUM or VISIT "
                    "card, else 0, 1, ...)");
    ing->add_option("--visit-key", ingOpts.visitKey,
                    "integer header card holding the visit id (default: EXPNUM, "
                    "then VISIT)");
    bool ingNoCr = false;
    ing->add_flag("--no-cosmic-rays", ingNoCr,
                  "do not find and interpolate cosmic rays (default: on, as LSST's RepairTask; the warps "
                  "get CR and INTRP planes and NCR/NCRPIX cards)");
    ing->add_option("--cr-min-sigma", ingOpts.cosmicRays.minSigma,
                    "cosmic rays: minSigma, threshold in sigma of the pixel above its neighbours")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    ing->add_option("--cr-max-pixels", ingOpts.cosmicRays.nCrPixelMax,
                    "cosmic rays: nCrPixelMax, more CR pixels in a frame is an error naming the file")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();

    // qa
    auto* qa = app.add_subcommand(
        "qa",
        "write a QA picture (PNG) per coadd: image with CLIPPED outlined and NO_DATA hatched, NIMAGE, "
        "per-warp clipped pixel counts");
    std::vector<std::string> qaCoadds;
    std::string qaOut;
    std::string qaFilesFrom;
    qa->add_option("coadds", qaCoadds, "coadd FITS files written by safeclip; @LIST reads paths from LIST");
    qa->add_option("--files-from", qaFilesFrom, kFilesFromHelp);
    qa->add_option("-o,--output", qaOut, "output PNG (one coadd only; default COADD.qa.png next to it)");

    // validate
    auto* val = app.add_subcommand(
        "validate",
        "check warps (HDUs, boxes, WCS, zero point, mask planes, variance, NaN) and list every problem; "
        "exit 3 if any error");
    std::string valConfig;
    std::vector<std::string> valSets;
    std::vector<std::string> valArgs;
    val->add_option("--config", valConfig, "TOML config file (validated too)");
    val->add_option("--set", valSets, "override a config key: key=value (repeatable)")
        ->allow_extra_args(false);
    std::string valFilesFrom;
    val->add_option("inputs", valArgs,
                    "warp FITS files of one patch (@LIST reads paths from LIST), or one CONFIG.toml: every "
                    "warp of its input.manifest");
    val->add_option("--files-from", valFilesFrom, kFilesFromHelp);
    val->footer("Prints one line per problem (file, severity, problem). Warnings alone exit 0.");

    // manifest
    auto* manCmd = app.add_subcommand(
        "manifest",
        "write a manifest for `run` from warps or directories of warps, grouped by box into patches");
    MakeManifestOptions manOpts;
    std::string manFilesFrom;
    manCmd->add_option("--out", manOpts.out, "manifest to write (JSON, atomically)")->required();
    manCmd->add_flag("--overwrite", manOpts.overwrite, "replace --out when it exists");
    manCmd->add_option("--name-key", manOpts.nameKey,
                       "primary header card naming each patch (default: x<x0>_y<y0> from its box)");
    manCmd->add_option("inputs", manOpts.inputs,
                       "warp files or directories of them (*.fits, *.fits.fz); @LIST reads paths from LIST");
    manCmd->add_option("--files-from", manFilesFrom, kFilesFromHelp);

    // plan
    auto* planCmd =
        app.add_subcommand("plan", "print the work plan of `run` for R ranks (groups, tiles, memory, reads)");
    std::string planConfig;
    std::vector<std::string> planSets;
    int planRanks = 1;
    planCmd->add_option("config", planConfig, "TOML config file with input.manifest")->required();
    planCmd->add_option("-n,--ranks", planRanks, "number of MPI ranks")->check(CLI::Range(1, 1000000));
    planCmd->add_option("--set", planSets, "override a config key: key=value (repeatable)")
        ->allow_extra_args(false);
    bool planJsonOut = false;
    std::string planShard;
    planCmd->add_flag("--json", planJsonOut,
                      "print the plan as JSON (per patch: box, group, tiles, halo, chunk rows, expected warp "
                      "bytes read, memory per rank; per rank: tiles, memory, expected reads)");
    planCmd->add_option("--shard", planShard,
                        "K/N: the plan of `run --shard K/N` (patches i with i % N == K)");

    // config
    auto* cfgCmd =
        app.add_subcommand("config", "print every configuration key with its default and meaning (TOML)");

    // A file-size limit (ulimit -f) must make writes fail with EFBIG, which the writers report
    // (exit 4, temporary removed), instead of killing the process with a half-written file.
    std::signal(SIGXFSZ, SIG_IGN);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : static_cast<int>(ExitCode::Usage);
    }

    try {
        if (*coadd) {
            // SIGTERM/SIGUSR1/SIGINT: exit 75, temporaries removed, as `run` (coadd has no --resume)
            installStopSignals(parallel::AfterStop::Rerun);
            return cmdCoadd(coaddOut, coaddOverwrite, coaddConfig, coaddSets, logLevel,
                            expandFileLists(coaddWarps, coaddFilesFrom));
        }
        if (*run) {
            if (!runShard.empty()) {
                std::tie(runOpts.shardIndex, runOpts.shardCount) = parseShard(runShard);
            }
            installStopSignals();
            return cmdRun(runConfig, runSets, logLevel, runOpts);
        }
        if (*val) {
            return cmdValidate(valConfig, valSets, logLevel, expandFileLists(valArgs, valFilesFrom));
        }
        initLogging(0, logLevel.empty() ? "info" : logLevel);
        if (*sim) {
            const auto [w, h] = parseSize(simSize);
            simOpts.width = w;
            simOpts.height = h;
            std::tie(simOpts.psfSigmaMin, simOpts.psfSigmaMax) = parseRange(simPsf, "--psf-sigma");
            simulate(simOpts);
            log().info("simulate: {} patches x {} warps of {}x{} written to {}", simOpts.patches,
                       simOpts.warps, w, h, simOpts.outDir);
            return 0;
        }
        if (*ing) {
            if (ing->count("--first-visit") > 0) {
                ingOpts.firstVisit = ingFirstVisit;
            }
            if (ing->count("--fwhm") > 0) {
                ingOpts.psfFwhm = ingFwhm;
            }
            if (ing->count("--zero-point") > 0) {
                ingOpts.zeroPoint = ingZp;
            }
            ingOpts.detectCosmicRays = !ingNoCr;
            ingOpts.files = expandFileLists(ingOpts.files, ingFilesFrom);
            ingest(ingOpts);
            return 0;
        }
        if (*qa) {
            return cmdQa(expandFileLists(qaCoadds, qaFilesFrom), qaOut);
        }
        if (*manCmd) {
            manOpts.inputs = expandFileLists(manOpts.inputs, manFilesFrom);
            const ManifestSummary summary = makeManifest(manOpts);
            for (const std::string& line : summary.lines) {
                std::cout << line << "\n";
            }
            log().info("manifest: {} patch(es), {} warp(s) -> {}", summary.lines.size(), summary.nWarps,
                       manOpts.out);
            return 0;
        }
        if (*planCmd) {
            int shardIndex = 0;
            int shardCount = 1;
            if (!planShard.empty()) {
                std::tie(shardIndex, shardCount) = parseShard(planShard);
            }
            const RunPlan plan =
                makePlan(loadConfig(planConfig, planSets, logLevel), planRanks, shardIndex, shardCount);
            std::cout << (planJsonOut ? planJson(plan) : planText(plan));
            // A patch `run` would refuse (budget too small, no PSF sigma) makes the plan fail too.
            const bool fits = std::all_of(plan.patches.begin(), plan.patches.end(),
                                          [](const PatchPlan& p) { return p.error.empty(); });
            return fits ? 0 : static_cast<int>(ExitCode::Config);
        }
        if (*cfgCmd) {
            std::cout << describeConfig();
            return 0;
        }
    } catch (const Error& e) {
        log().error("{}", e.what());
        return static_cast<int>(e.code());
    } catch (const std::exception& e) {
        log().error("internal error: {}", e.what());
        return static_cast<int>(ExitCode::Internal);
    }
    return 0;
}

}  // namespace safeclip::app
