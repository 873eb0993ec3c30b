#include "safeclip/app/PatchCoadd.h"

#include <algorithm>
#include <bit>
#include <boost/mpi/environment.hpp>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "safeclip/Version.h"
#include "safeclip/app/Logging.h"
#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/app/Qa.h"
#include "safeclip/app/Signals.h"
#include "safeclip/app/Validate.h"
#include "safeclip/io/Checkpoint.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/ClipDecision.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/Interp.h"
#include "safeclip/kernel/MaskDict.h"
#include "safeclip/kernel/SampleStats.h"
#include "safeclip/kernel/SpanSet.h"
#include "safeclip/kernel/Stack.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/TileGather.h"

namespace boost::serialization {

template <class Archive>
void serialize(Archive& ar, safeclip::io::WarpState& w, const unsigned int /*version*/) {
    ar & w.visit & w.scale & w.weight & w.used & w.status & w.nClippedPixels & w.nBigFootprints & w.checksum &
        w.clipped;
}

template <class Archive>
void serialize(Archive& ar, safeclip::io::PatchState& s, const unsigned int /*version*/) {
    ar & s.stage & s.warps & s.nFootprints & s.nClippedFootprints & s.psfSigma & s.psfSource & s.fpId & s.fpX0 &
        s.fpY0 & s.fpX1 & s.fpY1 & s.fpArea & s.fpRule & s.fpReason & s.fpClipped & s.cdFootprint & s.cdVisit &
        s.cdDet & s.cdIgn & s.cdClipped & s.cdFraction;
}

}  // namespace boost::serialization

namespace safeclip::app {

using kernel::Box;
using kernel::MaskedImage;
using kernel::MaskPixel;
using kernel::SpanSet;

/// The keys that change pixels, as "key = value" lines in schema order. Execution keys (memory,
/// tiles, logging, paths, bad-warp policy) are left out so that the coadd's bytes do not depend
/// on them (determinism across budgets, tile sizes and rank counts).
std::vector<std::string> scienceConfig(const Config& cfg) {
    static const char* const kExecution[] = {"input.manifest", "output.", "checkpoint.", "qa.",
                                             "tile.",          "memory.", "log."};
    std::vector<std::string> lines;
    for (const KeyDef& k : configSchema()) {
        bool skip = false;
        for (const char* prefix : kExecution) {
            skip = skip || k.name.rfind(prefix, 0) == 0;
        }
        if (skip) {
            continue;
        }
        std::string v;
        char buf[64];
        switch (k.type) {
            case KeyType::Bool:
                v = cfg.getBool(k.name) ? "true" : "false";
                break;
            case KeyType::Int:
                v = std::to_string(cfg.getInt(k.name));
                break;
            case KeyType::Double:
                std::snprintf(buf, sizeof buf, "%.17g", cfg.getDouble(k.name));
                v = buf;
                break;
            case KeyType::String:
                v = "\"" + cfg.getString(k.name) + "\"";
                break;
            case KeyType::StringList:
                for (const auto& e : cfg.getStringList(k.name)) {
                    v += (v.empty() ? "" : ", ") + ("\"" + e + "\"");
                }
                v = "[" + v + "]";
                break;
            case KeyType::DoubleTable:
                for (const auto& [name, d] : cfg.getDoubleTable(k.name)) {
                    std::snprintf(buf, sizeof buf, "%.17g", d);
                    v += (v.empty() ? "" : ", ") + name + " = " + buf;
                }
                v = "{" + v + "}";
                break;
        }
        lines.push_back(k.name + " = " + v);
    }
    return lines;
}

namespace {
/// FNV-1a 64 of the lines, as 16 hex digits.
std::string hashLines(const std::vector<std::string>& lines) {
    std::uint64_t h = 14695981039346656037ULL;
    for (const auto& line : lines) {
        for (const char c : line + "\n") {
            h ^= static_cast<unsigned char>(c);
            h *= 1099511628211ULL;
        }
    }
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

}  // namespace

std::string scienceConfigHash(const Config& cfg) {
    return hashLines(scienceConfig(cfg));
}

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// One input warp and everything learnt about it.
struct Warp {
    WarpInput input;
    std::int64_t visit = -1;
    std::unique_ptr<io::WarpReader> reader;
    float scale = 1.0F;   ///< s_i (float32, as upstream)
    float weight = 0.0F;  ///< w_i
    bool used = false;
    std::string status;           ///< "used" or "skipped: reason"
    kernel::WarpMaskSpans spans;  ///< bad / DETECTED spans from pass 1 (raw mask)
    SpanSet clipped;              ///< CLIPPED_i (footprints + big footprints)
    std::int64_t nClippedPixels = 0;
    std::int64_t nBigFootprints = 0;
    std::int64_t nUsedPixels = 0;  ///< pixels this warp contributed to the final stack
    std::string checksum;          ///< "crc32:..." of the file
};

/// Mask bits of the canonical dictionary used by the pipeline.
struct Bits {
    MaskPixel bad = 0;  ///< B (stack.bad_mask_planes)
    MaskPixel det = 0;  ///< DETECTED | DETECTED_NEGATIVE
    MaskPixel clipped = 0;
    MaskPixel rejected = 0;
    MaskPixel sensorEdge = 0;
    MaskPixel inexactPsf = 0;
    MaskPixel noData = 0;
    MaskPixel edge = 0;
    MaskPixel intrp = 0;
    MaskPixel remove = 0;  ///< stack.remove_mask_planes
};

/// One warp's weight measurement (by the rank that read it), all-gathered.
struct WeightMeasure {
    std::int64_t index = 0;
    float weight = 0;
    std::string status;
    std::string checksum;

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar & index & weight & status & checksum;
    }
};

/// A footprint's part inside one tile, with its per-warp counts (additive over the parts).
struct Piece {
    std::vector<kernel::Span> spans;
    std::vector<std::int64_t> ign;  ///< per used warp
    std::vector<std::int64_t> det;  ///< per used warp

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar & spans & ign & det;
    }
};

/// Spans of `s` in rows [y0, y1) (binary search on the sorted spans; no full scan).
SpanSet restrictRows(const SpanSet& s, int y0, int y1) {
    const auto& sp = s.spans();
    auto lo =
        std::lower_bound(sp.begin(), sp.end(), y0, [](const kernel::Span& a, int y) { return a.y < y; });
    auto hi = std::lower_bound(lo, sp.end(), y1, [](const kernel::Span& a, int y) { return a.y < y; });
    return SpanSet::fromSortedSpans(std::vector<kernel::Span>(lo, hi));
}

std::string joinVisits(const std::vector<Warp*>& warps) {
    std::string out;
    for (const Warp* w : warps) {
        if (!out.empty()) {
            out += ",";
        }
        out += std::to_string(w->visit);
    }
    return out;
}

/// Copy of `box` out of a larger image.
template <typename T>
kernel::Image<T> cutout(const kernel::Image<T>& src, const Box& box) {
    kernel::Image<T> out(box);
    for (int y = box.y0; y < box.y1(); ++y) {
        std::copy_n(&src(box.x0, y), box.width, out.row(y));
    }
    return out;
}
MaskedImage cutout(const MaskedImage& src, const Box& box) {
    MaskedImage out;
    out.image = cutout(src.image, box);
    out.mask = cutout(src.mask, box);
    out.variance = cutout(src.variance, box);
    return out;
}

/// Apply the zero-point scale in place (MaskedImage *= s: image *= s, variance *= s*s in float32).
void scaleInPlace(MaskedImage& mi, float s) {
    const float s2 = s * s;
    auto& img = mi.image.data();
    auto& var = mi.variance.data();
    for (std::size_t k = 0; k < img.size(); ++k) {
        img[k] *= s;
        var[k] *= s2;
    }
}

class PatchRun {
public:
    PatchRun(std::string name, const Box& box, const std::vector<WarpInput>& inputs, const Config& cfg,
             const parallel::Comm* group, CheckpointOptions checkpoints)
        : m_group(group),
          m_ckpt(std::move(checkpoints)),
          m_name(std::move(name)),
          m_box(box),
          m_cfg(cfg),
          m_dict(kernel::MaskDict::canonical()),
          m_requireSameBox(box.empty()) {
        m_skipBad = cfg.getString("input.on_bad_warp") == "skip";
        m_budget = geom::parseByteSize(cfg.getString("memory.max_per_rank"), "memory.max_per_rank");
        openWarps(inputs);
        setupBits();
        setupControls();
    }

