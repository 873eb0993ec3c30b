#include "safeclip/io/ExposureWriter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>

#include "safeclip/io/AtomicFile.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::io {

namespace {

[[noreturn]] void failRead(const std::string& path, const std::string& what) {
    throw InputError(path + ": " + what);
}

[[noreturn]] void failWrite(const std::string& path, const std::string& what) {
    throw OutputError(path + ": " + what);
}

/// DATASUM and CHECKSUM (FITS standard §4.4.2.7) on every HDU of `f`, with fixed comments so that
/// the same content gives the same bytes: cfitsio's fits_write_chksum stamps the time into the
/// comments, so after a first pass the comments are reset and a second pass, which finds DATASUM
/// already right and CHECKSUM undefined, fills in CHECKSUM keeping the comment ("&").
void writeChecksums(const FitsFile& f) {
    fitsfile* fp = f.get();
    int status = 0;
    int nHdus = 0;
    fits_get_num_hdus(fp, &nHdus, &status);
    f.check(status, "count HDUs");
    for (int hdu = 1; hdu <= nHdus; ++hdu) {
        fits_movabs_hdu(fp, hdu, nullptr, &status);
        fits_write_chksum(fp, &status);
        fits_modify_comment(fp, "DATASUM", "data unit checksum", &status);
        fits_modify_key_str(fp, "CHECKSUM", "0000000000000000", "HDU checksum", &status);
        fits_write_chksum(fp, &status);
        f.check(status, "HDU " + std::to_string(hdu) + ": write DATASUM/CHECKSUM");
    }
}

/// Space for DATASUM and CHECKSUM in the header being written, before its data, so that
/// writeChecksums never has to grow a header (and move the data behind it).
void reserveChecksumCards(const FitsFile& f) {
    int status = 0;
    fits_write_key_str(f.get(), "CHECKSUM", "0000000000000000", "HDU checksum", &status);
    fits_write_key_str(f.get(), "DATASUM", "0", "data unit checksum", &status);
    f.check(status, "write CHECKSUM/DATASUM");
}

/// Writes a FITS file atomically (io::writeAtomically): `body` fills the temporary, which is then
/// closed and published as `path`. On any failure the temporary is removed and an OutputError naming
/// `path` is thrown.
void writeFitsAtomically(const std::string& path, const std::function<void(FitsFile&)>& body) {
    writeAtomically(
        path,
        [&](const std::string& tmp) {
            FitsFile file(tmp, FitsFile::Mode::Create);
            body(file);
            writeChecksums(file);
            file.close();
        },
        "the FITS file");
}

/// Shortest "%.*G" precision that reads back as the same double (15..17 digits).
int roundTripDigits(double v) {
    for (int digits = 15; digits < 17; ++digits) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%.*G", digits, v);
        if (std::strtod(buf, nullptr) == v) {
            return digits;
        }
    }
    return 17;
}

void writeDoubleKey(const FitsFile& f, const std::string& key, double v, const std::string& comment) {
    int status = 0;
    if (std::isfinite(v)) {
        fits_write_key_dbl(f.get(), key.c_str(), v, -roundTripDigits(v), comment.c_str(), &status);
    } else {
        // FITS has no literal for NaN/inf: write it as a string.
        const char* text = std::isnan(v) ? "NaN" : (v > 0 ? "Inf" : "-Inf");
        fits_write_key_str(f.get(), key.c_str(), text, comment.c_str(), &status);
    }
    f.check(status, "write keyword " + key);
}

void writeCard(const FitsFile& f, const HeaderCard& card) {
    if (card.key.empty()) {
        failWrite(f.path(), "header card with an empty keyword");
    }
    int status = 0;
    const char* comment = card.comment.c_str();
    if (const auto* s = std::get_if<std::string>(&card.value)) {
        fits_write_key_longstr(f.get(), card.key.c_str(), s->c_str(), comment, &status);
    } else if (const auto* d = std::get_if<double>(&card.value)) {
        writeDoubleKey(f, card.key, *d, card.comment);
        return;
    } else if (const auto* i = std::get_if<std::int64_t>(&card.value)) {
        LONGLONG v = *i;
        fits_write_key(f.get(), TLONGLONG, card.key.c_str(), &v, comment, &status);
    } else {
        int v = std::get<bool>(card.value) ? 1 : 0;
        fits_write_key(f.get(), TLOGICAL, card.key.c_str(), &v, comment, &status);
    }
    f.check(status, "write keyword " + card.key);
}

