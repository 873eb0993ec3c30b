#pragma once
/// @file WarpReader.h  Reads afw Exposure/MaskedImage FITS warps (spec §13).
///
/// IMAGE/MASK/VARIANCE HDUs are found by EXTNAME; xy0 from CRVAL1A/2A (else -LTV1/2); MP_* mask
/// planes are remapped into a canonical MaskDict; 16-bit (BZERO) and 32-bit masks; tile-compressed
/// images (cfitsio's image API); the calibration from FLUXMAG0 (legacy) or the PhotoCalib archive
/// record's calibrationMean. Sub-boxes of uncompressed planes that need no scaling beyond an
/// unsigned BZERO offset (float32 IMAGE/VARIANCE; int32, uint16 or uint32 MASK) are read with
/// pread(2) and byte-swapped here, bit for bit as cfitsio returns them; other planes with cfitsio
/// subset reads. SAFECLIP_NO_FAST_READ=1 in the environment at construction forces cfitsio.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "safeclip/kernel/Image.h"
#include "safeclip/kernel/MaskDict.h"

namespace safeclip::io {

class FitsFile;

/// Everything the header says about one warp.
struct WarpHeader {
    std::string path;
    kernel::Box box;                        ///< PARENT bbox (xy0 and size)
    kernel::MaskDict maskPlanes;            ///< the file's own MP_* dictionary
    std::optional<double> calibrationMean;  ///< nJy per count
    std::string calibrationSource;          ///< "FLUXMAG0", "PhotoCalib" or "" when absent
    std::optional<double> psfSigma;  ///< pixels: PSFSIGMA card, else FWHM/2.35482 (PSF_FWHM/FWHM/SEEING px)
    /// Why a PSF width card present is not used (e.g. "PSFSIGMA = -1.5 is not ..."), "" otherwise.
    std::string psfSigmaProblem;
    std::optional<std::int64_t> visit;  ///< VISIT or EXPID card of HDU 0
    std::vector<std::string> wcsCards;  ///< celestial WCS cards of the IMAGE HDU (CTYPE*, CRPIX*, ...)
    std::string filter;                 ///< FILTER card, or ""
};

class WarpReader {
public:
    /// Opens the file and parses its headers.
    /// @throws InputError "PATH: problem" for a missing/unreadable/non-FITS/truncated file, a
    ///         missing IMAGE/MASK/VARIANCE HDU, a mask without MP_* cards, duplicate MP_ bits,
    ///         planes of different sizes, or a non-2-D image.
    explicit WarpReader(const std::string& path);
    ~WarpReader();
    WarpReader(WarpReader&&) noexcept;
    WarpReader& operator=(WarpReader&&) noexcept;

    [[nodiscard]] const WarpHeader& header() const { return m_header; }

    /// Remap this file's mask bits into `canonical` (adding planes it lacks) for later reads.
    void conformTo(kernel::MaskDict& canonical);

    /// Read `box` (must lie inside header().box) into `out` (resized to box). Masks are remapped.
    void read(const kernel::Box& box, kernel::MaskedImage& out) const;
    [[nodiscard]] kernel::MaskedImage read(const kernel::Box& box) const;
    /// Read only the planes whose pointers are non-null, each box.area() long, row-major.
    void readPlanes(const kernel::Box& box, float* image, kernel::MaskPixel* mask, float* variance) const;

    /// Whole-file read.
    [[nodiscard]] kernel::MaskedImage readAll() const { return read(m_header.box); }

    /// How many of the IMAGE, MASK and VARIANCE planes are read with pread(2) rather than cfitsio.
    [[nodiscard]] int directPlanes() const;

    /// Where the IMAGE pixels lie in the file when they are stored as plain big-endian float32
    /// (uncompressed, no scaling): {byte offset of the first pixel, byte count}; else nullopt.
    /// Lets the weights stage test "every pixel is NaN" on the bytes its checksum reads anyway.
    [[nodiscard]] const std::optional<std::pair<std::int64_t, std::int64_t>>& imageFloatBytes() const {
        return m_imageFloatBytes;
    }

private:
    class RawReader;  ///< the pread(2) fast path: its own file descriptor and the planes' layout

    std::unique_ptr<FitsFile> m_file;
    std::unique_ptr<RawReader> m_raw;  ///< null when no plane qualifies (or SAFECLIP_NO_FAST_READ=1)
    WarpHeader m_header;
    int m_imageHdu = 0, m_maskHdu = 0, m_varianceHdu = 0;
    kernel::MaskRemap m_remap;
    std::optional<std::pair<std::int64_t, std::int64_t>> m_imageFloatBytes;
};

/// Pixel bytes this process has read from warps so far (every plane of every read), for the run report.
std::int64_t warpBytesRead();

/// calibrationMean (nJy/count) for a legacy FLUXMAG0: referenceFlux / FLUXMAG0 with afw's
/// referenceFlux = 1e23 * 10^(48.6/-2.5) * 1e9 ≈ 3630.78e9 nJy (spec §13.4).
double calibrationFromFluxMag0(double fluxMag0);

/// Why `path` must not be opened for reading as a file: "" for a regular file (symbolic links are
/// followed) or a path that does not exist (the open then reports it); else "not a regular file (a
/// FIFO)", "(a directory)", "(a socket)", "(a character device)" or "(a block device)". Uses stat(2)
/// only, so a FIFO cannot block. Used before every warp, manifest and config file is opened.
std::string notRegularFileProblem(const std::string& path);
/// Size and modification time (ns since the epoch) of a file, as the "open" stage records them for
/// each warp; {-1, -1} when it cannot be stat'ed.
[[nodiscard]] std::pair<std::int64_t, std::int64_t> fileSizeAndMtime(const std::string& path);
/// (device, inode) of a file, symbolic links followed; nullopt when it cannot be stat'ed. Two paths
/// with the same identity are the same file (hard links, symlinks, other spellings).
[[nodiscard]] std::optional<std::pair<std::uint64_t, std::uint64_t>> fileIdentity(const std::string& path);

}  // namespace safeclip::io
