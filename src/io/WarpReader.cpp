#include "safeclip/io/WarpReader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string_view>
#include <system_error>
#include <utility>

#include "safeclip/io/FitsFile.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::io {

namespace {

static_assert(sizeof(int) == sizeof(kernel::MaskPixel), "cfitsio TINT must match MaskPixel");

/// AB reference flux in nJy (Oke & Gunn 1983), computed exactly as afw/utils do:
/// 10^(-0.4 * -48.6) Jy = 3630.78 Jy, often approximated by 3631 Jy. 2.5*log10(it) = 31.4.
const double kReferenceFluxNJy = 1e23 * std::pow(10.0, 48.6 / -2.5) * 1e9;

/// Largest plane we accept: 2^31 pixels (a 46341 x 46341 image; 8 GiB of float32).
constexpr double kMaxPixels = 2147483648.0;

/// FWHM -> sigma for a Gaussian: 2*sqrt(2*ln 2).
constexpr double kFwhmPerSigma = 2.35482;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
    throw InputError(path + ": " + what);
}

/// Geometry and pixel type of one image HDU.
struct PlaneInfo {
    int hdu = 0;
    long width = 0;
    long height = 0;
    int equivType = 0;
};

std::string sizeStr(const PlaneInfo& p) {
    return std::to_string(p.width) + "x" + std::to_string(p.height);
}

bool isDigits(std::string_view s) {
    if (s.empty()) {
        return false;
    }
    for (char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
    }
    return true;
}

/// True for the keywords of the primary (unnamed) celestial WCS, including SIP and PV distortion
/// terms. Alternate WCS keywords (CRVAL1A, CTYPE2A, ...) are excluded.
bool isCelestialWcsKey(std::string_view key) {
    static constexpr std::string_view kExact[] = {"RADESYS", "RADECSYS", "EQUINOX", "EPOCH", "LONPOLE",
                                                  "LATPOLE", "WCSAXES",  "CROTA1",  "CROTA2"};
    for (std::string_view k : kExact) {
        if (key == k) {
            return true;
        }
    }
    // CTYPEi, CRPIXi, CRVALi, CDELTi, CUNITi with i in {1, 2}
    for (std::string_view prefix : {"CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT"}) {
        if (key.size() == prefix.size() + 1 && key.substr(0, prefix.size()) == prefix &&
            (key.back() == '1' || key.back() == '2')) {
            return true;
        }
    }
    // CDi_j, PCi_j with i, j in {1, 2}
    if (key.size() == 5 && (key.substr(0, 2) == "CD" || key.substr(0, 2) == "PC") && key[3] == '_' &&
        (key[2] == '1' || key[2] == '2') && (key[4] == '1' || key[4] == '2')) {
        return true;
    }
    // PVi_m
    if (key.size() >= 5 && key.substr(0, 2) == "PV" && (key[2] == '1' || key[2] == '2') && key[3] == '_' &&
        isDigits(key.substr(4))) {
        return true;
    }
    // SIP: A_ORDER, A_DMAX, A_p_q and the same for B, AP, BP
    for (std::string_view prefix : {"A_", "B_", "AP_", "BP_"}) {
        if (key.size() > prefix.size() && key.substr(0, prefix.size()) == prefix) {
            const std::string_view rest = key.substr(prefix.size());
            if (rest == "ORDER" || rest == "DMAX") {
                return true;
            }
            const auto us = rest.find('_');
            if (us != std::string_view::npos && isDigits(rest.substr(0, us)) &&
                isDigits(rest.substr(us + 1))) {
                return true;
            }
        }
    }
    return false;
}

/// The keyword of a fixed-format "KEY     = value" card, or "" for commentary/HIERARCH cards.
std::string valueCardKey(const std::string& card) {
    if (card.size() < 10 || card.compare(8, 2, "= ") != 0) {
        return {};
    }
    std::string key = card.substr(0, 8);
    while (!key.empty() && key.back() == ' ') {
        key.pop_back();
    }
    return key;
}

/// Integer-valued pixel coordinate from a header value, or an InputError.
int toPixel(const std::string& path, const std::string& what, double v) {
    const double r = std::round(v);
    if (!std::isfinite(v) || std::abs(v - r) > 1e-6 || std::abs(r) > 1e9) {
        fail(path, "IMAGE: " + what + " = " + std::to_string(v) + " is not an integer pixel coordinate");
    }
    return static_cast<int>(r);
}

/// xy0 of the current HDU: the afw "A" WCS (CRVAL1A/2A, CRPIX 1), else -LTV1/2, else 0.
std::pair<int, int> readXy0(const FitsFile& f) {
    const auto c1 = f.readDouble("CRVAL1A");
    const auto c2 = f.readDouble("CRVAL2A");
    if (c1 && c2) {
        const double p1 = f.readDouble("CRPIX1A").value_or(1.0);
        const double p2 = f.readDouble("CRPIX2A").value_or(1.0);
        return {toPixel(f.path(), "CRVAL1A", *c1 + 1.0 - p1), toPixel(f.path(), "CRVAL2A", *c2 + 1.0 - p2)};
    }
    const auto l1 = f.readDouble("LTV1");
    const auto l2 = f.readDouble("LTV2");
    return {l1 ? toPixel(f.path(), "LTV1", -*l1) : 0, l2 ? toPixel(f.path(), "LTV2", -*l2) : 0};
}

/// Positive finite value or nothing.
std::optional<double> positive(std::optional<double> v) {
    if (v && std::isfinite(*v) && *v > 0.0) {
        return v;
    }
    return std::nullopt;
}