    PatchResult run(const std::string& outPath) {
        const auto t0 = Clock::now();
        PatchResult result;
        result.name = m_name;
        result.outputPath = outPath;
        result.nWarps = static_cast<int>(m_warps.size());

        const bool safeclip = m_cfg.getString("coadd.mode") == "safeclip";
        const bool resumed = safeclip && loadReducedCheckpoint(result);
        if (!resumed) {
            computeWeights();
        }
        if (safeclip) {
            stage("setup", [&] {
                setupDetection();
                planTiles();
            });
            if (!resumed) {
                trialStacks();
                stage("reduce", [&] {
                    if (isRoot()) {
                        decide(result);
                    }
                });
                broadcastClipped();
            }
        } else {
            stage("setup", [&] { planTiles(); });
        }
        // The root stacks its own tiles straight into the patch; the other ranks keep theirs for the gather.
        std::vector<parallel::Tile> mine;
        MaskedImage coadd;
        kernel::ImageU16 nImage;
        const bool saveDecisions = safeclip && !resumed;
        stage(
            "final",
            [&] {
                if (saveDecisions) {
                    // The root writes the decision checkpoint here, while the other ranks already
                    // stack their tiles (the decisions reached them with broadcastClipped).
                    maybeInjectFailure("checkpoint");
                    saveReducedCheckpoint(result);
                }
                maybeInjectFailure("final");  // after the decision checkpoint, as before
                if (isRoot()) {
                    coadd = MaskedImage(m_box);
                    nImage = kernel::ImageU16(m_box, 0);
                }
                mine = finalStack(isRoot() ? &coadd : nullptr, isRoot() ? &nImage : nullptr);
            },
            /*injectAtStart=*/false);
        parallel::gatherTiles(m_group, 0, mine, coadd, nImage);
        mine.clear();
        for (const auto& counts : parallel::gatherToRoot(m_group, m_usedLocal)) {
            for (std::size_t i = 0; i < counts.size() && i < m_warps.size(); ++i) {
                m_warps[i].nUsedPixels += counts[i];
            }
        }
        stage("write", [&] {
            if (!isRoot()) {
                return;
            }
            kernel::PostBits pb{m_bits.noData, m_bits.intrp, m_bits.inexactPsf,
                                static_cast<MaskPixel>(m_bits.sensorEdge | m_bits.clipped | m_bits.rejected)};
            kernel::InterpControl ic;
            ic.enabled = m_cfg.getBool("interp.enabled");
            ic.useFallbackValueAtEdge = m_cfg.getBool("interp.use_fallback_value_at_edge");
            ic.negativeFallbackAllowed = m_cfg.getBool("interp.negative_fallback_allowed");
            ic.transpose = m_cfg.getBool("interp.transpose");
            const kernel::PostResult post = kernel::postProcessCoadd(coadd, pb, ic);
            log().info("patch {}: post-processing: {} NO_DATA pixels, {} interpolated (fallback {:.4g})", m_name,
                       post.nNoData, post.nInterpolated, post.fallbackValue);
            for (const MaskPixel m : coadd.mask.data()) {
                if ((m & m_bits.clipped) != 0) {
                    ++result.nCoaddClippedPixels;
                }
            }
                for (const std::string& rule : m_fpRule) {
                result.nSingle += rule == "single" ? 1 : 0;
                result.nSingleOnly += rule == "single-only-candidate" ? 1 : 0;
                result.nDouble += rule == "double" ? 1 : 0;
            }
        for (const Warp& w : m_warps) {
                if (w.used) {
                    ++result.nUsed;
                    result.nClippedWarpPixels += w.nClippedPixels;
                    result.nBigFootprints += w.nBigFootprints;
                }
            }
            write(outPath, coadd, nImage, safeclip);
            removeCheckpoints();
            if (m_cfg.getBool("qa.enabled")) {
                const std::filesystem::path out(outPath);
                const std::string png = (out.parent_path() / (out.stem().string() + ".qa.png")).string();
                writeQaPng(outPath, png);
                log().info("patch {}: QA picture {}", m_name, png);
            }
        });
        result.nTiles = static_cast<int>(m_tiles.size());
        result.tileSize = m_tileSize;
        result.halo = m_halo;
        result.seconds = secondsSince(t0);
        return result;
    }

private:
    [[nodiscard]] bool isRoot() const { return parallel::rankOf(m_group) == 0; }

    /// Run a stage on this rank, then agree with the group: if any rank failed, every rank throws
    /// (the failing rank its own error, the others a PatchAborted naming the stage), so no rank is
    /// left waiting in a collective.
    template <class Fn>
    void stage(const char* name, Fn&& fn, bool injectAtStart = true) {
        std::string error;
        ExitCode code = ExitCode::Ok;
        try {
            if (injectAtStart) {
                maybeInjectFailure(name);
            }
            throwIfStopRequested((std::string("before stage '") + name + "'").c_str());
            fn();
        } catch (const Error& e) {
            error = e.what();
            code = e.code();
        } catch (const std::exception& e) {
            error = std::string("internal error: ") + e.what();
            code = ExitCode::Internal;
        }
        if (!parallel::agreeAll(m_group, error.empty())) {
            // Every rank exits with the failing rank's code (the worst if several failed).
            const auto worst = static_cast<ExitCode>(
                m_group == nullptr ? static_cast<int>(code) : static_cast<int>(m_group->max(static_cast<int>(code))));
            if (!error.empty()) {
                throw Error(error, code);
            }
            throw Error("patch " + m_name + ": stage '" + std::string(name) +
                            "' failed on another rank of this patch's group",
                        worst);
        }
    }

    /// Test hook: SAFECLIP_FAIL_AT="<world rank>:<stage>" makes that rank throw at that stage.
    static void maybeInjectFailure(const char* stageName) {
        const char* spec = std::getenv("SAFECLIP_FAIL_AT");
        if (spec == nullptr) {
            return;
        }
        int worldRank = 0;
        if (boost::mpi::environment::initialized() && !boost::mpi::environment::finalized()) {
            worldRank = boost::mpi::communicator().rank();
        }
        if (std::string(spec) == std::to_string(worldRank) + ":" + stageName) {
            throw InputError("injected failure (SAFECLIP_FAIL_AT=" + std::string(spec) + ")");
        }
    }

    // ---- setup ---------------------------------------------------------------------------------
    void fail(Warp& w, const std::string& why) {
        if (!m_skipBad) {
            throw InputError(why);
        }
        log().warn("skipping warp: {}", why);
        w.used = false;
        w.status = "skipped: " + why;
        w.reader.reset();
    }