/// Empty primary HDU (NAXIS = 0, EXTEND = T) with the given cards.
void writePrimary(const FitsFile& f, const std::vector<HeaderCard>& cards) {
    int status = 0;
    fits_create_img(f.get(), BYTE_IMG, 0, nullptr, &status);
    f.check(status, "create primary HDU");
    for (const HeaderCard& card : cards) {
        writeCard(f, card);
    }
    reserveChecksumCards(f);
}

/// EXTNAME/EXTTYPE, INHERIT, LTV and the afw "A" WCS that records xy0, then the celestial WCS.
void writeImageCards(const FitsFile& f, const std::string& extname, const kernel::Box& box,
                     const std::vector<std::string>& wcsCards) {
    fitsfile* fp = f.get();
    int status = 0;
    fits_write_key_str(fp, "EXTNAME", extname.c_str(), "", &status);
    fits_write_key_str(fp, "EXTTYPE", extname.c_str(), "", &status);
    int inherit = 1;
    fits_write_key(fp, TLOGICAL, "INHERIT", &inherit, "", &status);
    LONGLONG ltv1 = -static_cast<LONGLONG>(box.x0);
    LONGLONG ltv2 = -static_cast<LONGLONG>(box.y0);
    LONGLONG x0 = box.x0;
    LONGLONG y0 = box.y0;
    LONGLONG one = 1;
    fits_write_key(fp, TLONGLONG, "LTV1", &ltv1, "", &status);
    fits_write_key(fp, TLONGLONG, "LTV2", &ltv2, "", &status);
    fits_write_key_str(fp, "CTYPE1A", "LINEAR", "Type of projection", &status);
    fits_write_key_str(fp, "CTYPE2A", "LINEAR", "Type of projection", &status);
    fits_write_key(fp, TLONGLONG, "CRPIX1A", &one, "Column Pixel Coordinate of Reference", &status);
    fits_write_key(fp, TLONGLONG, "CRPIX2A", &one, "Row Pixel Coordinate of Reference", &status);
    fits_write_key(fp, TLONGLONG, "CRVAL1A", &x0, "Column pixel of Reference Pixel", &status);
    fits_write_key(fp, TLONGLONG, "CRVAL2A", &y0, "Row pixel of Reference Pixel", &status);
    fits_write_key_str(fp, "CUNIT1A", "PIXEL", "Column unit", &status);
    fits_write_key_str(fp, "CUNIT2A", "PIXEL", "Row unit", &status);
    f.check(status, extname + ": write header");
    for (const std::string& card : wcsCards) {
        if (card.find_first_not_of(' ') == std::string::npos) {
            continue;
        }
        const std::string c = card.substr(0, 80);
        fits_write_record(fp, c.c_str(), &status);
        f.check(status, extname + ": write WCS card '" + c.substr(0, 8) + "'");
    }
    reserveChecksumCards(f);
}

/// Creates a 2-D image HDU of `box` size and writes n pixels of `datatype`.
void writeImageHdu(const FitsFile& f, const std::string& extname, int bitpix, int datatype,
                   const void* pixels, const kernel::Box& box, const std::vector<std::string>& wcsCards,
                   const std::function<void()>& extraCards = {}) {
    fitsfile* fp = f.get();
    int status = 0;
    long naxes[2] = {std::max(box.width, 0), std::max(box.height, 0)};
    fits_create_img(fp, bitpix, 2, naxes, &status);
    f.check(status, "create " + extname + " HDU");
    writeImageCards(f, extname, box, wcsCards);
    if (extraCards) {
        extraCards();
    }
    const auto n = static_cast<LONGLONG>(box.area());
    if (n > 0) {
        fits_write_img(fp, datatype, 1, n, const_cast<void*>(pixels), &status);
        f.check(status, "write " + extname + " pixels");
    }
}

void checkBox(const std::string& path, const std::string& what, const kernel::Box& expected,
              const kernel::Box& actual) {
    if (expected != actual) {
        throw InvalidParameter(path + ": " + what + " box " + actual.str() + " differs from image box " +
                               expected.str());
    }
}