/// Reads calibrationMean of the PhotoCalib archive record with archive id `id`.
std::optional<double> readPhotoCalibMean(const FitsFile& f, std::int64_t id, int nHdus) {
    const std::string& path = f.path();
    std::optional<int> indexHdu = f.findExtension("ARCHIVE_INDEX");
    if (!indexHdu) {
        f.moveToHdu(1);
        if (const auto ar = f.readInt("AR_HDU"); ar && *ar >= 1 && *ar <= nHdus) {
            indexHdu = static_cast<int>(*ar);
        }
    }
    if (!indexHdu) {
        fail(path,
             "PhotoCalib: archive id " + std::to_string(id) + " given but the file has no ARCHIVE_INDEX");
    }
    f.moveToHdu(*indexHdu);
    fitsfile* fp = f.get();
    int status = 0;
    LONGLONG nRows = 0;
    fits_get_num_rowsll(fp, &nRows, &status);
    f.check(status, "ARCHIVE_INDEX: read table size");
    auto column = [&](const char* name) {
        int col = 0;
        int st = 0;
        fits_get_colnum(fp, CASEINSEN, const_cast<char*>(name), &col, &st);
        f.check(st, std::string("ARCHIVE_INDEX: column ") + name);
        std::vector<LONGLONG> v(static_cast<std::size_t>(nRows));
        if (nRows > 0) {
            fits_read_col(fp, TLONGLONG, col, 1, 1, nRows, nullptr, v.data(), nullptr, &st);
            f.check(st, std::string("ARCHIVE_INDEX: read column ") + name);
        }
        return v;
    };
    const auto ids = column("id");
    const auto cats = column("cat.archive");
    const auto row0s = column("row0");
    std::size_t row = ids.size();
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] == id) {
            row = i;
            break;
        }
    }
    if (row == ids.size()) {
        fail(path, "PhotoCalib: archive id " + std::to_string(id) + " not found in ARCHIVE_INDEX");
    }
    const LONGLONG cat = cats[row];
    const LONGLONG row0 = row0s[row];

    // The catalog: the ARCHIVE_DATA HDU with AR_CATN == cat (or, without AR_CATN, position).
    std::optional<int> dataHdu;
    bool anyCatN = false;
    for (int h = *indexHdu + 1; h <= nHdus && !dataHdu; ++h) {
        f.moveToHdu(h);
        if (const auto catn = f.readInt("AR_CATN")) {
            anyCatN = true;
            if (*catn == cat) {
                dataHdu = h;
            }
        }
    }
    if (!dataHdu && !anyCatN && cat >= 1 && *indexHdu + cat <= nHdus) {
        dataHdu = static_cast<int>(*indexHdu + cat);
    }
    if (!dataHdu) {
        fail(path, "PhotoCalib: archive catalog " + std::to_string(cat) + " not found");
    }
    f.moveToHdu(*dataHdu);
    int col = 0;
    fits_get_colnum(fp, CASESEN, const_cast<char*>("calibrationMean"), &col, &status);
    f.check(status, "PhotoCalib: column calibrationMean");
    LONGLONG dataRows = 0;
    fits_get_num_rowsll(fp, &dataRows, &status);
    f.check(status, "PhotoCalib: read table size");
    if (row0 < 0 || row0 >= dataRows) {
        fail(path,
             "PhotoCalib: row " + std::to_string(row0) + " outside archive catalog " + std::to_string(cat));
    }
    double value = 0.0;
    fits_read_col(fp, TDOUBLE, col, row0 + 1, 1, 1, nullptr, &value, nullptr, &status);
    f.check(status, "PhotoCalib: read calibrationMean");
    return positive(value);
}

/// Parses the MP_<NAME> = <bit> cards of the current HDU.
kernel::MaskDict readMaskPlanes(const FitsFile& f) {
    const std::string& path = f.path();
    fitsfile* fp = f.get();
    int status = 0;
    int nKeys = 0;
    fits_get_hdrspace(fp, &nKeys, nullptr, &status);
    f.check(status, "MASK: read header");
    std::map<std::string, int> byName;
    std::map<int, std::string> byBit;
    std::vector<std::pair<std::string, int>> planes;
    for (int i = 1; i <= nKeys; ++i) {
        char key[FLEN_KEYWORD] = {};
        char value[FLEN_VALUE] = {};
        fits_read_keyn(fp, i, key, value, nullptr, &status);  // HIERARCH is stripped from key
        f.check(status, "MASK: read header card " + std::to_string(i));
        const std::string k(key);
        if (k.size() <= 3 || k.compare(0, 3, "MP_") != 0) {
            // An MP_ card without "= value" (e.g. a HIERARCH plane name too long for one 80-char
            // card) is commentary to cfitsio; silently dropping it would unname the plane's bit.
            char card[FLEN_CARD] = {};
            fits_read_record(fp, i, card, &status);
            f.check(status, "MASK: read header card " + std::to_string(i));
            const std::string_view c(card);
            if (c.substr(0, 3) == "MP_" || c.substr(0, 12) == "HIERARCH MP_") {
                std::string shown(c.substr(0, 40));
                fail(path, "MASK: header card " + std::to_string(i) + " '" + shown +
                               "...' has no value: mask plane name too long for a FITS card?");
            }
            continue;
        }
        const std::string name = k.substr(3);
        std::string_view v(value);
        while (!v.empty() && v.front() == ' ') {
            v.remove_prefix(1);
        }
        while (!v.empty() && v.back() == ' ') {
            v.remove_suffix(1);
        }
        int bit = -1;
        const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), bit);
        if (ec != std::errc() || ptr != v.data() + v.size() || bit < 0 || bit > 31) {
            fail(path, "MASK: " + k + " = '" + std::string(v) + "' is not a mask bit number in 0..31");
        }
        if (byName.count(name) != 0) {
            fail(path, "MASK: duplicate mask plane name " + name);
        }
        if (const auto it = byBit.find(bit); it != byBit.end()) {
            fail(path, "MASK: duplicate mask bit " + std::to_string(bit) + " (MP_" + it->second + " and MP_" +
                           name + ")");
        }
        byName[name] = bit;
        byBit[bit] = name;
        planes.emplace_back(name, bit);
    }
    if (planes.empty()) {
        fail(path, "MASK HDU has no MP_* mask-plane keywords");
    }
    kernel::MaskDict dict;
    for (const auto& [name, bit] : planes) {
        try {
            dict.setPlane(name, bit);
        } catch (const InvalidParameter& e) {
            fail(path, std::string("MASK: ") + e.what());
        }
    }
    return dict;
}

}  // namespace