    void openWarps(const std::vector<WarpInput>& inputs) {
        if (inputs.empty()) {
            throw InputError("patch " + m_name + ": no warps given");
        }
        m_warps.resize(inputs.size());
        for (std::size_t i = 0; i < inputs.size(); ++i) {
            Warp& w = m_warps[i];
            w.input = inputs[i];
            w.visit = inputs[i].visit >= 0 ? inputs[i].visit : static_cast<std::int64_t>(i);
            try {
                w.reader = std::make_unique<io::WarpReader>(inputs[i].path);
                const auto& h = w.reader->header();
                m_headerPsfSigmas.push_back(h.psfSigma);  // for haloSigma(), as `safeclip plan` sees them
                if (inputs[i].visit < 0 && h.visit) {
                    w.visit = *h.visit;
                }
                w.used = true;
                w.status = "used";
            } catch (const InputError& e) {
                fail(w, e.what());
            }
        }
        for (std::size_t i = 0; i < m_warps.size(); ++i) {
            for (std::size_t j = 0; j < i; ++j) {
                if (m_warps[i].visit == m_warps[j].visit) {
                    throw InputError(m_warps[i].input.path + ": duplicate visit " +
                                     std::to_string(m_warps[i].visit) + " (also " + m_warps[j].input.path +
                                     "); give each warp its own visit id (VISIT card or manifest)");
                }
            }
        }
        // Header validation before any work (the checks of `safeclip validate` without the pixel
        // scan; in particular every warp's celestial WCS must equal the first warp's). Problems go
        // through input.on_bad_warp like every other bad warp.
        {
            std::vector<std::string> paths;
            for (const Warp& w : m_warps) {
                paths.push_back(w.input.path);
            }
            const Box* patchBox = m_box.empty() ? nullptr : &m_box;
            // With input.validate_pixels the group root also scans every warp's pixels (variance
            // finite and > 0 where the image is finite; not all NaN) and shares the verdicts, so
            // every rank applies the same policy.
            std::vector<WarpProblem> problems;
            if (!m_cfg.getBool("input.validate_pixels")) {
                problems = validateWarps(paths, patchBox, /*pixels=*/false);
            } else {
                std::vector<std::pair<std::pair<std::string, std::string>, int>> wire;
                if (parallel::rankOf(m_group) == 0) {
                    for (const WarpProblem& p : validateWarps(paths, patchBox, /*pixels=*/true)) {
                        wire.push_back({{p.file, p.problem}, p.fatal ? 1 : 0});
                    }
                }
                parallel::broadcastFromRoot(m_group, wire);
                for (const auto& [fp, fatal] : wire) {
                    problems.push_back(WarpProblem{fp.first, fp.second, fatal != 0});
                }
            }
            for (const WarpProblem& p : problems) {
                if (p.problem.rfind("duplicate visit", 0) == 0) {
                    continue;  // visits are checked below with the manifest's ids, not the headers'
                }
                for (Warp& w : m_warps) {
                    if (w.input.path != p.file || !w.used) {
                        continue;
                    }
                    if (p.fatal) {
                        fail(w, p.file + ": " + p.problem);
                    } else if (parallel::rankOf(m_group) == 0) {
                        log().warn("{}: {}", p.file, p.problem);
                    }
                }
            }
        }
        // The patch box: the manifest's, or the warps' common box.
        for (Warp& w : m_warps) {
            if (!w.used) {
                continue;
            }
            const Box wb = w.reader->header().box;
            if (m_box.empty()) {
                m_box = wb;
            }
            if (!wb.contains(m_box)) {
                fail(w, w.input.path + ": mismatched grid: warp box " + wb.str() +
                            " does not cover patch box " + m_box.str());
            } else if (m_requireSameBox && wb != m_box) {
                // No patch box given (`safeclip coadd`): every warp must be on the same box.
                fail(w, w.input.path + ": mismatched grid: warp box " + wb.str() + " differs from " +
                            m_box.str() + " of the first warp");
            }
        }
        for (Warp& w : m_warps) {
            if (!w.used) {
                continue;
            }
            const auto& h = w.reader->header();
            if (!h.calibrationMean || !(*h.calibrationMean > 0) || !std::isfinite(*h.calibrationMean)) {
                fail(w, w.input.path +
                            ": missing zero point (no FLUXMAG0 card and no PhotoCalib calibrationMean)");
                continue;
            }
            w.reader->conformTo(m_dict);  // (a missing DETECTED plane was warned about by the validation)
            // s_i = c_i / f_zp, f_zp = 10^(-0.4 (zp - 31.4)) nJy; upstream casts s to float32 (§3.2-3).
            const double zp = m_cfg.getDouble("stack.zero_point");
            const double fzp = std::pow(10.0, -0.4 * (zp - 31.4));
            w.scale = static_cast<float>(*h.calibrationMean / fzp);
        }
        if (m_box.empty() || usedWarps().empty()) {
            throw InputError("patch " + m_name + ": no readable warps (all " +
                             std::to_string(m_warps.size()) + " skipped)");
        }
        m_wcsCards.clear();
        for (const Warp& w : m_warps) {
            if (w.used) {
                m_wcsCards = w.reader->header().wcsCards;
                m_filter = w.reader->header().filter;
                break;
            }
        }
    }

    void setupBits() {
        m_bits.bad = 0;
        for (const auto& name : m_cfg.getStringList("stack.bad_mask_planes")) {
            const int bit = m_dict.bitOf(name);
            if (bit < 0) {
                throw ConfigError("stack.bad_mask_planes: unknown mask plane '" + name +
                                  "' (not a default plane and not in any input's MP_* cards)");
            }
            m_bits.bad |= static_cast<MaskPixel>(1U << static_cast<unsigned>(bit));
        }
        m_bits.det = m_dict.bitMask("DETECTED") | m_dict.bitMask("DETECTED_NEGATIVE");
        m_bits.clipped = m_dict.bitMask("CLIPPED");
        m_bits.rejected = m_dict.bitMask("REJECTED");
        m_bits.sensorEdge = m_dict.bitMask("SENSOR_EDGE");
        m_bits.inexactPsf = m_dict.bitMask("INEXACT_PSF");
        m_bits.noData = m_dict.bitMask("NO_DATA");
        m_bits.edge = m_dict.bitMask("EDGE");
        m_bits.intrp = m_dict.bitMask("INTRP");
        m_bits.remove = 0;
        for (const auto& name : m_cfg.getStringList("stack.remove_mask_planes")) {
            m_bits.remove |= m_dict.bitMask(name);
        }
    }

    kernel::StackControl makeControl(kernel::Statistic stat, MaskPixel andMask) const {
        kernel::StackControl c;
        c.statistic = stat;
        c.sigmaClip = m_cfg.getDouble("stack.sigma_clip");
        c.clipIter = static_cast<int>(m_cfg.getInt("stack.clip_iter"));
        c.andMask = andMask;
        c.clippedBit = m_bits.clipped;
        c.noGoodPixelsMask = m_bits.noData;
        c.calcErrorFromInputVariance = m_cfg.getBool("stack.calc_error_from_input_variance");
        // §7.2.2: (A & ~NO_DATA & ~EDGE & ~CLIPPED -> REJECTED), (EDGE -> SENSOR_EDGE), (CLIPPED -> CLIPPED)
        const MaskPixel rejectedSrc = andMask & ~m_bits.noData & ~m_bits.edge & ~m_bits.clipped;
        c.maskMap = {{rejectedSrc, m_bits.rejected},
                     {m_bits.edge, m_bits.sensorEdge},
                     {m_bits.clipped, m_bits.clipped}};
        for (const auto& [plane, t] : m_cfg.getDoubleTable("stack.mask_propagation_thresholds")) {
            const MaskPixel b = m_dict.bitMask(plane);
            if (b != 0) {
                c.propagationThresholds.emplace_back(b, t);
            }
        }
        c.validate();
        return c;
    }

    void setupControls() {
        m_meanCtrl = makeControl(kernel::Statistic::Mean, m_bits.bad);
        m_clipCtrl = makeControl(kernel::Statistic::MeanClip, m_bits.bad);
        m_finalCtrl = makeControl(kernel::Statistic::Mean, m_bits.bad | m_bits.clipped);
        m_clipRules.minClipFootOverlap = m_cfg.getDouble("clip.min_foot_overlap");
        m_clipRules.minClipFootOverlapSingle = m_cfg.getDouble("clip.min_foot_overlap_single");
        m_clipRules.minClipFootOverlapDouble = m_cfg.getDouble("clip.min_foot_overlap_double");
        m_clipRules.maxClipFootOverlapDouble = m_cfg.getDouble("clip.max_foot_overlap_double");
        m_clipRules.minBigOverlap = m_cfg.getInt("clip.min_big_overlap");
        m_clipRules.validate();
    }

    std::vector<Warp*> usedWarps() {
        std::vector<Warp*> out;
        for (Warp& w : m_warps) {
            if (w.used) {
                out.push_back(&w);
            }
        }
        return out;
    }

    // ---- tiles and memory ----------------------------------------------------------------------
    /// The tile plan (geom::planTiles): the same on every rank of the group.
    void planTiles() {
        const geom::TilePlan plan =
            geom::planTiles(m_box, parallel::sizeOf(m_group), static_cast<int>(m_cfg.getInt("tile.size")), m_halo,
                            static_cast<int>(usedWarps().size()), m_budget);
        m_tileSize = plan.tileSize;
        m_tiles = plan.tiles;
        m_tileOwner = plan.owner;
    }

    std::vector<std::size_t> myTiles() const {
        std::vector<std::size_t> out;
        for (std::size_t i = 0; i < m_tiles.size(); ++i) {
            if (m_tileOwner[i] == parallel::rankOf(m_group)) {
                out.push_back(i);
            }
        }
        return out;
    }