void writeTable(const FitsFile& f, const Table& table) {
    fitsfile* fp = f.get();
    const std::string& name = table.extname;
    const std::size_t nRows = table.columns.empty() ? 0 : table.columns.front().size();
    std::vector<std::string> ttype;
    std::vector<std::string> tform;
    std::vector<std::string> tunit;
    for (const Column& col : table.columns) {
        if (col.size() != nRows) {
            failWrite(f.path(), "table " + name + ": column " + col.name + " has " +
                                    std::to_string(col.size()) + " rows, expected " + std::to_string(nRows));
        }
        if (col.name.empty()) {
            failWrite(f.path(), "table " + name + ": column with an empty name");
        }
        ttype.push_back(col.name);
        tunit.push_back(col.unit);
        if (std::holds_alternative<std::vector<std::int64_t>>(col.data)) {
            tform.emplace_back("K");
        } else if (std::holds_alternative<std::vector<double>>(col.data)) {
            tform.emplace_back("D");
        } else {
            std::size_t width = 1;
            for (const std::string& s : std::get<std::vector<std::string>>(col.data)) {
                width = std::max(width, s.size());
            }
            tform.push_back(std::to_string(width) + "A");
        }
    }
    std::vector<char*> ttypeP;
    std::vector<char*> tformP;
    std::vector<char*> tunitP;
    for (std::size_t i = 0; i < ttype.size(); ++i) {
        ttypeP.push_back(ttype[i].data());
        tformP.push_back(tform[i].data());
        tunitP.push_back(tunit[i].data());
    }
    int status = 0;
    fits_create_tbl(fp, BINARY_TBL, static_cast<LONGLONG>(nRows), static_cast<int>(ttype.size()),
                    ttypeP.data(), tformP.data(), tunitP.data(), name.c_str(), &status);
    f.check(status, "create table " + name);
    reserveChecksumCards(f);
    if (nRows == 0) {
        return;
    }
    // Row-major on disk: write cfitsio's optimal number of rows at a time, every column for those
    // rows, so its I/O buffers are filled once instead of thrashing column by column over a table
    // larger than them (a 100k-row CLIPPED_SPANS table took ~16k small writes and ~27k seeks).
    long chunk = 0;
    fits_get_rowsize(fp, &chunk, &status);
    f.check(status, "table " + name + " row size");
    chunk = std::max(chunk, 1L);
    std::vector<std::vector<LONGLONG>> ints(table.columns.size());
    std::vector<std::vector<char*>> strs(table.columns.size());
    for (std::size_t c = 0; c < table.columns.size(); ++c) {
        const Column& col = table.columns[c];
        if (const auto* iv = std::get_if<std::vector<std::int64_t>>(&col.data)) {
            ints[c].assign(iv->begin(), iv->end());
        } else if (const auto* sv = std::get_if<std::vector<std::string>>(&col.data)) {
            strs[c].reserve(sv->size());
            for (const std::string& str : *sv) {
                strs[c].push_back(const_cast<char*>(str.c_str()));
            }
        }
    }
    for (std::size_t first = 0; first < nRows; first += static_cast<std::size_t>(chunk)) {
        const auto n =
            static_cast<LONGLONG>(std::min<std::size_t>(static_cast<std::size_t>(chunk), nRows - first));
        const auto row = static_cast<LONGLONG>(first) + 1;
        for (std::size_t c = 0; c < table.columns.size(); ++c) {
            const Column& col = table.columns[c];
            const int colnum = static_cast<int>(c) + 1;
            if (!ints[c].empty()) {
                fits_write_col(fp, TLONGLONG, colnum, row, 1, n, ints[c].data() + first, &status);
            } else if (const auto* dv = std::get_if<std::vector<double>>(&col.data)) {
                fits_write_col(fp, TDOUBLE, colnum, row, 1, n, const_cast<double*>(dv->data()) + first,
                               &status);
            } else {
                fits_write_col(fp, TSTRING, colnum, row, 1, n, strs[c].data() + first, &status);
            }
            f.check(status, "write table " + name + " column " + col.name);
        }
    }
}