double calibrationFromFluxMag0(double fluxMag0) {
    return kReferenceFluxNJy / fluxMag0;
}

std::pair<std::int64_t, std::int64_t> fileSizeAndMtime(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return {-1, -1};
    }
    return {static_cast<std::int64_t>(st.st_size),
            static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec};
}

std::optional<std::pair<std::uint64_t, std::uint64_t>> fileIdentity(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return std::nullopt;
    }
    return std::make_pair(static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino));
}

std::string notRegularFileProblem(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode)) {
        return {};
    }
    const char* kind = S_ISFIFO(st.st_mode)   ? "a FIFO"
                       : S_ISDIR(st.st_mode)  ? "a directory"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                                              : "a special file";
    return std::string("not a regular file (") + kind + ")";
}

namespace {

/// Walks the FITS structure reading only header blocks; true when some HDU says ZIMAGE = T (or
/// when the structure cannot be followed, to stay on the safe side).
bool hasCompressedHdu(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return false;  // the normal open reports the problem
    }
    char block[2880];
    for (int hdu = 0; hdu < 10000; ++hdu) {
        std::int64_t bitpix = 0;
        std::int64_t naxis = 0;
        std::int64_t pcount = 0;
        std::int64_t gcount = 1;
        std::int64_t axes[999] = {};
        bool end = false;
        bool compressed = false;
        for (int b = 0; b < 10000 && !end; ++b) {
            if (!in.read(block, sizeof block)) {
                return hdu > 0 ? compressed : false;  // end of file (or truncated: the open reports it)
            }
            for (int c = 0; c < 36 && !end; ++c) {
                const std::string card(block + 80 * static_cast<std::ptrdiff_t>(c), 80);
                const std::string key = card.substr(0, 8);
                const std::string value = card.size() > 10 && card[8] == '=' ? card.substr(10, 70) : "";
                auto number = [&]() { return std::strtoll(value.c_str(), nullptr, 10); };
                if (key == "END     ") {
                    end = true;
                } else if (key == "BITPIX  ") {
                    bitpix = number();
                } else if (key == "NAXIS   ") {
                    naxis = number();
                } else if (key.rfind("NAXIS", 0) == 0) {
                    const long i = std::strtol(key.c_str() + 5, nullptr, 10);
                    if (i >= 1 && i <= 999) {
                        axes[i - 1] = number();
                    }
                } else if (key == "PCOUNT  ") {
                    pcount = number();
                } else if (key == "GCOUNT  ") {
                    gcount = number();
                } else if (key == "ZIMAGE  " && value.find('T') != std::string::npos) {
                    compressed = true;
                }
            }
        }
        if (compressed) {
            return true;
        }
        if (!end || naxis < 0 || naxis > 999) {
            return true;  // cannot follow the structure: let the child probe it
        }
        std::int64_t n = naxis > 0 ? 1 : 0;
        for (std::int64_t i = 0; i < naxis; ++i) {
            if (axes[i] < 0 || (axes[i] > 0 && n > (std::int64_t{1} << 50) / axes[i])) {
                return true;
            }
            n *= axes[i];
        }
        const std::int64_t bytes = std::abs(bitpix) / 8 * std::max<std::int64_t>(gcount, 1) * (pcount + n);
        in.seekg((bytes + 2879) / 2880 * 2880, std::ios::cur);
        if (!in) {
            return false;
        }
    }
    return true;
}

