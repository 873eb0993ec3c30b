#pragma once
/// @file Checkpoint.h  HDF5 checkpoints of a patch's finished stages, published atomically.
///
/// The file is built in memory (HDF5's core driver: HDF5 does no file I/O), then written under
/// "<path>.tmp.<pid>", fsynced and renamed over <path> (io::writeAtomically): a reader never sees a
/// torn file, and a failed write is an OutputError naming <path> and the system's reason.
/// Integrity: the first 512 bytes are an HDF5 user block holding the text
///   "SAFECLIP-CHECKPOINT <kCheckpointFormatVersion>\nsize <bytes of the file>\ncrc32 <8 hex>\n", NUL-padded,
/// the CRC-32 (zlib's, as fileChecksum) of bytes [512, size). A reader reads the whole file with
/// POSIX I/O (a regular file only), checks the header, size and CRC, and only then lets HDF5 parse
/// the verified bytes in memory: damage (bit flips, zeroed blocks, truncation, appended bytes) and
/// version-1 files (no header) are Invalid with a reason, never parsed; so is any other version
/// (version 2 lacked the comparewarp state: a file of it is recomputed, tiles included).
/// Every file also carries `format_version`, `safeclip_version`, `config_hash`, `input_hash`,
/// `stage` and `complete = 1` (written last); readPatchCheckpoint() refuses files that fail any
/// check and says why. The decision checkpoint also has the attributes `mode` (coadd.mode),
/// `n_footprints`, `n_clipped_footprints`, `psf_sigma`, `psf_source`, and for comparewarp
/// `cw_max_radius`, `cw_mean_nimage`.
/// Layout (HDF5, Debian's parallel build, written by one rank; strings are fixed-length, NUL-padded):
///   /warps          compound {visit i64, scale f32, weight f32, used u8, n_clipped i64, n_big i64,
///                   template_weight f32, variance_factor f64} (the last two: comparewarp; 0 and 1 else)
///   /warp_checksum  strings, one per warp
///   /warp_status    strings, one per warp
///   /clipped_spans  compound {warp i32, y i32, x0 i32, x1 i32}, chunked + deflate
///   /footprints     compound {id, x0, y0, x1, y1, area: i64}; /fp_rule /fp_reason /fp_clipped strings
///   /candidates     compound {footprint_id i64, visit i64, det i64, ign i64, fraction f64, clipped i64}
///                   (both made from the row descriptions kernel::FootprintRow/CandidateRow::fields)
///   comparewarp mode (empty in the others):
///   /nodata_spans   compound {warp i32, y i32, x0 i32, x1 i32}: each warp's NO_DATA spans of the
///                   whole patch (where warp − template has no value), chunked + deflate
///   /cw_edge_spans  the same compound, warp -1: the PSF-matched warps' EDGE pixels
///   /cw_footprints  kernel::CompareWarpRow::fields (numeric members), /cw_rule strings
///   /inputs         strings "path|size|mtime_ns" (to name what changed)
///   tile files: /image /variance (f32), /mask (i32), /nimage (u16), chunked + deflate, attr box,
///               /used_per_warp (i64: pixels each warp contributed to the tile).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "safeclip/io/Hash.h"  // hashStrings, for the config and input hashes
#include "safeclip/kernel/DecisionTable.h"
#include "safeclip/kernel/Image.h"
#include "safeclip/kernel/SpanSet.h"

namespace safeclip::io {

inline constexpr int kCheckpointFormatVersion = 3;

/// What identifies the run a checkpoint belongs to.
struct CheckpointKey {
    std::string configHash;           ///< hash of the pixel-affecting configuration
    std::string inputHash;            ///< hash of the input list (paths, sizes, mtimes)
    std::vector<std::string> inputs;  ///< "path|size|mtime_ns" per warp, to say what changed
};

/// Per-warp state after the weights and the clip decisions.
struct WarpState {
    std::int64_t visit = 0;
    float scale = 0;
    float weight = 0;
    bool used = false;
    std::string status;
    std::int64_t nClippedPixels = 0;
    std::int64_t nBigFootprints = 0;
    std::string checksum;  ///< "crc32:..." of the warp file
    std::vector<kernel::Span> clipped;
    // comparewarp mode only (defaults in the others):
    float templateWeight = 0;          ///< "cw_stats": the warp's weight in the template
    double varianceFactor = 1.0;       ///< "cw_stats": its ScaleVariance factor
    std::vector<kernel::Span> noData;  ///< "cw_compare": NO_DATA spans of the final stack, whole patch

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar& visit& scale& weight& used& status& nClippedPixels& nBigFootprints& checksum& clipped;
        ar& templateWeight& varianceFactor& noData;
    }
};

