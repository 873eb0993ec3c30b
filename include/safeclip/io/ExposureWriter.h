#pragma once
/// @file ExposureWriter.h  Writes afw-layout exposures (warps from the simulator/ingest, and
/// coadds): empty primary HDU with metadata, IMAGE, MASK (MP_* for every plane), VARIANCE, then
/// optional NIMAGE and binary tables. Every HDU carries DATASUM and CHECKSUM (with fixed comments,
/// so the same content gives the same bytes). The file is written to "<path>.tmp.<pid>", closed, fsynced
/// and renamed over <path>: a reader never sees a half-written file.
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "safeclip/kernel/Image.h"
#include "safeclip/kernel/MaskDict.h"

namespace safeclip::io {

/// One header card for HDU 0.
struct HeaderCard {
    std::string key;  ///< <= 8 chars, or a HIERARCH key
    std::variant<std::string, double, std::int64_t, bool> value;
    std::string comment;
};

/// One column of a binary table (all columns of a table have the same length).
struct Column {
    std::string name;
    std::variant<std::vector<std::int64_t>, std::vector<double>, std::vector<std::string>> data;
    std::string unit;
    [[nodiscard]] std::size_t size() const;
};

struct Table {
    std::string extname;
    std::vector<Column> columns;
};

/// The column `name` of `t`, if it has one of type T (else nullptr).
template <class T>
const std::vector<T>* column(const Table& t, const std::string& name) {
    for (const Column& c : t.columns) {
        if (c.name == name) {
            return std::get_if<std::vector<T>>(&c.data);
        }
    }
    return nullptr;
}

/// What to write.
struct ExposureData {
    const kernel::MaskedImage* image = nullptr;    ///< required
    const kernel::MaskDict* maskPlanes = nullptr;  ///< required: written as MP_* on MASK
    std::vector<HeaderCard> primaryCards;          ///< e.g. FLUXMAG0, VISIT, provenance
    std::vector<std::string> wcsCards;             ///< celestial WCS cards copied onto IMAGE/MASK/VARIANCE
    const kernel::ImageU16* nImage = nullptr;      ///< optional NIMAGE HDU
    std::vector<Table> tables;                     ///< optional BINTABLE HDUs after the images
    /// BUNIT of IMAGE with this comment (<= 47 characters), and BUNIT + "2" of VARIANCE; none when
    /// empty.
    std::string imageUnit;
    std::string imageUnitComment;
};

/// Write atomically (tmp + fsync + rename). Overwrites an existing file only at the rename.
/// @throws OutputError naming the path and the problem; the temporary is removed on failure.
void writeExposure(const std::string& path, const ExposureData& data);

/// What is wrong with a finished FITS file, if anything (checkFitsIntegrity).
struct FitsIntegrity {
    std::string problem;                ///< one line; empty when the file is whole
    std::vector<std::string> extnames;  ///< EXTNAME of HDUs 2.. in file order (as far as they were read)
};

/// Checks a FITS file written by writeExposure/writeImageHdus: its size is a positive multiple of
/// 2880, every HDU reads and carries DATASUM and CHECKSUM that match its bytes, and nothing follows
/// the last HDU. Reads the whole file once. Never throws: the problem is in the result.
[[nodiscard]] FitsIntegrity checkFitsIntegrity(const std::string& path);

/// Read a BINTABLE HDU by EXTNAME back into a Table (for tests and tools).
/// @throws InputError
Table readTable(const std::string& path, const std::string& extname);

/// Read the NIMAGE HDU of a coadd. @throws InputError
kernel::ImageU16 readNImage(const std::string& path);

/// Read one float image HDU by EXTNAME (e.g. truth planes). @throws InputError
kernel::ImageF readImageHdu(const std::string& path, const std::string& extname);

/// Write float image HDUs by EXTNAME into one file (atomic), e.g. the simulator's truth file, with
/// `wcsCards` (celestial WCS) on each.
void writeImageHdus(const std::string& path,
                    const std::vector<std::pair<std::string, const kernel::ImageF*>>& hdus,
                    const std::vector<HeaderCard>& primaryCards,
                    const std::vector<std::string>& wcsCards = {});

}  // namespace safeclip::io