/// Opens the file and visits every HDU header in a child process first when it has a
/// tile-compressed HDU: cfitsio 4.2.0 aborts the whole process on some corrupt compressed headers
/// (tests/fuzz/known-crashes), which under MPI would end the job. A child that dies is a clean
/// InputError here.
std::unique_ptr<FitsFile> openGuarded(const std::string& path) {
    // A FIFO or device would block (or never end) in open(2) or the header walk: refuse it first.
    if (const std::string problem = notRegularFileProblem(path); !problem.empty()) {
        throw InputError(path + ": " + problem);
    }
    // A gzip-compressed file (.fits.gz): cfitsio would inflate it in memory, and every size check
    // here would call it truncated. Say what it is and what to do.
    if (std::ifstream in(path, std::ios::binary); in) {
        unsigned char magic[2] = {};
        in.read(reinterpret_cast<char*>(magic), 2);
        if (in.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
            throw InputError(path +
                             ": gzip-compressed file: unpack it first (gunzip), or tile-compress it "
                             "(fpack), which safeclip reads directly");
        }
    }
    if (hasCompressedHdu(path)) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            const int devnull = ::open("/dev/null", O_WRONLY);
            if (devnull >= 0) {
                ::dup2(devnull, 2);
                ::dup2(devnull, 1);
            }
            fitsfile* fp = nullptr;
            int status = 0;
            if (fits_open_diskfile(&fp, path.c_str(), READONLY, &status) == 0) {
                int n = 0;
                fits_get_num_hdus(fp, &n, &status);
                for (int h = 1; h <= n && status == 0; ++h) {
                    int type = 0;
                    fits_movabs_hdu(fp, h, &type, &status);
                }
                status = 0;
                fits_close_file(fp, &status);
            }
            ::_exit(0);  // no crash: the normal open below reports any ordinary error
        }
        if (pid > 0) {
            int ws = 0;
            while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
            }
            if (WIFSIGNALED(ws)) {
                throw InputError(path +
                                 ": corrupt tile-compressed header: cfitsio crashed reading it (signal " +
                                 std::to_string(WTERMSIG(ws)) + "); file refused");
            }
        }
    }
    return std::make_unique<FitsFile>(path, FitsFile::Mode::Read);
}

/// How the pixels of an uncompressed plane are stored, for the pread(2) fast path.
enum class RawEncoding {
    None,     ///< not eligible: read with cfitsio
    Float32,  ///< BITPIX -32, no scaling: big-endian IEEE floats, returned as they are
    Int32,    ///< BITPIX 32, no scaling
    UInt32,   ///< BITPIX 32, BZERO 2^31: cfitsio's TUINT read flips the sign bit (fffi4uint)
    UInt16,   ///< BITPIX 16, BZERO 2^15: cfitsio's TINT read gives the unsigned value
};

/// Where the big-endian pixels of one plane lie in the file.
struct RawPlane {
    RawEncoding encoding = RawEncoding::None;
    std::int64_t headStart = 0;  ///< byte offset of the HDU's first header card
    std::int64_t dataStart = 0;  ///< byte offset of pixel (1, 1)
    std::int64_t width = 0;      ///< NAXIS1
};

/// Bytes of one stored pixel.
std::int64_t bytesPerPixel(RawEncoding e) {
    return e == RawEncoding::UInt16 ? 2 : 4;
}

/// A numeric keyword of the current HDU: `absent` when it is missing, nullopt when unreadable.
std::optional<double> numberOr(fitsfile* fp, const char* key, double absent) {
    int status = 0;
    double value = 0.0;
    fits_read_key(fp, TDOUBLE, key, &value, nullptr, &status);
    if (status == 0) {
        return value;
    }
    fits_clear_errmsg();
    return status == KEY_NO_EXIST ? std::optional<double>(absent) : std::nullopt;
}

/// True when the current HDU has the keyword, readable or not.
bool hasKey(fitsfile* fp, const char* key) {
    int status = 0;
    char card[FLEN_CARD] = {};
    fits_read_card(fp, key, card, &status);
    if (status != 0) {
        fits_clear_errmsg();
    }
    return status != KEY_NO_EXIST;
}

/// The raw layout of the current HDU (plane `info`: a float plane, or the mask) when pread(2) plus
/// a byte swap gives exactly what readPlanes' cfitsio call returns: uncompressed; no scaling but
/// the unsigned BZERO offset of a mask; no BLANK on a mask; a data unit of exactly the pixels plus
/// FITS block padding. Otherwise encoding None.
RawPlane probeRawPlane(const FitsFile& f, const PlaneInfo& info, bool mask) {
    fitsfile* fp = f.get();
    int status = 0;
    const bool compressed = fits_is_compressed_image(fp, &status) != 0;
    int bitpix = 0;
    fits_get_img_type(fp, &bitpix, &status);
    LONGLONG headStart = 0;
    LONGLONG dataStart = 0;
    LONGLONG dataEnd = 0;
    fits_get_hduaddrll(fp, &headStart, &dataStart, &dataEnd, &status);
    f.check(status, "read HDU " + std::to_string(info.hdu) + " layout");
    const auto bscale = numberOr(fp, "BSCALE", 1.0);
    const auto bzero = numberOr(fp, "BZERO", 0.0);
    if (compressed || bscale != 1.0 || !bzero) {
        return {};
    }
    RawPlane plane;
    if (!mask) {
        if (bitpix == FLOAT_IMG && *bzero == 0.0) {
            plane.encoding = RawEncoding::Float32;
        }
    } else if (!hasKey(fp, "BLANK")) {
        if (bitpix == LONG_IMG && *bzero == 0.0 && info.equivType == LONG_IMG) {
            plane.encoding = RawEncoding::Int32;
        } else if (bitpix == LONG_IMG && *bzero == 2147483648.0 && info.equivType == ULONG_IMG) {
            plane.encoding = RawEncoding::UInt32;
        } else if (bitpix == SHORT_IMG && *bzero == 32768.0 && info.equivType == USHORT_IMG) {
            plane.encoding = RawEncoding::UInt16;
        }
    }
    const std::int64_t bytes = info.width * info.height * bytesPerPixel(plane.encoding);
    if (plane.encoding == RawEncoding::None || dataEnd - dataStart != (bytes + 2879) / 2880 * 2880) {
        return {};
    }
    plane.headStart = headStart;
    plane.dataStart = dataStart;
    plane.width = info.width;
    return plane;
}