/// Moves to the image HDU `extname` and returns its box (size and xy0).
kernel::Box openImageHdu(const FitsFile& f, const std::string& extname) {
    const auto hdu = f.findExtension(extname);
    if (!hdu) {
        failRead(f.path(), "no " + extname + " HDU");
    }
    f.moveToHdu(*hdu);
    int status = 0;
    int type = 0;
    int bitpix = 0;
    int naxis = 0;
    long naxes[9] = {};
    fits_get_hdu_type(f.get(), &type, &status);
    fits_get_img_param(f.get(), 9, &bitpix, &naxis, naxes, &status);
    f.check(status, "read " + extname + " HDU");
    if (type != IMAGE_HDU || naxis != 2) {
        failRead(f.path(), extname + " HDU is not a 2-D image");
    }
    auto pixel = [&f, &extname](std::optional<double> v, const char* key) {
        if (!v) {
            return 0;
        }
        if (!std::isfinite(*v) || *v != std::round(*v) || std::abs(*v) > 1e9) {
            failRead(f.path(), extname + ": " + key + " is not an integer pixel coordinate");
        }
        return static_cast<int>(*v);
    };
    int x0 = 0;
    int y0 = 0;
    const auto c1 = f.readDouble("CRVAL1A");
    const auto c2 = f.readDouble("CRVAL2A");
    if (c1 && c2) {
        x0 = pixel(c1, "CRVAL1A");
        y0 = pixel(c2, "CRVAL2A");
    } else {
        const auto l1 = f.readDouble("LTV1");
        const auto l2 = f.readDouble("LTV2");
        x0 = -pixel(l1, "LTV1");
        y0 = -pixel(l2, "LTV2");
    }
    return kernel::Box{x0, y0, static_cast<int>(naxes[0]), static_cast<int>(naxes[1])};
}

}  // namespace

std::size_t Column::size() const {
    return std::visit([](const auto& v) { return v.size(); }, data);
}

void writeExposure(const std::string& path, const ExposureData& data) {
    if (data.image == nullptr || data.maskPlanes == nullptr) {
        throw InvalidParameter(path + ": writeExposure needs an image and its mask planes");
    }
    const kernel::MaskedImage& mi = *data.image;
    const kernel::Box box = mi.box();
    checkBox(path, "mask", box, mi.mask.box());
    checkBox(path, "variance", box, mi.variance.box());
    writeFitsAtomically(path, [&](FitsFile& f) {
        writePrimary(f, data.primaryCards);
        auto writeUnit = [&](const std::string& unit, const std::string& comment) {  // before the pixels
            if (data.imageUnit.empty()) {
                return;
            }
            int status = 0;
            fits_write_key_str(f.get(), "BUNIT", unit.c_str(), comment.c_str(), &status);
            f.check(status, "write BUNIT");
        };
        writeImageHdu(f, "IMAGE", FLOAT_IMG, TFLOAT, mi.image.data().data(), box, data.wcsCards,
                      [&] { writeUnit(data.imageUnit, data.imageUnitComment); });

        // MASK: int32 with one MP_<NAME> card per plane. The cards go before the pixels so that
        // the header does not need to grow after the data are written.
        fitsfile* fp = f.get();
        int status = 0;
        long naxes[2] = {std::max(box.width, 0), std::max(box.height, 0)};
        fits_create_img(fp, LONG_IMG, 2, naxes, &status);
        f.check(status, "create MASK HDU");
        writeImageCards(f, "MASK", box, data.wcsCards);
        for (const auto& [name, bit] : data.maskPlanes->planes()) {
            LONGLONG b = bit;
            const std::string key = "MP_" + name;
            fits_write_key(fp, TLONGLONG, key.c_str(), &b, "", &status);
            f.check(status, "MASK: write keyword " + key);
        }
        if (box.area() > 0) {
            fits_write_img(fp, TINT, 1, static_cast<LONGLONG>(box.area()),
                           const_cast<kernel::MaskPixel*>(mi.mask.data().data()), &status);
            f.check(status, "write MASK pixels");
        }

        writeImageHdu(f, "VARIANCE", FLOAT_IMG, TFLOAT, mi.variance.data().data(), box, data.wcsCards,
                      [&] { writeUnit(data.imageUnit + "2", "variance of IMAGE"); });
        if (data.nImage != nullptr) {
            writeImageHdu(f, "NIMAGE", USHORT_IMG, TUSHORT, data.nImage->data().data(), data.nImage->box(),
                          data.wcsCards);
        }
        for (const Table& table : data.tables) {
            writeTable(f, table);
        }
    });
}