/// A patch after its decisions (safeclip: "reduce"; comparewarp: "cw_decide"): enough to run the
/// final stack and write the coadd.
struct PatchState {
    std::string stage;  ///< "weights" or "reduced"
    std::string mode;   ///< coadd.mode that made it (the config hash covers it too)
    std::vector<WarpState> warps;
    std::int64_t nFootprints = 0;
    std::int64_t nClippedFootprints = 0;
    double psfSigma = 0;  ///< safeclip: detection σ; comparewarp: the model PSF σ_m
    std::string psfSource;
    kernel::DecisionTable decisions;  ///< safeclip mode
    // comparewarp mode only (empty in the others):
    int cwMaxRadius = 0;                         ///< largest matching-kernel half-width (sets the halo)
    double cwMeanNImage = 0;                     ///< mean approximate nImage of the patch
    std::vector<kernel::CompareWarpRow> cwRows;  ///< FOOTPRINTS rows of the mode
    std::vector<kernel::Span> cwEdge;            ///< union of the PSF-matched warps' EDGE pixels

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar& stage& mode& warps& nFootprints& nClippedFootprints& psfSigma& psfSource& decisions;
        ar& cwMaxRadius& cwMeanNImage& cwRows& cwEdge;
    }
};

/// Write atomically. @throws OutputError naming the path
void writePatchCheckpoint(const std::string& path, const CheckpointKey& key, const PatchState& state);

/// Why a checkpoint cannot be used.
enum class CheckpointStatus { Ok, Missing, Invalid, ConfigChanged, InputChanged };

struct CheckpointRead {
    CheckpointStatus status = CheckpointStatus::Missing;
    std::string reason;  ///< one line: what is wrong or what changed
    PatchState state;
};

/// Read and validate against `key`. Never throws for a bad file: the status says why.
CheckpointRead readPatchCheckpoint(const std::string& path, const CheckpointKey& key);

/// A finished final tile (pixels and nImage on the tile box).
void writeTileCheckpoint(const std::string& path, const CheckpointKey& key, const kernel::MaskedImage& pixels,
                         const kernel::ImageU16& nImage, const std::vector<std::int64_t>& usedPerWarp);
/// Returns true and fills the outputs when a valid tile checkpoint for exactly `box` exists. On false
/// the outputs are untouched and `reason` (when given) is one line naming the file and the problem,
/// or empty when there is no such file.
bool readTileCheckpoint(const std::string& path, const CheckpointKey& key, const kernel::Box& box,
                        kernel::MaskedImage& pixels, kernel::ImageU16& nImage,
                        std::vector<std::int64_t>& usedPerWarp, std::string* reason = nullptr);

/// "crc32:xxxxxxxx" of a file's bytes (zlib's CRC-32, computed with ISA-L), read in 256 KiB blocks. @throws
/// InputError
std::string fileChecksum(const std::string& path);

/// A file's checksum and, on the way, whether a range of big-endian float32 values holds one that
/// is not NaN (one read of the file for both).
struct FileScan {
    std::string checksum;   ///< as fileChecksum
    bool anyNotNaN = true;  ///< some value in the range is not a NaN (true for an empty range)
};
/// fileChecksum(path), and the NaN test over `float32Range` = {byte offset, byte count} (offset a
/// multiple of 4, as a FITS data unit's is). @throws InputError as fileChecksum, or when the file
/// ends before the range does.
FileScan scanFile(const std::string& path, std::pair<std::int64_t, std::int64_t> float32Range);
/// "path|size|mtime_ns" of a file ("path|missing" when it cannot be stat'ed).
std::string fileFingerprint(const std::string& path);

}  // namespace safeclip::io