/// Big-endian 32-bit words to host order in place, then XOR `flip` (0x80000000 turns a BZERO = 2^31
/// word into cfitsio's TUINT value). An AVX2 clone is chosen at load time where the CPU has it.
__attribute__((target_clones("avx2", "default"))) void swap32(unsigned char* bytes, std::size_t n,
                                                              std::uint32_t flip) {
    // Byte access + memcpy: valid for any 4-byte pixel type (no aliasing through uint32_t*);
    // GCC turns it into the same vector byte shuffle.
    for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t w;
        std::memcpy(&w, bytes + 4 * i, 4);
        w = __builtin_bswap32(w) ^ flip;
        std::memcpy(bytes + 4 * i, &w, 4);
    }
}

/// Big-endian 16-bit words stored with BZERO = 32768 to their unsigned values as int32.
__attribute__((target_clones("avx2", "default"))) void widenUInt16(const std::uint16_t* __restrict src,
                                                                   unsigned char* __restrict dst,
                                                                   std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        const std::int32_t v = static_cast<std::uint16_t>(__builtin_bswap16(src[i]) ^ 0x8000U);
        std::memcpy(dst + 4 * i, &v, 4);
    }
}

/// Pixels per pread(2): 256 KiB of 4-byte pixels, so each block is converted while it is in cache.
constexpr std::int64_t kBlockPixels = 65536;

/// True when SAFECLIP_NO_FAST_READ is set to anything but "" or "0".
bool fastReadDisabled() {
    const char* v = std::getenv("SAFECLIP_NO_FAST_READ");
    return v != nullptr && *v != '\0' && std::string_view(v) != "0";
}

}  // namespace

/// The pread(2) fast path of readPlanes: a descriptor of its own on the warp and, per plane (IMAGE,
/// MASK, VARIANCE), where its pixels lie. Reads are positioned, so they never disturb cfitsio.
class WarpReader::RawReader {
public:
    /// Takes ownership of `fd`.
    RawReader(std::string path, int fd, const std::array<RawPlane, 3>& planes)
        : m_path(std::move(path)), m_fd(fd), m_planes(planes) {}
    ~RawReader() { ::close(m_fd); }
    RawReader(const RawReader&) = delete;
    RawReader& operator=(const RawReader&) = delete;

    /// A reader for the planes that qualify, or null when none does or the file cannot be opened
    /// again as the same file cfitsio parsed (then cfitsio reads everything).
    static std::unique_ptr<RawReader> open(const std::string& path, std::int64_t fileSize,
                                           std::array<RawPlane, 3> planes);

    [[nodiscard]] bool covers(int plane) const { return m_planes[plane].encoding != RawEncoding::None; }

    /// Reads `local` (0-based plane pixel coordinates) of `plane` into `out` (4-byte pixels, row
    /// major). `action` ("read IMAGE box ...") goes into error messages.
    void read(int plane, const kernel::Box& local, void* out, const std::string& action) const;

private:
    /// `count` bytes at `offset` into `dst`, across short reads and EINTR.
    void readBytes(void* dst, std::int64_t count, std::int64_t offset, const std::string& action) const;

    std::string m_path;
    int m_fd;
    std::array<RawPlane, 3> m_planes;
};

std::unique_ptr<WarpReader::RawReader> WarpReader::RawReader::open(const std::string& path,
                                                                   std::int64_t fileSize,
                                                                   std::array<RawPlane, 3> planes) {
    if (std::none_of(planes.begin(), planes.end(),
                     [](const RawPlane& p) { return p.encoding != RawEncoding::None; })) {
        return nullptr;
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return nullptr;
    }
    // The same bytes cfitsio parsed: same size and a header card where each plane's HDU starts
    // (a gzip file cfitsio decompressed in memory, or a file replaced since, fails this).
    struct stat st = {};
    bool same = ::fstat(fd, &st) == 0 && st.st_size == fileSize;
    for (const RawPlane& p : planes) {
        if (same && p.encoding != RawEncoding::None) {
            char card[8] = {};
            same = ::pread(fd, card, sizeof card, p.headStart) == sizeof card &&
                   (std::memcmp(card, "XTENSION", 8) == 0 || std::memcmp(card, "SIMPLE  ", 8) == 0);
        }
    }
    if (!same) {
        ::close(fd);
        return nullptr;
    }
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return std::make_unique<RawReader>(path, fd, planes);
}

void WarpReader::RawReader::readBytes(void* dst, std::int64_t count, std::int64_t offset,
                                      const std::string& action) const {
    auto* p = static_cast<char*>(dst);
    while (count > 0) {
        const ssize_t got = ::pread(m_fd, p, static_cast<std::size_t>(count), offset);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            fail(m_path, action + ": " + std::strerror(errno));
        }
        if (got == 0) {
            fail(m_path, action + ": truncated file: end of file at byte " + std::to_string(offset) + ", " +
                             std::to_string(count) + " more bytes expected");
        }
        p += got;
        count -= got;
        offset += got;
    }
}