Table readTable(const std::string& path, const std::string& extname) {
    FitsFile f(path, FitsFile::Mode::Read);
    const auto hdu = f.findExtension(extname);
    if (!hdu) {
        failRead(path, "no " + extname + " table");
    }
    f.moveToHdu(*hdu);
    fitsfile* fp = f.get();
    int status = 0;
    int type = 0;
    fits_get_hdu_type(fp, &type, &status);
    f.check(status, "read " + extname + " HDU");
    if (type != BINARY_TBL) {
        failRead(path, extname + " HDU is not a binary table");
    }
    LONGLONG nRows = 0;
    int nCols = 0;
    fits_get_num_rowsll(fp, &nRows, &status);
    fits_get_num_cols(fp, &nCols, &status);
    f.check(status, extname + ": read table size");
    Table table;
    table.extname = extname;
    for (int c = 1; c <= nCols; ++c) {
        Column col;
        col.name = f.readString("TTYPE" + std::to_string(c)).value_or("");
        col.unit = f.readString("TUNIT" + std::to_string(c)).value_or("");
        int typecode = 0;
        LONGLONG repeat = 0;
        LONGLONG width = 0;
        fits_get_eqcoltypell(fp, c, &typecode, &repeat, &width, &status);
        f.check(status, extname + ": read type of column " + col.name);
        const auto n = static_cast<std::size_t>(nRows);
        switch (typecode) {
            case TBYTE:
            case TSBYTE:
            case TSHORT:
            case TUSHORT:
            case TINT:
            case TUINT:
            case TLONG:
            case TLONGLONG: {
                if (repeat != 1) {
                    failRead(path, extname + ": column " + col.name + " is a vector column (not supported)");
                }
                std::vector<LONGLONG> v(n);
                if (n > 0) {
                    fits_read_col(fp, TLONGLONG, c, 1, 1, nRows, nullptr, v.data(), nullptr, &status);
                }
                col.data = std::vector<std::int64_t>(v.begin(), v.end());
                break;
            }
            case TFLOAT:
            case TDOUBLE: {
                if (repeat != 1) {
                    failRead(path, extname + ": column " + col.name + " is a vector column (not supported)");
                }
                std::vector<double> v(n);
                if (n > 0) {
                    fits_read_col(fp, TDOUBLE, c, 1, 1, nRows, nullptr, v.data(), nullptr, &status);
                }
                col.data = std::move(v);
                break;
            }
            case TSTRING: {
                const auto w = static_cast<std::size_t>(std::max<LONGLONG>(width, repeat)) + 1;
                std::vector<char> buffer(std::max<std::size_t>(n, 1) * w, '\0');
                std::vector<char*> p(n);
                for (std::size_t i = 0; i < n; ++i) {
                    p[i] = buffer.data() + i * w;
                }
                if (n > 0) {
                    char nul[] = "";
                    fits_read_col_str(fp, c, 1, 1, nRows, nul, p.data(), nullptr, &status);
                }
                std::vector<std::string> v;
                v.reserve(n);
                for (std::size_t i = 0; i < n; ++i) {
                    // Trailing blanks are not significant in FITS strings (an empty string
                    // comes back from cfitsio as " ").
                    std::string s(p[i]);
                    while (!s.empty() && s.back() == ' ') {
                        s.pop_back();
                    }
                    v.push_back(std::move(s));
                }
                col.data = std::move(v);
                break;
            }
            default:
                failRead(path, extname + ": column " + col.name + " has an unsupported type (code " +
                                   std::to_string(typecode) + ")");
        }
        f.check(status, extname + ": read column " + col.name);
        table.columns.push_back(std::move(col));
    }
    return table;
}

kernel::ImageU16 readNImage(const std::string& path) {
    FitsFile f(path, FitsFile::Mode::Read);
    const kernel::Box box = openImageHdu(f, "NIMAGE");
    kernel::ImageU16 out(box);
    if (box.area() > 0) {
        int status = 0;
        fits_read_img(f.get(), TUSHORT, 1, static_cast<LONGLONG>(box.area()), nullptr, out.data().data(),
                      nullptr, &status);
        f.check(status, "read NIMAGE pixels");
    }
    return out;
}