    /// Rows per chunk of `box` beside the stage's fixed arrays (geom::stackChunkRows).
    int chunkRows(const Box& box, int nWarps, std::int64_t fixed) const {
        return geom::stackChunkRows(box, nWarps, fixed, m_budget, m_name, m_tileSize, m_box);
    }

    // ---- stage W: weights (§3) -----------------------------------------------------------------
    /// Local part (inside a stage): this rank's share of the warps. Then the collective part.
    void computeWeights() {
        const auto t0 = Clock::now();
        std::vector<WeightMeasure> mine;
        stage("weights", [&] { mine = measureWeights(); });
        applyWeights(parallel::allGather(m_group, mine));
        if (isRoot()) {
            log().info("patch {}: weights for {} warps in {:.2f} s", m_name, usedWarps().size(), secondsSince(t0));
        }
    }

    /// (warp index, weight, status) for the warps this rank measures: warp i on group rank i mod R.
    std::vector<WeightMeasure> measureWeights() {
        const int me = parallel::rankOf(m_group);
        const int n = parallel::sizeOf(m_group);
        // (warp index, weight, status) for the warps this rank measures
        std::vector<WeightMeasure> mine;
        std::vector<float> var;
        std::vector<MaskPixel> mask;
        // one patch-sized sample buffer, reused for every warp (4 B/px, counted below)
        const auto sample = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(m_box.area()));
        // The sample and the quantile selection's scratch, plus row chunks of VARIANCE and MASK.
        const int rows = geom::weightsChunkRows(m_box, m_budget);
        for (std::size_t i = 0; i < m_warps.size(); ++i) {
            Warp& w = m_warps[i];
            if (!w.used || static_cast<int>(i % static_cast<std::size_t>(n)) != me) {
                continue;
            }
            // The sample keeps pixel order.
            std::size_t kept = 0;
            const float s2 = w.scale * w.scale;
            const MaskPixel bad = m_bits.bad;
            for (const Box& chunk : geom::rowChunks(m_box, rows)) {
                var.resize(static_cast<std::size_t>(chunk.area()));
                mask.resize(static_cast<std::size_t>(chunk.area()));
                w.reader->readPlanes(chunk, nullptr, mask.data(), var.data());
                float* dst = sample.get();
                for (std::size_t k = 0; k < var.size(); ++k) {
                    const float v = var[k] * s2;
                    if ((mask[k] & bad) == 0 && std::isfinite(v)) {
                        dst[kept++] = v;
                    }
                }
            }
            const double meanVar = kernel::meanClipUnweighted({sample.get(), kept}, m_cfg.getDouble("stack.sigma_clip"),
                                                              static_cast<int>(m_cfg.getInt("stack.clip_iter")));
            const double weight = 1.0 / meanVar;
            std::string status = "used";
            if (!std::isfinite(weight) || !(weight > 0)) {
                // Zero, negative or NaN variance everywhere: no usable weight (a negative weight
                // would be wrong science, not merely a bad number).
                status = "skipped: no positive finite weight (clipped mean variance " + std::to_string(meanVar) + ")";
            }
            mine.push_back({static_cast<std::int64_t>(i), static_cast<float>(weight), status,
                            io::fileChecksum(w.input.path)});
        }
        return mine;
    }

    void applyWeights(
        const std::vector<std::vector<WeightMeasure>>& gathered) {
        for (const auto& fromRank : gathered) {
            for (const WeightMeasure& m : fromRank) {
                Warp& w = m_warps[static_cast<std::size_t>(m.index)];
                w.weight = m.weight;
                w.checksum = m.checksum;
                const std::pair<float, std::string> ws{m.weight, m.status};
                if (ws.second != "used") {
                    if (!m_skipBad) {  // every rank sees the same gathered statuses and throws alike
                        throw InputError(w.input.path + ": " + ws.second.substr(std::string("skipped: ").size()) +
                                         " (input.on_bad_warp = fail)");
                    }
                    w.used = false;
                    w.status = ws.second;
                    if (isRoot()) {
                        log().warn("patch {}: {}: {}", m_name, w.input.path, w.status);
                    }
                }
            }
        }
    }

    // ---- stage 1: trial stacks, difference image, detection pieces (§5, §6.1, §6.2) -----------
    void setupDetection() {
        m_detect.psfSigma = psfSigma();
        m_detect.thresholdValue = m_cfg.getDouble("detect.threshold");
        m_detect.nSigmaToGrow = m_cfg.getDouble("detect.n_sigma_to_grow");
        m_detect.minPixels = static_cast<int>(m_cfg.getInt("detect.min_pixels"));
        m_detect.nSigmaForKernel = m_cfg.getDouble("detect.n_sigma_for_kernel");
        m_detect.validate();
        // The halo from a sigma `safeclip plan` knows too (>= the weighted mean, so >= detection's need).
        m_halo = std::max(tileHalo(m_cfg, haloSigma(m_cfg, m_headerPsfSigmas)), detectionHalo(m_detect));
    }

    /// One tile's contribution to the reduction.
    struct TileResult {
        std::vector<Piece> pieces;
        std::vector<std::vector<kernel::Span>> bad, detGood, detAll;  ///< per used warp, inside the tile
        std::vector<char> anyFinite;                                   ///< per used warp, inside the tile
    };

    TileResult trialTile(const Box& tile, const std::vector<Warp*>& warps, const std::vector<float>& weights) {
        TileResult out;
        const std::size_t n = warps.size();
        out.bad.resize(n);
        out.detGood.resize(n);
        out.detAll.resize(n);
        out.anyFinite.assign(n, 0);
        const Box hb = tile.grown(m_halo).intersect(m_box);
        kernel::ImageF dImage(hb);
        kernel::ImageF dVar(hb);
        std::vector<MaskedImage> bufs(n);
        MaskedImage mean;  // trial outputs of one chunk, reused across chunks
        MaskedImage clip;
        const int rows = chunkRows(hb, static_cast<int>(n), geom::trialFixedBytes(hb));
        for (const Box& chunk : geom::rowChunks(hb, rows)) {
            std::vector<const MaskedImage*> ptrs;
            const int ty0 = std::max(chunk.y0, tile.y0);
            const int ty1 = std::min(chunk.y1(), tile.y1());
            for (std::size_t i = 0; i < n; ++i) {
                warps[i]->reader->read(chunk, bufs[i]);
                MaskedImage& b = bufs[i];
                for (int y = ty0; y < ty1; ++y) {
                    const MaskPixel* m = b.mask.row(y) + (tile.x0 - chunk.x0);
                    kernel::appendMaskRuns3(out.bad[i], out.detGood[i], out.detAll[i], y, tile.x0, m, tile.width,
                                            m_bits.bad, m_bits.det);
                    if (out.anyFinite[i] == 0) {
                        const float* im = b.image.row(y) + (tile.x0 - chunk.x0);
                        out.anyFinite[i] = std::any_of(im, im + tile.width, [](float v) { return std::isfinite(v); })
                                               ? 1
                                               : 0;
                    }
                }
                scaleInPlace(b, warps[i]->scale);
                if (m_bits.remove != 0) {
                    for (MaskPixel& m : b.mask.data()) {
                        m &= ~m_bits.remove;
                    }
                }
                ptrs.push_back(&b);
            }
            mean.reshape(chunk);  // every pixel is written by the stacker
            clip.reshape(chunk);
            kernel::stackRegionPair(ptrs, weights, m_meanCtrl, m_clipCtrl, chunk, mean, clip);
            for (int y = chunk.y0; y < chunk.y1(); ++y) {
                const float* mi = mean.image.row(y);
                const float* ci = clip.image.row(y);
                const float* mv = mean.variance.row(y);
                const float* cv = clip.variance.row(y);
                float* di = dImage.row(y);
                float* dv = dVar.row(y);
                for (int k = 0; k < chunk.width; ++k) {
                    di[k] = mi[k] - ci[k];
                    dv[k] = mv[k] + cv[k];
                }
            }
        }
        bufs.clear();
        // Detected pixels inside the tile: with the halo they equal the whole-patch detection there.
        const SpanSet detected = kernel::uniteAll(kernel::detectFootprints(dImage, dVar, m_detect)).clippedTo(tile);
        std::vector<kernel::WarpMaskSpans> local(n);
        for (std::size_t i = 0; i < n; ++i) {
            local[i].bad = SpanSet::fromSortedSpans(out.bad[i]);
            local[i].detGood = SpanSet::fromSortedSpans(out.detGood[i]);
        }
        for (const SpanSet& piece : kernel::connectedComponents8(detected)) {
            Piece p;
            p.spans = piece.spans();
            const Box bb = piece.bbox();
            for (std::size_t i = 0; i < n; ++i) {
                const kernel::WarpMaskSpans near{restrictRows(local[i].bad, bb.y0, bb.y1()),
                                                 restrictRows(local[i].detGood, bb.y0, bb.y1()), SpanSet()};
                const kernel::WarpCounts c = kernel::overlapCounts(piece, near);
                p.ign.push_back(c.ign);
                p.det.push_back(c.det);
            }
            out.pieces.push_back(std::move(p));
        }
        return out;
    }

    /// Stage 1 on this rank's tiles, then gather to the root. Repeats without warps found to be
    /// entirely NaN (they are skipped, as upstream does in prepareInputs).
    void trialStacks() {
        const auto t0 = Clock::now();
        for (;;) {
            std::vector<Warp*> warps;
            std::vector<TileResult> mine;
            stage("trial", [&] {
                warps = usedWarps();
                if (warps.empty()) {
                    throw InputError("patch " + m_name + ": no usable warps");
                }
                std::vector<float> weights;
                for (Warp* w : warps) {
                    weights.push_back(w->weight);
                }
                for (std::size_t t : myTiles()) {
                    throwIfStopRequested("during the trial stacks");
                    mine.push_back(trialTile(m_tiles[t], warps, weights));
                }
            });
            // Which warps have a finite pixel anywhere?
            std::vector<char> anyFinite(warps.size(), 0);
            for (const TileResult& r : mine) {
                for (std::size_t i = 0; i < warps.size(); ++i) {
                    anyFinite[i] = static_cast<char>(anyFinite[i] | r.anyFinite[i]);
                }
            }
            bool redo = false;
            for (const auto& fromRank : parallel::allGather(m_group, anyFinite)) {
                for (std::size_t i = 0; i < warps.size(); ++i) {
                    anyFinite[i] = static_cast<char>(anyFinite[i] | fromRank[i]);
                }
            }
            for (std::size_t i = 0; i < warps.size(); ++i) {
                if (anyFinite[i] == 0) {
                    if (!m_skipBad) {  // the same on every rank (all-gathered flags)
                        throw InputError(warps[i]->input.path + ": every image pixel is NaN (input.on_bad_warp = fail)");
                    }
                    warps[i]->used = false;
                    warps[i]->status = "skipped: every image pixel is NaN";
                    if (isRoot()) {
                        log().warn("patch {}: {}: {}", m_name, warps[i]->input.path, warps[i]->status);
                    }
                    redo = true;
                }
            }
            if (redo) {
                if (isRoot()) {
                    log().info("patch {}: repeating the trial stacks without the all-NaN warps", m_name);
                }
                continue;
            }
            // Gather the pieces and each warp's DETECTED spans (for the big-footprint rule) to the root.
            std::vector<Piece> pieces;
            std::vector<std::vector<kernel::Span>> detAll(warps.size());
            for (TileResult& r : mine) {
                std::move(r.pieces.begin(), r.pieces.end(), std::back_inserter(pieces));
                for (std::size_t i = 0; i < warps.size(); ++i) {
                    detAll[i].insert(detAll[i].end(), r.detAll[i].begin(), r.detAll[i].end());
                }
            }
            mine.clear();
            const auto gathered = parallel::gatherToRoot(m_group, std::make_pair(pieces, detAll));
            if (isRoot()) {
                m_pieces.clear();
                std::vector<std::vector<kernel::Span>> all(warps.size());
                for (const auto& [p, d] : gathered) {
                    m_pieces.insert(m_pieces.end(), p.begin(), p.end());
                    for (std::size_t i = 0; i < warps.size(); ++i) {
                        all[i].insert(all[i].end(), d[i].begin(), d[i].end());
                    }
                }
                for (std::size_t i = 0; i < warps.size(); ++i) {
                    warps[i]->spans.detAll = SpanSet::fromSpans(std::move(all[i]));
                }
                log().info("patch {}: trial stacks and detection of {} warps in {} tiles of {} px (halo {}) in "
                           "{:.2f} s",
                           m_name, warps.size(), m_tiles.size(), m_tileSize, m_halo, secondsSince(t0));
            }
            return;
        }
    }

    // ---- stage R: whole footprints, decisions, big footprints (§6.3, §7.1) ---------------------
    double psfSigma() {
        const double fromConfig = m_cfg.getDouble("detect.psf_sigma");
        if (fromConfig > 0) {
            m_psfSource = "config detect.psf_sigma";
            return fromConfig;
        }
        double sw = 0;
        double swSigma = 0;
        for (Warp* w : usedWarps()) {
            const auto& s = w->reader->header().psfSigma;
            if (!s) {
                throw ConfigError(w->input.path +
                                  ": no PSFSIGMA or FWHM card and detect.psf_sigma = 0; set "
                                  "detect.psf_sigma to the coadd PSF sigma in pixels");
            }
            sw += w->weight;
            swSigma += w->weight * *s;
        }
        m_psfSource = "weight-averaged PSFSIGMA/FWHM of the warps";
        return swSigma / sw;
    }

    /// Root only: merge the pieces into whole footprints (the 8-connected components of their
    /// union, the same as detection on the whole patch), sum their additive per-warp counts, decide
    /// each footprint once, then apply the big-footprint rule to whole DETECTED components.
    void decide(PatchResult& result) {
        const auto t0 = Clock::now();
        auto warps = usedWarps();
        std::vector<kernel::Span> all;
        for (const Piece& p : m_pieces) {
            all.insert(all.end(), p.spans.begin(), p.spans.end());
        }
        const std::vector<SpanSet> footprints = kernel::connectedComponents8(SpanSet::fromSpans(std::move(all)));
        // Index every footprint span to find the footprint holding each piece's first pixel.
        std::vector<std::pair<kernel::Span, std::size_t>> index;
        for (std::size_t j = 0; j < footprints.size(); ++j) {
            for (const kernel::Span& sp : footprints[j].spans()) {
                index.emplace_back(sp, j);
            }
        }
        std::sort(index.begin(), index.end(), [](const auto& a, const auto& b) {
            return a.first.y != b.first.y ? a.first.y < b.first.y : a.first.x0 < b.first.x0;
        });
        std::vector<std::vector<kernel::WarpCounts>> counts(footprints.size(),
                                                            std::vector<kernel::WarpCounts>(warps.size()));
        for (const Piece& p : m_pieces) {
            const kernel::Span first = p.spans.front();
            auto it = std::upper_bound(index.begin(), index.end(), first, [](const kernel::Span& v, const auto& e) {
                return v.y != e.first.y ? v.y < e.first.y : v.x0 < e.first.x0;
            });
            if (it == index.begin() || std::prev(it)->first.y != first.y || std::prev(it)->first.x1 < first.x0) {
                throw Error("patch " + m_name + ": internal error: a footprint piece is in no footprint",
                            ExitCode::Internal);
            }
            auto& c = counts[std::prev(it)->second];
            for (std::size_t i = 0; i < warps.size(); ++i) {
                c[i].ign += p.ign[i];
                c[i].det += p.det[i];
            }
        }
        m_pieces.clear();
        result.nFootprints = static_cast<std::int64_t>(footprints.size());
        std::vector<std::vector<const SpanSet*>> clippedBy(warps.size());
        for (std::size_t j = 0; j < footprints.size(); ++j) {
            const kernel::FootprintDecision d = kernel::decideClip(footprints[j].area(), counts[j], m_clipRules);
            for (int i : d.clippedWarps) {
                clippedBy[static_cast<std::size_t>(i)].push_back(&footprints[j]);
            }
            if (!d.clippedWarps.empty()) {
                ++result.nClippedFootprints;
            }
            recordDecision(static_cast<std::int64_t>(j), footprints[j], d, warps);
        }
        std::int64_t clippedPixels = 0;
        for (std::size_t i = 0; i < warps.size(); ++i) {
            Warp& w = *warps[i];
            if (!clippedBy[i].empty()) {
                std::vector<SpanSet> parts;
                for (const SpanSet* f : clippedBy[i]) {
                    parts.push_back(*f);
                }
                const SpanSet unionClipped = kernel::uniteAll(parts);
                const std::vector<SpanSet> big =
                    kernel::bigFootprints(w.spans.detAll, unionClipped, m_clipRules.minBigOverlap);
                w.nBigFootprints = static_cast<std::int64_t>(big.size());
                parts.assign(1, unionClipped);
                parts.insert(parts.end(), big.begin(), big.end());
                w.clipped = kernel::uniteAll(parts);
                w.nClippedPixels = w.clipped.area();
                clippedPixels += w.nClippedPixels;
            }
            w.spans = kernel::WarpMaskSpans();
        }
        log().info("patch {}: {} footprints (psf sigma {:.3f} px from {}), {} clipped in at least one warp; {} "
                   "CLIPPED warp pixels; {:.2f} s",
                   m_name, footprints.size(), m_detect.psfSigma, m_psfSource, result.nClippedFootprints,
                   clippedPixels, secondsSince(t0));
    }

    /// Every rank of the group gets each warp's CLIPPED spans (and the counts for the INPUTS table).
    void broadcastClipped() {
        std::vector<std::pair<std::vector<kernel::Span>, std::pair<std::int64_t, std::int64_t>>> clipped;
        if (isRoot()) {
            for (const Warp& w : m_warps) {
                clipped.push_back({w.clipped.spans(), {w.nClippedPixels, w.nBigFootprints}});
            }
        }
        parallel::broadcastFromRoot(m_group, clipped);
        if (!isRoot()) {
            for (std::size_t i = 0; i < m_warps.size(); ++i) {
                m_warps[i].clipped = SpanSet::fromSortedSpans(std::move(clipped[i].first));
                m_warps[i].nClippedPixels = clipped[i].second.first;
                m_warps[i].nBigFootprints = clipped[i].second.second;
            }
        }
    }

    void recordDecision(std::int64_t id, const SpanSet& f, const kernel::FootprintDecision& d,
                        const std::vector<Warp*>& warps) {
        const Box bb = f.bbox();
        m_fpId.push_back(id);
        m_fpX0.push_back(bb.x0);
        m_fpY0.push_back(bb.y0);
        m_fpX1.push_back(bb.x1() - 1);
        m_fpY1.push_back(bb.y1() - 1);
        m_fpArea.push_back(f.area());
        m_fpRule.emplace_back(kernel::toString(d.rule));
        m_fpReason.push_back(d.reason);
        std::vector<Warp*> clipped;
        for (int i : d.clippedWarps) {
            clipped.push_back(warps[static_cast<std::size_t>(i)]);
        }
        m_fpClipped.push_back(joinVisits(clipped));
        for (const kernel::Candidate& c : d.candidates) {
            m_cdFootprint.push_back(id);
            m_cdVisit.push_back(warps[static_cast<std::size_t>(c.warp)]->visit);
            m_cdDet.push_back(c.det);
            m_cdIgn.push_back(c.ign);
            m_cdFraction.push_back(c.fraction);
            m_cdClipped.push_back(c.clipped ? 1 : 0);
        }
    }

    // ---- checkpoints (HDF5) --------------------------------------------------------------------
    [[nodiscard]] bool checkpointing() const { return !m_ckpt.dir.empty(); }

    /// What ties a checkpoint to this run: the pixel-affecting config and the input fingerprints.
    io::CheckpointKey checkpointKey() const {
        io::CheckpointKey key;
        key.configHash = scienceConfigHash(m_cfg);
        for (const Warp& w : m_warps) {
            key.inputs.push_back(io::fileFingerprint(w.input.path));
        }
        key.inputHash = io::hashStrings(key.inputs);
        return key;
    }
    [[nodiscard]] std::string reducedPath() const { return m_ckpt.dir + "/" + m_name + ".reduced.h5"; }
    [[nodiscard]] std::string tilePath(const Box& b) const {
        return m_ckpt.dir + "/" + m_name + ".tiles/tile_" + std::to_string(b.x0) + "_" + std::to_string(b.y0) + "_" +
               std::to_string(b.width) + "x" + std::to_string(b.height) + ".h5";
    }

    /// With --resume: the root reads the stage-R checkpoint and broadcasts it. A checkpoint of another
    /// configuration or input list is refused (ConfigError) unless --restart; an invalid one is
    /// reported and recomputed.
    bool loadReducedCheckpoint(PatchResult& result) {
        if (!checkpointing() || !m_ckpt.resume) {
            return false;
        }
        io::PatchState state;
        int found = 0;
        stage("resume", [&] {
            if (!isRoot()) {
                return;
            }
            const io::CheckpointRead r = io::readPatchCheckpoint(reducedPath(), checkpointKey());
            switch (r.status) {
                case io::CheckpointStatus::Ok:
                    state = r.state;
                    found = state.warps.size() == m_warps.size() ? 1 : 0;
                    if (found == 0) {
                        log().warn("ignoring checkpoint {}: it lists {} warps, the patch has {}", reducedPath(),
                                   state.warps.size(), m_warps.size());
                    }
                    break;
                case io::CheckpointStatus::Missing:
                    break;
                case io::CheckpointStatus::Invalid:
                    log().warn("ignoring invalid checkpoint: {}", r.reason);
                    break;
                case io::CheckpointStatus::ConfigChanged:
                case io::CheckpointStatus::InputChanged:
                    if (!m_ckpt.restart) {
                        throw ConfigError(r.reason + "; rerun with --restart to start this patch over");
                    }
                    log().warn("--restart: discarding checkpoint: {}", r.reason);
                    break;
            }
        });
        parallel::broadcastFromRoot(m_group, found);
        if (found == 0) {
            return false;
        }
        parallel::broadcastFromRoot(m_group, state);
        for (std::size_t i = 0; i < m_warps.size(); ++i) {
            Warp& w = m_warps[i];
            const io::WarpState& ws = state.warps[i];
            w.weight = ws.weight;
            w.scale = ws.scale;
            w.used = ws.used;
            w.status = ws.status;
            if (!w.used) {
                w.reader.reset();
            }
            w.clipped = SpanSet::fromSortedSpans(ws.clipped);
            w.nClippedPixels = ws.nClippedPixels;
            w.nBigFootprints = ws.nBigFootprints;
            w.checksum = ws.checksum;
        }
        result.nFootprints = state.nFootprints;
        result.nClippedFootprints = state.nClippedFootprints;
        m_fpId = state.fpId;
        m_fpX0 = state.fpX0;
        m_fpY0 = state.fpY0;
        m_fpX1 = state.fpX1;
        m_fpY1 = state.fpY1;
        m_fpArea = state.fpArea;
        m_fpRule = state.fpRule;
        m_fpReason = state.fpReason;
        m_fpClipped = state.fpClipped;
        m_cdFootprint = state.cdFootprint;
        m_cdVisit = state.cdVisit;
        m_cdDet = state.cdDet;
        m_cdIgn = state.cdIgn;
        m_cdClipped = state.cdClipped;
        m_cdFraction = state.cdFraction;
        if (isRoot()) {
            log().info("patch {}: resumed from {} (weights, {} footprints and their decisions)", m_name,
                       reducedPath(), state.nFootprints);
        }
        return true;
    }

    /// Root: publish the stage-R state.
    void saveReducedCheckpoint(const PatchResult& result) {
        if (!checkpointing() || !isRoot()) {
            return;
        }
        const auto t0 = Clock::now();
        io::PatchState s;
        s.stage = "reduced";
        for (const Warp& w : m_warps) {
            s.warps.push_back({w.visit, w.scale, w.weight, w.used, w.status, w.nClippedPixels, w.nBigFootprints,
                               w.checksum, w.clipped.spans()});
        }
        s.nFootprints = result.nFootprints;
        s.nClippedFootprints = result.nClippedFootprints;
        s.psfSigma = m_detect.psfSigma;
        s.psfSource = m_psfSource;
        s.fpId = m_fpId;
        s.fpX0 = m_fpX0;
        s.fpY0 = m_fpY0;
        s.fpX1 = m_fpX1;
        s.fpY1 = m_fpY1;
        s.fpArea = m_fpArea;
        s.fpRule = m_fpRule;
        s.fpReason = m_fpReason;
        s.fpClipped = m_fpClipped;
        s.cdFootprint = m_cdFootprint;
        s.cdVisit = m_cdVisit;
        s.cdDet = m_cdDet;
        s.cdIgn = m_cdIgn;
        s.cdClipped = m_cdClipped;
        s.cdFraction = m_cdFraction;
        io::writePatchCheckpoint(reducedPath(), checkpointKey(), s);
        std::error_code ec;
        log().info("patch {}: checkpoint {} ({}) in {:.2f} s", m_name, reducedPath(),
                   geom::formatByteSize(static_cast<std::int64_t>(std::filesystem::file_size(reducedPath(), ec))),
                   secondsSince(t0));
    }

    /// Root, after the FITS is published: the checkpoints of this patch are no longer needed.
    void removeCheckpoints() {
        if (!checkpointing()) {
            return;
        }
        std::error_code ec;
        std::filesystem::remove(reducedPath(), ec);
        std::filesystem::remove_all(m_ckpt.dir + "/" + m_name + ".tiles", ec);
    }

    // ---- stage 2: final stack (§7.2) -----------------------------------------------------------
    /// Final stack of this rank's tiles: into `direct`/`directN` (the root's patch) when given,
    /// else into tiles returned for the gather.
    std::vector<parallel::Tile> finalStack(MaskedImage* direct, kernel::ImageU16* directN) {
        const auto t0 = Clock::now();
        auto warps = usedWarps();
        if (warps.empty()) {
            throw InputError("patch " + m_name + ": no usable warps");
        }
        const MaskPixel andMask = m_finalCtrl.andMask;
        std::vector<MaskedImage> bufs(warps.size());
        std::vector<float> weights;
        for (Warp* w : warps) {
            weights.push_back(w->weight);
        }
        std::vector<parallel::Tile> out;
        const auto tiles = myTiles();
        std::size_t done = 0;
        auto lastLog = Clock::now();
        auto lastCheckpoint = Clock::now();  // tile checkpoints every checkpoint.tile_interval s of work
        int rows = 0;
        const io::CheckpointKey key = checkpointing() ? checkpointKey() : io::CheckpointKey{};
        m_usedLocal.assign(m_warps.size(), 0);
        std::vector<std::size_t> warpIndex;  // position of each used warp in m_warps
        for (Warp* w : warps) {
            warpIndex.push_back(static_cast<std::size_t>(w - m_warps.data()));
        }
        std::int64_t ownTilesArea = 0;
        for (std::size_t t : tiles) {
            ownTilesArea += m_tiles[t].area();
        }
        const std::int64_t finalFixed = geom::finalFixedBytes(m_box, ownTilesArea, direct != nullptr);
        for (std::size_t t : tiles) {
            throwIfStopRequested("during the final stack");
            const Box& tile = m_tiles[t];
            parallel::Tile reloaded;
            std::vector<std::int64_t> tileUsed;
            if (checkpointing() && m_ckpt.resume &&
                io::readTileCheckpoint(tilePath(tile), key, tile, reloaded.pixels, reloaded.nImage, tileUsed) &&
                tileUsed.size() == m_warps.size()) {
                log().debug("patch {}: tile {} reloaded from its checkpoint", m_name, tile.str());
                for (std::size_t i = 0; i < m_warps.size(); ++i) {
                    m_usedLocal[i] += tileUsed[i];
                }
                if (direct != nullptr) {
                    parallel::gatherTiles(static_cast<const parallel::Comm*>(nullptr), 0, {reloaded}, *direct,
                                          *directN);
                } else {
                    out.push_back(std::move(reloaded));
                }
                ++done;
                continue;
            }
            parallel::Tile result;
            if (direct == nullptr) {
                result = parallel::Tile{MaskedImage(tile), kernel::ImageU16(tile, 0)};
            }
            MaskedImage& target = direct != nullptr ? *direct : result.pixels;
            kernel::ImageU16& targetN = direct != nullptr ? *directN : result.nImage;
            rows = chunkRows(tile, static_cast<int>(warps.size()), finalFixed);
            for (const Box& chunk : geom::rowChunks(tile, rows)) {
                std::vector<const MaskedImage*> ptrs;
                for (std::size_t i = 0; i < warps.size(); ++i) {
                    warps[i]->reader->read(chunk, bufs[i]);
                    MaskedImage& b = bufs[i];
                    if (!warps[i]->clipped.empty()) {
                        restrictRows(warps[i]->clipped, chunk.y0, chunk.y1()).paint(b.mask, m_bits.clipped);
                    }
                    scaleInPlace(b, warps[i]->scale);
                    std::int64_t used = 0;  // accepted by the final stack: unmasked and finite
                    for (int y = chunk.y0; y < chunk.y1(); ++y) {
                        const MaskPixel* m = b.mask.row(y);
                        const float* im = b.image.row(y);
                        std::uint16_t* n = targetN.row(y) + (chunk.x0 - targetN.box().x0);
                        std::int32_t rowUsed = 0;  // branch-free, so that the loop vectorises
                        for (int k = 0; k < chunk.width; ++k) {
                            const std::int32_t good = (m[k] & andMask) == 0 ? 1 : 0;
                            const std::int32_t finite =
                                (std::bit_cast<std::uint32_t>(im[k]) & 0x7fffffffU) < 0x7f800000U ? 1 : 0;
                            n[k] = static_cast<std::uint16_t>(n[k] + good);
                            rowUsed += good & finite;
                        }
                        used += rowUsed;
                    }
                    tileUsed.resize(m_warps.size(), 0);
                    tileUsed[warpIndex[i]] += used;
                    if (m_bits.remove != 0) {
                        for (MaskPixel& m : b.mask.data()) {
                            m &= ~m_bits.remove;
                        }
                    }
                    ptrs.push_back(&b);
                }
                kernel::stackRegion(ptrs, weights, m_finalCtrl, chunk, target);
            }
            tileUsed.resize(m_warps.size(), 0);
            for (std::size_t i = 0; i < m_warps.size(); ++i) {
                m_usedLocal[i] += tileUsed[i];
            }
            if (checkpointing() && secondsSince(lastCheckpoint) >= m_ckpt.tileInterval) {
                const auto tc = Clock::now();
                if (direct != nullptr) {
                    io::writeTileCheckpoint(tilePath(tile), key, cutout(*direct, tile), cutout(*directN, tile),
                                            tileUsed);
                } else {
                    io::writeTileCheckpoint(tilePath(tile), key, result.pixels, result.nImage, tileUsed);
                }
                m_ckptSeconds += secondsSince(tc);
                std::error_code ec;
                m_ckptBytes += static_cast<std::int64_t>(std::filesystem::file_size(tilePath(tile), ec));
                ++m_ckptTiles;
                lastCheckpoint = Clock::now();
                maybeInjectFailure("tile-checkpoint");
            }
            if (direct == nullptr) {
                out.push_back(std::move(result));
            }
            ++done;
            if (isRoot() && secondsSince(lastLog) > 10.0) {
                lastLog = Clock::now();
                log().info("patch {}: final stack: {}/{} of this rank's tiles", m_name, done, tiles.size());
            }
        }
        log().debug("patch {}: final stack of {} warps on {} tiles ({} rows per chunk) in {:.2f} s", m_name,
                    warps.size(), tiles.size(), rows, secondsSince(t0));
        if (checkpointing()) {
            log().info("patch {}: {} of {} tile checkpoints (checkpoint.tile_interval = {} s), {} in {:.2f} s",
                       m_name, m_ckptTiles, tiles.size(), m_ckpt.tileInterval,
                       geom::formatByteSize(m_ckptBytes), m_ckptSeconds);
        }
        return out;
    }

    // ---- output --------------------------------------------------------------------------------
    void write(const std::string& outPath, const MaskedImage& coadd, const kernel::ImageU16& nImage,
               bool safeclip) {
        io::ExposureData data;
        data.image = &coadd;
        data.maskPlanes = &m_dict;
        data.nImage = &nImage;
        data.wcsCards = m_wcsCards;
        const double zp = m_cfg.getDouble("stack.zero_point");
        auto& pc = data.primaryCards;
        pc.push_back({"FLUXMAG0", std::pow(10.0, 0.4 * zp), "coadd zero point: counts of a mag-0 source"});
        pc.push_back({"ZEROPNT", zp, "coadd AB zero point"});
        pc.push_back({"PATCH", m_name, "patch name"});
        pc.push_back({"SCMODE", m_cfg.getString("coadd.mode"), "safeclip coadd mode"});
        pc.push_back({"SCVERS", std::string(kVersion), "safeclip version"});
        pc.push_back({"SCGITREV", std::string(kGitRevision), "safeclip git revision"});
        const std::vector<std::string> science = scienceConfig(m_cfg);
        pc.push_back({"SCCFGHSH", scienceConfigHash(m_cfg), "hash of the pixel-affecting configuration"});
        if (safeclip) {
            pc.push_back({"PSFSIGMA", m_detect.psfSigma, "detection smoothing sigma (px)"});
            pc.push_back({"PSFSRC", m_psfSource, "where PSFSIGMA came from"});
        }
        if (!m_filter.empty()) {
            pc.push_back({"FILTER", m_filter, "filter of the first warp"});
        }
        std::int64_t nUsed = 0;
        for (const Warp& w : m_warps) {
            nUsed += w.used ? 1 : 0;
        }
        pc.push_back({"NWARPS", static_cast<std::int64_t>(m_warps.size()), "warps given"});
        pc.push_back({"NUSED", nUsed, "warps used"});

        io::Table inputs{"INPUTS", {}};
        std::vector<std::int64_t> visit;
        std::vector<std::string> file;
        std::vector<std::string> status;
        std::vector<double> scale;
        std::vector<double> weight;
        std::vector<std::int64_t> nClipped;
        std::vector<std::int64_t> usedPixels;
        std::vector<std::string> checksum;
        for (const Warp& w : m_warps) {
            usedPixels.push_back(w.nUsedPixels);
            checksum.push_back(w.checksum);
            visit.push_back(w.visit);
            file.push_back(w.input.path);
            status.push_back(w.status);
            scale.push_back(w.used ? static_cast<double>(w.scale) : std::nan(""));
            weight.push_back(w.used ? static_cast<double>(w.weight) : std::nan(""));
            nClipped.push_back(w.nClippedPixels);
        }
        inputs.columns = {{"visit", visit, ""},   {"file", file, ""},
                          {"scale", scale, ""},   {"weight", weight, ""},
                          {"status", status, ""}, {"n_clipped_pixels", nClipped, "pixel"},
                          {"n_used_pixels", usedPixels, "pixel"}, {"checksum", checksum, ""}};
        data.tables.push_back(std::move(inputs));

        if (safeclip) {
            io::Table fp{"FOOTPRINTS", {}};
            fp.columns = {{"id", m_fpId, ""},
                          {"bbox_x0", m_fpX0, "pixel"},
                          {"bbox_y0", m_fpY0, "pixel"},
                          {"bbox_x1", m_fpX1, "pixel"},
                          {"bbox_y1", m_fpY1, "pixel"},
                          {"area", m_fpArea, "pixel"},
                          {"rule", m_fpRule, ""},
                          {"reason", m_fpReason, ""},
                          {"clipped_visits", m_fpClipped, ""}};
            data.tables.push_back(std::move(fp));
            io::Table cd{"CANDIDATES", {}};
            cd.columns = {{"footprint_id", m_cdFootprint, ""}, {"visit", m_cdVisit, ""},
                          {"det", m_cdDet, "pixel"},           {"ign", m_cdIgn, "pixel"},
                          {"fraction", m_cdFraction, ""},      {"clipped", m_cdClipped, ""}};
            data.tables.push_back(std::move(cd));
            io::Table spans{"CLIPPED_SPANS", {}};
            std::vector<std::int64_t> sv;
            std::vector<std::int64_t> sy;
            std::vector<std::int64_t> sx0;
            std::vector<std::int64_t> sx1;
            for (const Warp& w : m_warps) {
                for (const kernel::Span& s : w.clipped.spans()) {
                    sv.push_back(w.visit);
                    sy.push_back(s.y);
                    sx0.push_back(s.x0);
                    sx1.push_back(s.x1);
                }
            }
            spans.columns = {
                {"visit", sv, ""}, {"y", sy, "pixel"}, {"x0", sx0, "pixel"}, {"x1", sx1, "pixel"}};
            data.tables.push_back(std::move(spans));
        }
        io::Table config{"CONFIG", {}};
        config.columns = {{"line", science, ""}};
        data.tables.push_back(std::move(config));
        io::writeExposure(outPath, data);
    }

    const parallel::Comm* m_group = nullptr;
    CheckpointOptions m_ckpt;
    std::string m_name;
    Box m_box;
    kernel::DetectControl m_detect;
    int m_halo = 0;
    int m_tileSize = 0;
    std::vector<std::optional<double>> m_headerPsfSigmas;  ///< PSF sigma of every warp whose header opened
    std::vector<Box> m_tiles;
    std::vector<int> m_tileOwner;
    std::vector<Piece> m_pieces;  ///< root: every tile's footprint pieces
    std::vector<std::int64_t> m_usedLocal;  ///< per warp: pixels used by this rank's final tiles
    double m_ckptSeconds = 0;       ///< time spent writing tile checkpoints on this rank
    std::int64_t m_ckptBytes = 0;   ///< their size
    int m_ckptTiles = 0;            ///< how many were written
    const Config& m_cfg;
    kernel::MaskDict m_dict;
    bool m_requireSameBox = false;
    bool m_skipBad = false;
    std::int64_t m_budget = 0;
    std::vector<Warp> m_warps;
    std::vector<std::string> m_wcsCards;
    std::string m_filter;
    Bits m_bits;
    kernel::StackControl m_meanCtrl, m_clipCtrl, m_finalCtrl;
    kernel::ClipControl m_clipRules;
    std::string m_psfSource;
    // decision table columns
    std::vector<std::int64_t> m_fpId, m_fpX0, m_fpY0, m_fpX1, m_fpY1, m_fpArea;
    std::vector<std::string> m_fpRule, m_fpReason, m_fpClipped;
    std::vector<std::int64_t> m_cdFootprint, m_cdVisit, m_cdDet, m_cdIgn, m_cdClipped;
    std::vector<double> m_cdFraction;
};

}  // namespace