void WarpReader::RawReader::read(int plane, const kernel::Box& local, void* out,
                                 const std::string& action) const {
    const RawPlane& raw = m_planes[plane];
    const std::int64_t bpp = bytesPerPixel(raw.encoding);
    const std::uint32_t flip = raw.encoding == RawEncoding::UInt32 ? 0x80000000U : 0U;
    // Full-width boxes are one contiguous run of the file; otherwise one run per row.
    const bool fullRows = local.width == raw.width;
    const std::int64_t runPixels = fullRows ? local.area() : local.width;
    const int nRuns = fullRows ? 1 : local.height;
    auto* dst = static_cast<unsigned char*>(out);  // 4-byte pixels, written bytewise
    std::vector<std::uint16_t> narrow;             // 16-bit pixels before widening
    if (raw.encoding == RawEncoding::UInt16) {
        narrow.resize(static_cast<std::size_t>(std::min(runPixels, kBlockPixels)));
    }
    for (int r = 0; r < nRuns; ++r) {
        std::int64_t offset = raw.dataStart + ((local.y0 + r) * raw.width + local.x0) * bpp;
        for (std::int64_t done = 0; done < runPixels;) {
            const std::int64_t n = std::min(runPixels - done, kBlockPixels);
            if (raw.encoding == RawEncoding::UInt16) {
                readBytes(narrow.data(), n * bpp, offset, action);
                widenUInt16(narrow.data(), dst, static_cast<std::size_t>(n));
            } else {
                readBytes(dst, n * bpp, offset, action);
                swap32(dst, static_cast<std::size_t>(n), flip);
            }
            dst += 4 * n;
            done += n;
            offset += n * bpp;
        }
    }
}