kernel::ImageF readImageHdu(const std::string& path, const std::string& extname) {
    FitsFile f(path, FitsFile::Mode::Read);
    const kernel::Box box = openImageHdu(f, extname);
    kernel::ImageF out(box);
    if (box.area() > 0) {
        int status = 0;
        fits_read_img(f.get(), TFLOAT, 1, static_cast<LONGLONG>(box.area()), nullptr, out.data().data(),
                      nullptr, &status);
        f.check(status, "read " + extname + " pixels");
    }
    return out;
}

FitsIntegrity checkFitsIntegrity(const std::string& path) {
    FitsIntegrity out;
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) {
        out.problem = "cannot read its size: " + ec.message();
        return out;
    }
    if (size == 0 || size % 2880 != 0) {
        out.problem = "size " + std::to_string(size) +
                      " bytes is not a positive multiple of 2880 (truncated or extended)";
        return out;
    }
    fitsfile* fp = nullptr;
    int status = 0;
    if (fits_open_diskfile(&fp, path.c_str(), READONLY, &status) != 0) {
        char text[FLEN_STATUS] = {};
        fits_get_errstatus(status, text);
        fits_clear_errmsg();
        out.problem = std::string("cannot open as FITS: ") + text;
        return out;
    }
    LONGLONG end = 0;
    for (int hdu = 1;; ++hdu) {
        int type = 0;
        if (fits_movabs_hdu(fp, hdu, &type, &status) != 0) {
            if (status == END_OF_FILE && hdu > 1) {
                status = 0;
                break;
            }
            char text[FLEN_STATUS] = {};
            fits_get_errstatus(status, text);
            out.problem = "HDU " + std::to_string(hdu) + " is unreadable: " + text;
            break;
        }
        std::string extname;
        if (hdu > 1) {
            char value[FLEN_VALUE] = {};
            int s = 0;
            fits_read_key_str(fp, "EXTNAME", value, nullptr, &s);
            extname = s == 0 ? value : "";
            out.extnames.push_back(extname);
        }
        const std::string name = "HDU " + std::to_string(hdu) + (extname.empty() ? "" : " (" + extname + ")");
        int dataOk = 0;
        int hduOk = 0;
        if (fits_verify_chksum(fp, &dataOk, &hduOk, &status) != 0) {
            char text[FLEN_STATUS] = {};
            fits_get_errstatus(status, text);
            out.problem = name + " is unreadable: " + text;
            break;
        }
        if (dataOk == 0 || hduOk == 0) {
            out.problem = name + " has no DATASUM/CHECKSUM";
            break;
        }
        if (dataOk < 0) {
            out.problem = name + ": data do not match DATASUM";
            break;
        }
        if (hduOk < 0) {
            out.problem = name + ": header or data do not match CHECKSUM";
            break;
        }
        LONGLONG headStart = 0;
        LONGLONG dataStart = 0;
        fits_get_hduaddrll(fp, &headStart, &dataStart, &end, &status);
    }
    if (out.problem.empty() && status == 0 && static_cast<std::uintmax_t>(end) != size) {
        out.problem = std::to_string(size - static_cast<std::uintmax_t>(end)) + " bytes after the last HDU";
    }
    fits_clear_errmsg();
    int closeStatus = 0;
    fits_close_file(fp, &closeStatus);
    return out;
}

void writeImageHdus(const std::string& path,
                    const std::vector<std::pair<std::string, const kernel::ImageF*>>& hdus,
                    const std::vector<HeaderCard>& primaryCards, const std::vector<std::string>& wcsCards) {
    for (const auto& [name, image] : hdus) {
        if (image == nullptr || name.empty()) {
            throw InvalidParameter(path + ": writeImageHdus needs a name and an image for every HDU");
        }
    }
    writeFitsAtomically(path, [&](FitsFile& f) {
        writePrimary(f, primaryCards);
        for (const auto& [name, image] : hdus) {
            writeImageHdu(f, name, FLOAT_IMG, TFLOAT, image->data().data(), image->box(), wcsCards);
        }
    });
}

}  // namespace safeclip::io