int detectionHalo(const kernel::DetectControl& ctrl) {
    return ctrl.kernelHalfWidth() + ctrl.growRadius() + std::max(0, ctrl.minPixels - 1);
}

double haloSigma(const Config& cfg, const std::vector<std::optional<double>>& headerSigmas) {
    const double fromConfig = cfg.getDouble("detect.psf_sigma");
    if (fromConfig > 0) {
        return fromConfig;
    }
    double sigma = 0;
    for (const auto& s : headerSigmas) {
        if (s && *s > sigma) {
            sigma = *s;
        }
    }
    return sigma;
}

int tileHalo(const Config& cfg, double sigma) {
    kernel::DetectControl dc;
    dc.psfSigma = sigma;
    dc.nSigmaToGrow = cfg.getDouble("detect.n_sigma_to_grow");
    dc.minPixels = static_cast<int>(cfg.getInt("detect.min_pixels"));
    dc.nSigmaForKernel = cfg.getDouble("detect.n_sigma_for_kernel");
    return detectionHalo(dc);
}

PatchResult coaddPatch(const std::string& name, const kernel::Box& box, const std::vector<WarpInput>& warps,
                       const Config& cfg, const std::string& outPath, const parallel::Comm* group,
                       const CheckpointOptions& checkpoints) {
    // Opening the warps is local; agree on it before the first collective.
    std::unique_ptr<PatchRun> run;
    std::string error;
    ExitCode code = ExitCode::Ok;
    try {
        run = std::make_unique<PatchRun>(name, box, warps, cfg, group, checkpoints);
    } catch (const Error& e) {
        error = e.what();
        code = e.code();
    }
    if (!parallel::agreeAll(group, error.empty())) {
        throw Error(error.empty() ? "patch " + name + ": setup failed on another rank of its group" : error,
                    error.empty() ? ExitCode::Internal : code);
    }
    return run->run(outPath);
}

}  // namespace safeclip::app