WarpReader::WarpReader(const std::string& path) : m_file(openGuarded(path)) {
    m_header.path = path;
    const FitsFile& f = *m_file;
    fitsfile* fp = f.get();

    // 1. Every HDU whose header cfitsio can parse must have all its data in the file.
    const int nHdus = f.numHdus();
    std::error_code ec;
    const auto fileSize = static_cast<LONGLONG>(std::filesystem::file_size(path, ec));
    if (ec) {
        fail(path, "cannot get file size: " + ec.message());
    }
    LONGLONG lastEnd = 0;
    for (int h = 1; h <= nHdus; ++h) {
        f.moveToHdu(h);
        int status = 0;
        LONGLONG headStart = 0;
        LONGLONG dataStart = 0;
        LONGLONG dataEnd = 0;
        fits_get_hduaddrll(fp, &headStart, &dataStart, &dataEnd, &status);
        f.check(status, "read HDU " + std::to_string(h) + " layout");
        // Refuse absurd declared sizes before anything is sized from them (a hostile or corrupt
        // NAXISn could otherwise make a reader allocate far beyond the memory budget).
        int hduType = 0;
        fits_get_hdu_type(fp, &hduType, &status);
        if (status == 0 && hduType == IMAGE_HDU) {
            int naxis = 0;
            LONGLONG naxes[9] = {};
            fits_get_img_dim(fp, &naxis, &status);
            fits_get_img_sizell(fp, 9, naxes, &status);
            f.check(status, "read HDU " + std::to_string(h) + " image size");
            double pixels = naxis > 0 ? 1.0 : 0.0;
            std::string dims;
            for (int a = 0; a < std::min(naxis, 9); ++a) {
                pixels *= static_cast<double>(naxes[a]);
                if (a > 0) {
                    dims += 'x';
                }
                dims += std::to_string(naxes[a]);
            }
            if (pixels > kMaxPixels) {
                fail(path, "HDU " + std::to_string(h) + " declares a " + dims +
                               " image, more than the limit of 2^31 pixels per plane (corrupt or hostile "
                               "NAXISn?)");
            }
        }
        f.check(status, "read HDU " + std::to_string(h) + " type");
        if (dataEnd > fileSize) {
            fail(path, "truncated file: HDU " + std::to_string(h) + " needs " + std::to_string(dataEnd) +
                           " bytes but the file has " + std::to_string(fileSize));
        }
        lastEnd = dataEnd;
    }
    const std::string truncatedNote =
        lastEnd < fileSize ? " (truncated or corrupt file: " + std::to_string(fileSize - lastEnd) +
                                 " unreadable bytes after HDU " + std::to_string(nHdus) + ")"
                           : "";

    // 2. IMAGE, MASK, VARIANCE by EXTNAME (or EXTTYPE); positional (HDUs 2-4) if none is named.
    std::optional<int> hdus[3] = {f.findExtension("IMAGE"), f.findExtension("MASK"),
                                  f.findExtension("VARIANCE")};
    static constexpr const char* kNames[3] = {"IMAGE", "MASK", "VARIANCE"};
    if (!hdus[0] && !hdus[1] && !hdus[2] && nHdus >= 4) {
        bool allImages = true;
        for (int h = 2; h <= 4; ++h) {
            f.moveToHdu(h);
            int status = 0;
            int type = 0;
            int naxis = 0;
            fits_get_hdu_type(fp, &type, &status);
            fits_get_img_dim(fp, &naxis, &status);
            f.check(status, "read HDU " + std::to_string(h));
            allImages = allImages && type == IMAGE_HDU && naxis == 2;
        }
        if (allImages) {
            hdus[0] = 2;
            hdus[1] = 3;
            hdus[2] = 4;
        }
    }
    PlaneInfo info[3];
    // A raw exposure (one image, in the primary HDU or the only extension) is not a warp yet.
    std::string rawHint;
    if (nHdus <= 2) {
        for (int h = 1; h <= nHdus && rawHint.empty(); ++h) {
            f.moveToHdu(h);
            int status = 0;
            int naxis = 0;
            fits_get_img_dim(fp, &naxis, &status);
            if (status == 0 && naxis == 2) {
                rawHint =
                    "; it looks like a single-HDU exposure: make a warp of it with `safeclip ingest` first";
            }
        }
    }
    for (int i = 0; i < 3; ++i) {
        if (!hdus[i]) {
            fail(path, std::string("no ") + kNames[i] + " HDU (no HDU has EXTNAME or EXTTYPE " + kNames[i] +
                           ")" + truncatedNote + rawHint);
        }
        info[i].hdu = *hdus[i];
        f.moveToHdu(info[i].hdu);
        int status = 0;
        int type = 0;
        fits_get_hdu_type(fp, &type, &status);
        f.check(status, std::string("read ") + kNames[i] + " HDU");
        if (type != IMAGE_HDU) {
            fail(path, std::string(kNames[i]) + " HDU is not an image");
        }
        int bitpix = 0;
        int naxis = 0;
        long naxes[9] = {};
        fits_get_img_param(fp, 9, &bitpix, &naxis, naxes, &status);
        fits_get_img_equivtype(fp, &info[i].equivType, &status);
        f.check(status, std::string("read ") + kNames[i] + " image size");
        if (naxis != 2) {
            fail(path,
                 std::string(kNames[i]) + " HDU is not a 2-D image (NAXIS = " + std::to_string(naxis) + ")");
        }
        if (naxes[0] > INT_MAX / 2 || naxes[1] > INT_MAX / 2) {
            fail(path, std::string(kNames[i]) + " HDU is too large");
        }
        info[i].width = naxes[0];
        info[i].height = naxes[1];
    }
    if (info[0].width != info[1].width || info[0].width != info[2].width ||
        info[0].height != info[1].height || info[0].height != info[2].height) {
        fail(path, "plane sizes differ: IMAGE " + sizeStr(info[0]) + ", MASK " + sizeStr(info[1]) +
                       ", VARIANCE " + sizeStr(info[2]));
    }
    switch (info[1].equivType) {
        case BYTE_IMG:
        case SBYTE_IMG:
        case SHORT_IMG:
        case USHORT_IMG:
        case LONG_IMG:
        case ULONG_IMG:
            break;
        default:
            fail(path, "MASK HDU has unsupported pixel type (BITPIX " + std::to_string(info[1].equivType) +
                           "); expected an integer image");
    }
    m_imageHdu = info[0].hdu;
    m_maskHdu = info[1].hdu;
    m_varianceHdu = info[2].hdu;
    // Planes pread(2) can read exactly as cfitsio would (readPlanes' fast path).
    {
        std::array<RawPlane, 3> raw;
        for (int i = 0; i < 3; ++i) {
            f.moveToHdu(info[i].hdu);
            raw[i] = probeRawPlane(f, info[i], i == 1);
        }
        if (raw[0].encoding == RawEncoding::Float32) {
            m_imageFloatBytes = {raw[0].dataStart, info[0].width * info[0].height * 4};
        }
        if (!fastReadDisabled()) {
            m_raw = RawReader::open(path, fileSize, raw);
        }
    }

    // 3. IMAGE header: xy0, WCS, and fall-back metadata.
    f.moveToHdu(m_imageHdu);
    const auto [x0, y0] = readXy0(f);
    m_header.box = kernel::Box{x0, y0, static_cast<int>(info[0].width), static_cast<int>(info[0].height)};
    for (const std::string& card : f.readCards()) {
        if (isCelestialWcsKey(valueCardKey(card))) {
            m_header.wcsCards.push_back(card);
        }
    }
    const auto imageFluxMag0 = f.readDouble("FLUXMAG0");
    const auto imagePsfSigma = f.readDouble("PSFSIGMA");
    auto imageFwhm = f.readDouble("PSF_FWHM");
    if (!imageFwhm) {
        imageFwhm = f.readDouble("FWHM");
    }

    // 4. MASK planes.
    f.moveToHdu(m_maskHdu);
    m_header.maskPlanes = readMaskPlanes(f);

    // 5. Primary header: calibration, PSF width, visit, filter.
    f.moveToHdu(1);
    auto fluxMag0 = f.readDouble("FLUXMAG0");
    if (!fluxMag0) {
        fluxMag0 = imageFluxMag0;
    }
    std::optional<std::int64_t> photoCalibId = f.readInt("ARCHIVE_ID_PHOTOCALIB");
    if (!photoCalibId) {
        photoCalibId = f.readInt("PHOTOCALIB_ID");
    }
    // A PSF width card that is there but not a sigma in (0, 100] px (0, negative, 1e6...) is not used,
    // and says why (psfSigmaProblem) instead of "no card".
    constexpr double kMaxPsfSigma = 100.0;
    auto usable = [&](const std::optional<double>& v, const char* card,
                      double perSigma) -> std::optional<double> {
        if (!v) {
            return std::nullopt;
        }
        const double sigma = *v / perSigma;
        if (std::isfinite(sigma) && sigma > 0.0 && sigma <= kMaxPsfSigma) {
            return sigma;
        }
        if (m_header.psfSigmaProblem.empty()) {
            std::ostringstream os;
            os << card << " = " << *v << " is not a PSF " << (perSigma == 1.0 ? "sigma" : "FWHM")
               << " of a sigma in (0, 100] px";
            m_header.psfSigmaProblem = os.str();
        }
        return std::nullopt;
    };
    auto psfSigma = usable(f.readDouble("PSFSIGMA"), "PSFSIGMA", 1.0);
    if (!psfSigma) {
        psfSigma = usable(imagePsfSigma, "PSFSIGMA", 1.0);
    }
    if (!psfSigma) {
        psfSigma = usable(f.readDouble("PSF_FWHM"), "PSF_FWHM", kFwhmPerSigma);
    }
    if (!psfSigma) {
        psfSigma = usable(f.readDouble("FWHM"), "FWHM", kFwhmPerSigma);
    }
    if (!psfSigma) {
        psfSigma = usable(imageFwhm, "FWHM", kFwhmPerSigma);
    }
    if (psfSigma) {
        m_header.psfSigmaProblem.clear();
    }
    m_header.psfSigma = psfSigma;
    m_header.visit = f.readInt("VISIT");
    if (!m_header.visit) {
        m_header.visit = f.readInt("EXPID");
    }
    m_header.filter = f.readString("FILTER").value_or("");

    // As afw's ExposureFitsReader: FLUXMAG0 is read only from legacy files (EXPINFO_V absent or 0);
    // from EXPINFO_V >= 1 on, the archived PhotoCalib is the calibration and header cards are
    // ignored (a stale FLUXMAG0 card must not win). FLUXMAG0 <= 0 (e.g. an uncalibrated calexp)
    // counts as no calibration.
    const bool legacy = f.readInt("EXPINFO_V").value_or(0) < 1;
    if (legacy && positive(fluxMag0)) {
        m_header.calibrationMean = positive(calibrationFromFluxMag0(*fluxMag0));
        m_header.calibrationSource = m_header.calibrationMean ? "FLUXMAG0" : "";
    }
    if (!m_header.calibrationMean && photoCalibId) {
        m_header.calibrationMean = readPhotoCalibMean(f, *photoCalibId, nHdus);
        m_header.calibrationSource = m_header.calibrationMean ? "PhotoCalib" : "";
    }
}

WarpReader::~WarpReader() = default;
WarpReader::WarpReader(WarpReader&&) noexcept = default;
WarpReader& WarpReader::operator=(WarpReader&&) noexcept = default;

int WarpReader::directPlanes() const {
    return m_raw ? static_cast<int>(m_raw->covers(0)) + m_raw->covers(1) + m_raw->covers(2) : 0;
}

void WarpReader::conformTo(kernel::MaskDict& canonical) {
    m_remap = kernel::MaskRemap(m_header.maskPlanes, canonical);
}

void WarpReader::read(const kernel::Box& box, kernel::MaskedImage& out) const {
    if (out.image.box() != box || out.mask.box() != box || out.variance.box() != box) {
        out.reshape(box);  // every pixel is read below
    }
    readPlanes(box, out.image.data().data(), out.mask.data().data(), out.variance.data().data());
}

kernel::MaskedImage WarpReader::read(const kernel::Box& box) const {
    kernel::MaskedImage out;
    read(box, out);
    return out;
}

namespace {
std::atomic<std::int64_t> g_bytesRead{0};
}  // namespace

std::int64_t warpBytesRead() {
    return g_bytesRead.load();
}

void WarpReader::readPlanes(const kernel::Box& box, float* image, kernel::MaskPixel* mask,
                            float* variance) const {
    g_bytesRead +=
        box.area() * static_cast<std::int64_t>((image != nullptr ? 4 : 0) + (mask != nullptr ? 4 : 0) +
                                               (variance != nullptr ? 4 : 0));
    const kernel::Box& full = m_header.box;
    if (!full.contains(box)) {
        throw InvalidParameter(m_header.path + ": box " + box.str() + " is not inside the warp's box " +
                               full.str());
    }
    if (box.empty()) {
        return;
    }
    const FitsFile& f = *m_file;
    fitsfile* fp = f.get();
    // 1-based, inclusive FITS pixel ranges of the sub-box.
    long fpixel[2] = {box.x0 - full.x0 + 1, box.y0 - full.y0 + 1};
    long lpixel[2] = {box.x1() - full.x0, box.y1() - full.y0};
    long inc[2] = {1, 1};
    const kernel::Box local{box.x0 - full.x0, box.y0 - full.y0, box.width, box.height};
    const std::string where = " box " + box.str();
    auto readFloat = [&](int plane, int hdu, const char* name, float* out) {
        if (m_raw && m_raw->covers(plane)) {
            m_raw->read(plane, local, out, std::string("read ") + name + where);
            return;
        }
        f.moveToHdu(hdu);
        int status = 0;
        // nulval == nullptr: no null substitution, NaN and inf come back bit for bit.
        fits_read_subset(fp, TFLOAT, fpixel, lpixel, inc, nullptr, out, nullptr, &status);
        f.check(status, std::string("read ") + name + where);
    };
    if (image != nullptr) {
        readFloat(0, m_imageHdu, "IMAGE", image);
    }
    if (mask != nullptr) {
        if (m_raw && m_raw->covers(1)) {
            m_raw->read(1, local, mask, "read MASK" + where);
        } else {
            f.moveToHdu(m_maskHdu);
            int status = 0;
            int equivType = 0;
            fits_get_img_equivtype(fp, &equivType, &status);
            f.check(status, "read MASK pixel type");
            // 16-bit masks carry BZERO = 32768; cfitsio applies it when converting to int.
            const int datatype = equivType == ULONG_IMG ? TUINT : TINT;
            fits_read_subset(fp, datatype, fpixel, lpixel, inc, nullptr, mask, nullptr, &status);
            f.check(status, "read MASK" + where);
        }
        m_remap.applyInPlace(mask, static_cast<std::size_t>(box.area()));
    }
    if (variance != nullptr) {
        readFloat(2, m_varianceHdu, "VARIANCE", variance);
    }
}

}  // namespace safeclip::io
