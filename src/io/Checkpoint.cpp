#include "safeclip/io/Checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <isa-l/crc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <string_view>
#include <type_traits>

#include "safeclip/Version.h"
#include "safeclip/io/AtomicFile.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::io {

namespace fs = std::filesystem;

namespace {

/// RAII for an hid_t with its close function.
class H5Handle {
public:
    H5Handle(hid_t id, herr_t (*close)(hid_t)) : m_id(id), m_close(close) {}
    ~H5Handle() {
        if (m_id >= 0) {
            m_close(m_id);
        }
    }
    H5Handle(const H5Handle&) = delete;
    H5Handle& operator=(const H5Handle&) = delete;
    H5Handle(H5Handle&& other) noexcept : m_id(other.m_id), m_close(other.m_close) { other.m_id = -1; }
    H5Handle& operator=(H5Handle&&) = delete;
    [[nodiscard]] hid_t get() const { return m_id; }
    [[nodiscard]] bool ok() const { return m_id >= 0; }

private:
    hid_t m_id;
    herr_t (*m_close)(hid_t);
};

/// Throws OutputError for a failed HDF5 call while writing.
void check(herr_t status, const std::string& path, const char* what) {
    if (status < 0) {
        throw OutputError(path + ": HDF5 error while writing the checkpoint (" + what + ")");
    }
}
hid_t check(hid_t id, const std::string& path, const char* what, bool /*isId*/) {
    if (id < 0) {
        throw OutputError(path + ": HDF5 error while writing the checkpoint (" + what + ")");
    }
    return id;
}

void silenceHdf5() {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

void writeStringAttr(hid_t obj, const std::string& name, const std::string& value, const std::string& path) {
    H5Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    check(H5Tset_size(type.get(), value.empty() ? 1 : value.size()), path, "string type");
    H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    H5Handle attr(check(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                        path, "attribute", true),
                  H5Aclose);
    const std::string v = value.empty() ? std::string(1, '\0') : value;
    check(H5Awrite(attr.get(), type.get(), v.data()), path, "attribute write");
}

template <class T>
void writeScalarAttr(hid_t obj, const std::string& name, hid_t memType, T value, const std::string& path) {
    H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    H5Handle attr(check(H5Acreate2(obj, name.c_str(), memType, space.get(), H5P_DEFAULT, H5P_DEFAULT), path,
                        "attribute", true),
                  H5Aclose);
    check(H5Awrite(attr.get(), memType, &value), path, "attribute write");
}

std::optional<std::string> readStringAttr(hid_t obj, const std::string& name) {
    if (H5Aexists(obj, name.c_str()) <= 0) {
        return std::nullopt;
    }
    H5Handle attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
    if (!attr.ok()) {
        return std::nullopt;
    }
    H5Handle type(H5Aget_type(attr.get()), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) > 0) {
        return std::nullopt;
    }
    const std::size_t n = H5Tget_size(type.get());
    std::string v(n, '\0');
    H5Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), n);
    if (H5Aread(attr.get(), mem.get(), v.data()) < 0) {
        return std::nullopt;
    }
    while (!v.empty() && v.back() == '\0') {
        v.pop_back();
    }
    return v;
}

template <class T>
std::optional<T> readScalarAttr(hid_t obj, const std::string& name, hid_t memType) {
    if (H5Aexists(obj, name.c_str()) <= 0) {
        return std::nullopt;
    }
    H5Handle attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
    T v{};
    if (!attr.ok() || H5Aread(attr.get(), memType, &v) < 0) {
        return std::nullopt;
    }
    return v;
}

/// 1-D dataset of n records of `type`, chunked and deflated when large.
void writeDataset(hid_t file, const char* name, hid_t type, std::size_t n, const void* data,
                  const std::string& path) {
    const hsize_t dims[1] = {static_cast<hsize_t>(n)};
    H5Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
    H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    if (n >= 4096) {
        const hsize_t chunk[1] = {4096};
        check(H5Pset_chunk(dcpl.get(), 1, chunk), path, "chunking");
        check(H5Pset_deflate(dcpl.get(), 4), path, "deflate");
    }
    H5Handle ds(check(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), path,
                      name, true),
                H5Dclose);
    if (n > 0) {
        check(H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), path, name);
    }
}

/// Reads a 1-D dataset of `type`: `room(n)` returns space for its n elements. False on any problem.
bool readVector(hid_t file, const char* name, hid_t type, const std::function<void*(std::size_t)>& room) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
        return false;
    }
    H5Handle ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
    if (!ds.ok()) {
        return false;
    }
    H5Handle space(H5Dget_space(ds.get()), H5Sclose);
    hsize_t dims[1] = {0};
    if (H5Sget_simple_extent_ndims(space.get()) != 1 ||
        H5Sget_simple_extent_dims(space.get(), dims, nullptr) < 0) {
        return false;
    }
    void* data = room(static_cast<std::size_t>(dims[0]));
    return dims[0] == 0 || H5Dread(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
}

/// Reads a 1-D dataset of `type` into out (resized). False on any problem.
template <class T>
bool readDataset(hid_t file, const char* name, hid_t type, std::vector<T>& out) {
    return readVector(file, name, type, [&out](std::size_t n) {
        out.resize(n);
        return static_cast<void*>(out.data());
    });
}

/// Fixed-length strings (NUL-padded to the longest; no global heap, so nothing for a damaged file to
/// send HDF5 chasing through).
void writeStrings(hid_t file, const char* name, const std::vector<std::string>& v, const std::string& path) {
    std::size_t width = 1;
    for (const auto& s : v) {
        width = std::max(width, s.size());
    }
    std::vector<char> packed(v.size() * width, '\0');
    for (std::size_t i = 0; i < v.size(); ++i) {
        std::memcpy(packed.data() + i * width, v[i].data(), v[i].size());
    }
    H5Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    check(H5Tset_size(type.get(), width), path, "string type");
    check(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), path, "string type");
    writeDataset(file, name, type.get(), v.size(), packed.data(), path);
}

/// Reads a fixed-length string dataset. False on any problem (missing, not fixed-length strings).
bool readStrings(hid_t file, const char* name, std::vector<std::string>& out) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
        return false;
    }
    std::size_t width = 0;
    {
        H5Handle ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
        if (!ds.ok()) {
            return false;
        }
        H5Handle type(H5Dget_type(ds.get()), H5Tclose);
        if (!type.ok() || H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) != 0) {
            return false;
        }
        width = H5Tget_size(type.get());
    }
    constexpr std::size_t kMaxWidth = std::size_t{1} << 20;
    if (width == 0 || width > kMaxWidth) {
        return false;
    }
    H5Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), width);
    H5Tset_strpad(mem.get(), H5T_STR_NULLPAD);
    std::vector<char> packed;
    std::size_t n = 0;
    if (!readVector(file, name, mem.get(), [&](std::size_t count) {
            n = count;
            packed.resize(n * width);
            return static_cast<void*>(packed.data());
        })) {
        return false;
    }
    out.clear();
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        const char* s = packed.data() + i * width;
        out.emplace_back(s, ::strnlen(s, width));
    }
    return true;
}

struct WarpRecord {
    std::int64_t visit;
    float scale;
    float weight;
    std::uint8_t used;
    std::int64_t nClipped;
    std::int64_t nBig;
    float templateWeight;  // comparewarp (format 3)
    double varianceFactor;
};
struct SpanRecord {
    std::int32_t warp, y, x0, x1;
};
/// A row type (kernel/DecisionTable.h) in the checkpoint: its numeric fields as one compound
/// dataset `name` (members named FieldName::checkpoint, 8 bytes each, packed in field order) and
/// each string field as a fixed-length string dataset named FieldName::checkpoint.
template <class Row>
class RowLayout {
public:
    RowLayout() {
        Row probe;
        Row::fields(probe, [this](const kernel::FieldName& n, auto& member) {
            using T = std::decay_t<decltype(member)>;
            if constexpr (std::is_same_v<T, std::string>) {
                m_strings.push_back(n.checkpoint);
            } else {
                static_assert(std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>,
                              "8-byte fields only");
                m_numeric.emplace_back(n.checkpoint,
                                       std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64);
            }
        });
    }
    [[nodiscard]] std::size_t recordBytes() const { return m_numeric.size() * 8; }
    /// The compound type (caller closes it).
    [[nodiscard]] hid_t compound() const {
        const hid_t t = H5Tcreate(H5T_COMPOUND, recordBytes());
        for (std::size_t k = 0; k < m_numeric.size(); ++k) {
            H5Tinsert(t, m_numeric[k].first, k * 8, m_numeric[k].second);
        }
        return t;
    }
    [[nodiscard]] const std::vector<const char*>& strings() const { return m_strings; }

private:
    std::vector<std::pair<const char*, hid_t>> m_numeric;
    std::vector<const char*> m_strings;
};

template <class Row>
void writeRows(hid_t file, const char* name, const std::vector<Row>& rows, const std::string& path) {
    const RowLayout<Row> layout;
    std::vector<unsigned char> records(rows.size() * layout.recordBytes());
    std::vector<std::vector<std::string>> strings(layout.strings().size());
    for (std::size_t r = 0; r < rows.size(); ++r) {
        unsigned char* rec = records.data() + r * layout.recordBytes();
        std::size_t numeric = 0;
        std::size_t string = 0;
        Row::fields(rows[r], [&](const kernel::FieldName&, const auto& member) {
            using T = std::decay_t<decltype(member)>;
            if constexpr (std::is_same_v<T, std::string>) {
                strings[string++].push_back(member);
            } else {
                std::memcpy(rec + 8 * numeric++, &member, 8);
            }
        });
    }
    H5Handle type(layout.compound(), H5Tclose);
    writeDataset(file, name, type.get(), rows.size(), records.data(), path);
    for (std::size_t k = 0; k < strings.size(); ++k) {
        writeStrings(file, layout.strings()[k], strings[k], path);
    }
}

/// False when a dataset is missing or the columns disagree in length.
template <class Row>
bool readRows(hid_t file, const char* name, std::vector<Row>& rows) {
    const RowLayout<Row> layout;
    H5Handle type(layout.compound(), H5Tclose);
    std::vector<unsigned char> records;
    std::size_t n = 0;
    if (!readVector(file, name, type.get(), [&](std::size_t count) {
            n = count;
            records.resize(n * layout.recordBytes());
            return static_cast<void*>(records.data());
        })) {
        return false;
    }
    std::vector<std::vector<std::string>> strings(layout.strings().size());
    for (std::size_t k = 0; k < strings.size(); ++k) {
        if (!readStrings(file, layout.strings()[k], strings[k]) || strings[k].size() != n) {
            return false;
        }
    }
    rows.assign(n, Row{});
    for (std::size_t r = 0; r < n; ++r) {
        const unsigned char* rec = records.data() + r * layout.recordBytes();
        std::size_t numeric = 0;
        std::size_t string = 0;
        Row::fields(rows[r], [&](const kernel::FieldName&, auto& member) {
            using T = std::decay_t<decltype(member)>;
            if constexpr (std::is_same_v<T, std::string>) {
                member = std::move(strings[string++][r]);
            } else {
                std::memcpy(&member, rec + 8 * numeric++, 8);
            }
        });
    }
    return true;
}

hid_t warpType() {
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(WarpRecord));
    H5Tinsert(t, "visit", HOFFSET(WarpRecord, visit), H5T_NATIVE_INT64);
    H5Tinsert(t, "scale", HOFFSET(WarpRecord, scale), H5T_NATIVE_FLOAT);
    H5Tinsert(t, "weight", HOFFSET(WarpRecord, weight), H5T_NATIVE_FLOAT);
    H5Tinsert(t, "used", HOFFSET(WarpRecord, used), H5T_NATIVE_UINT8);
    H5Tinsert(t, "n_clipped", HOFFSET(WarpRecord, nClipped), H5T_NATIVE_INT64);
    H5Tinsert(t, "n_big", HOFFSET(WarpRecord, nBig), H5T_NATIVE_INT64);
    H5Tinsert(t, "template_weight", HOFFSET(WarpRecord, templateWeight), H5T_NATIVE_FLOAT);
    H5Tinsert(t, "variance_factor", HOFFSET(WarpRecord, varianceFactor), H5T_NATIVE_DOUBLE);
    return t;
}
hid_t spanType() {
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(SpanRecord));
    H5Tinsert(t, "warp", HOFFSET(SpanRecord, warp), H5T_NATIVE_INT32);
    H5Tinsert(t, "y", HOFFSET(SpanRecord, y), H5T_NATIVE_INT32);
    H5Tinsert(t, "x0", HOFFSET(SpanRecord, x0), H5T_NATIVE_INT32);
    H5Tinsert(t, "x1", HOFFSET(SpanRecord, x1), H5T_NATIVE_INT32);
    return t;
}

/// The integrity header in the HDF5 user block (bytes [0, 512), which HDF5 skips): text lines
/// "SAFECLIP-CHECKPOINT <version>", "size <bytes of the whole file>", "crc32 <8 hex digits>" (CRC-32
/// of bytes [512, size), zlib's polynomial, as fileChecksum), then NUL padding.
constexpr std::size_t kUserBlock = 512;
constexpr std::string_view kMagic = "SAFECLIP-CHECKPOINT ";
constexpr std::string_view kHdf5Signature = "\x89HDF\r\n\x1a\n";

std::uint32_t crcOf(const unsigned char* data, std::size_t n) {
    return crc32_gzip_refl(0, data, static_cast<std::uint64_t>(n));
}

/// The name given to HDF5 for a file held in memory: the core driver refuses to open an image under
/// the name of a file that exists, and HDF5 never touches this name (no backing store).
constexpr const char* kMemoryName = "/nonexistent-safeclip-dir/checkpoint-in-memory.h5";

/// The 512 bytes of the user block: the header's lines, then NULs.
std::string integrityHeader(int version, std::size_t size, std::uint32_t crc) {
    char text[kUserBlock] = {};
    std::snprintf(text, sizeof text, "%.*s%d\nsize %zu\ncrc32 %08lx\n", static_cast<int>(kMagic.size()),
                  kMagic.data(), version, size, static_cast<unsigned long>(crc));
    return std::string(text, sizeof text);
}

/// A file access plist for an HDF5 file held in memory (the core driver, no backing store), closed
/// strongly (every object of the file goes with it).
H5Handle memoryAccess(const std::string& path) {
    H5Handle fapl(check(H5Pcreate(H5P_FILE_ACCESS), path, "access plist", true), H5Pclose);
    check(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), path, "close degree");
    constexpr std::size_t kIncrement = std::size_t{1} << 20;
    check(H5Pset_fapl_core(fapl.get(), kIncrement, 0), path, "core driver");
    return fapl;
}

/// Let `body` fill a new HDF5 file built in memory (never on disk: HDF5 does no file I/O, so a full
/// disk shows up in our own write() with its errno), stamp the key and `complete`, and return the
/// whole file image with the integrity header in its user block.
template <class Body>
std::string buildImage(const std::string& path, const CheckpointKey& key, const std::string& stage,
                       Body&& body) {
    H5Handle fcpl(check(H5Pcreate(H5P_FILE_CREATE), path, "create plist", true), H5Pclose);
    check(H5Pset_userblock(fcpl.get(), kUserBlock), path, "user block");
    H5Handle fapl = memoryAccess(path);
    std::string image;
    {
        H5Handle file(
            check(H5Fcreate(kMemoryName, H5F_ACC_TRUNC, fcpl.get(), fapl.get()), path, "create", true),
            H5Fclose);
        body(file.get());
        {
            H5Handle root(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose);
            writeScalarAttr<int>(root.get(), "format_version", H5T_NATIVE_INT, kCheckpointFormatVersion,
                                 path);
            writeStringAttr(root.get(), "safeclip_version", kVersion, path);
            writeStringAttr(root.get(), "config_hash", key.configHash, path);
            writeStringAttr(root.get(), "input_hash", key.inputHash, path);
            writeStringAttr(root.get(), "stage", stage, path);
            writeStrings(file.get(), "inputs", key.inputs, path);
            writeScalarAttr<int>(root.get(), "complete", H5T_NATIVE_INT, 1, path);  // last
        }
        check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), path, "flush");
        // The image starts at the superblock (HDF5 leaves the user block out); addresses in the file
        // are relative to the superblock, so the user block is put in front of it here (as h5jam).
        const ssize_t size = H5Fget_file_image(file.get(), nullptr, 0);
        if (size <= 0) {
            throw OutputError(path + ": HDF5 error while writing the checkpoint (file image)");
        }
        image.assign(kUserBlock + static_cast<std::size_t>(size), '\0');
        if (H5Fget_file_image(file.get(), image.data() + kUserBlock, static_cast<std::size_t>(size)) !=
            size) {
            throw OutputError(path + ": HDF5 error while writing the checkpoint (file image)");
        }
    }
    const auto* bytes = reinterpret_cast<const unsigned char*>(image.data());
    const std::string header = integrityHeader(kCheckpointFormatVersion, image.size(),
                                               crcOf(bytes + kUserBlock, image.size() - kUserBlock));
    image.replace(0, kUserBlock, header);
    return image;
}

/// Build the file in memory, then publish it (io::writeAtomically: temporary, fsync, rename). A
/// failed write names the file and the system's reason (ENOSPC, EROFS, ...).
template <class Body>
void publish(const std::string& path, const CheckpointKey& key, const std::string& stage, Body&& body) {
    silenceHdf5();
    const std::string image = buildImage(path, key, stage, std::forward<Body>(body));
    const fs::path parent = fs::path(path).parent_path();
    // Another job of a sharded run may remove an empty checkpoint dir between our mkdir and our
    // write: retry then.
    for (int attempt = 0;; ++attempt) {
        std::error_code ec;
        if (!parent.empty()) {
            fs::create_directories(parent, ec);
        }
        try {
            writeTextAtomically(path, image, "the checkpoint", /*replaceSpecialFile=*/true);
            return;
        } catch (const OutputError&) {
            if (attempt >= 2 || parent.empty() || fs::is_directory(parent, ec)) {
                throw;
            }
        }
    }
}

/// Reads the whole file with plain POSIX I/O (a regular file only: never blocks on a FIFO or a
/// device) and verifies its integrity header: magic, version, size and CRC-32. On failure fills
/// `out` (Missing or Invalid, with the reason) and returns false. HDF5 never sees an unverified byte.
bool readVerified(const std::string& path, std::string& image, CheckpointRead& out) {
    auto invalid = [&](const std::string& why) {
        out.status = CheckpointStatus::Invalid;
        out.reason = path + ": " + why;
        return false;
    };
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT) {
            out.status = CheckpointStatus::Missing;
            out.reason = path + ": no checkpoint";
            return false;
        }
        return invalid(std::string("cannot open the checkpoint: ") + std::strerror(errno));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return invalid("not a regular file");
    }
    image.assign(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    for (;;) {
        if (got == image.size()) {
            image.resize(got + 4096);  // find out whether the file grew
        }
        const ssize_t n = ::read(fd, image.data() + got, image.size() - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const int err = errno;
            ::close(fd);
            return invalid(std::string("read error: ") + std::strerror(err));
        }
        if (n == 0) {
            break;
        }
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    image.resize(got);
    if (image.compare(0, kHdf5Signature.size(), kHdf5Signature) == 0) {
        return invalid(
            "checkpoint format version 1 (no integrity header), written by an older safeclip; it is "
            "recomputed");
    }
    if (got < kUserBlock) {
        return invalid("truncated checkpoint (" + std::to_string(got) + " bytes)");
    }
    const std::string header(image.data(), ::strnlen(image.data(), kUserBlock));
    int version = 0;
    unsigned long long size = 0;
    unsigned long crc = 0;
    if (header.compare(0, kMagic.size(), kMagic) != 0 ||
        std::sscanf(header.c_str() + kMagic.size(), "%d\nsize %llu\ncrc32 %8lx\n", &version, &size, &crc) !=
            3) {
        return invalid("no checkpoint integrity header (corrupt, or not a safeclip checkpoint)");
    }
    if (version != kCheckpointFormatVersion) {
        return invalid("unsupported checkpoint format version " + std::to_string(version) +
                       " (this safeclip reads " + std::to_string(kCheckpointFormatVersion) + ")");
    }
    if (size != got) {
        return invalid("checkpoint is " + std::to_string(got) + " bytes, its header says " +
                       std::to_string(size) + " (truncated or appended to)");
    }
    if (image.compare(
            0, kUserBlock,
            integrityHeader(version, static_cast<std::size_t>(size), static_cast<std::uint32_t>(crc))) != 0) {
        return invalid("damaged checkpoint integrity header");
    }
    const std::uint32_t actual =
        crcOf(reinterpret_cast<const unsigned char*>(image.data()) + kUserBlock, got - kUserBlock);
    if (actual != crc) {
        char msg[96];
        std::snprintf(msg, sizeof msg, "checksum mismatch (crc32 %08lx stored, %08lx computed): corrupt", crc,
                      static_cast<unsigned long>(actual));
        return invalid(msg);
    }
    return true;
}

/// Open and check the common attributes. Fills `out` on failure.
hid_t openChecked(const std::string& path, const CheckpointKey& key, CheckpointRead& out) {
    silenceHdf5();
    std::string image;
    if (!readVerified(path, image, out)) {
        return -1;
    }
    // HDF5 parses the verified bytes in memory, never the file again.
    hid_t file = -1;
    try {
        H5Handle fapl = memoryAccess(path);
        if (H5Pset_file_image(fapl.get(), image.data(), image.size()) >= 0) {
            file = H5Fopen(kMemoryName, H5F_ACC_RDONLY, fapl.get());
        }
    } catch (const Error&) {
        file = -1;
    }
    if (file < 0) {
        out.status = CheckpointStatus::Invalid;
        out.reason = path + ": not a readable HDF5 file";
        return -1;
    }
    H5Handle root(H5Gopen2(file, "/", H5P_DEFAULT), H5Gclose);
    const auto complete = readScalarAttr<int>(root.get(), "complete", H5T_NATIVE_INT);
    const auto version = readScalarAttr<int>(root.get(), "format_version", H5T_NATIVE_INT);
    const auto cfg = readStringAttr(root.get(), "config_hash");
    const auto in = readStringAttr(root.get(), "input_hash");
    auto fail = [&](CheckpointStatus st, const std::string& why) {
        out.status = st;
        out.reason = path + ": " + why;
        H5Fclose(file);
        return static_cast<hid_t>(-1);
    };
    if (!complete || *complete != 1) {
        return fail(CheckpointStatus::Invalid, "incomplete checkpoint (no complete=1 attribute)");
    }
    if (!version || *version != kCheckpointFormatVersion) {
        return fail(CheckpointStatus::Invalid,
                    "unsupported checkpoint format_version " +
                        (version ? std::to_string(*version) : std::string("(none)")));
    }
    if (!cfg || *cfg != key.configHash) {
        return fail(CheckpointStatus::ConfigChanged, "made with a different configuration (config hash " +
                                                         cfg.value_or("?") + ", now " + key.configHash + ")");
    }
    if (!in || *in != key.inputHash) {
        std::vector<std::string> before;
        readStrings(file, "inputs", before);
        std::string what = "the input list changed";
        for (std::size_t i = 0; i < std::max(before.size(), key.inputs.size()); ++i) {
            const std::string a = i < before.size() ? before[i] : "(none)";
            const std::string b = i < key.inputs.size() ? key.inputs[i] : "(none)";
            if (a != b) {
                what = "input changed: was '" + a + "', now '" + b + "'";
                break;
            }
        }
        return fail(CheckpointStatus::InputChanged, what);
    }
    return file;
}

}  // namespace

namespace {

/// True when a big-endian IEEE float32 word is not a NaN (exponent all ones, mantissa non-zero).
bool notNaNBigEndian(const unsigned char* p) {
    const std::uint32_t bits = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                               (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
    return (bits & 0x7fffffffU) <= 0x7f800000U;
}

}  // namespace

FileScan scanFile(const std::string& path, std::pair<std::int64_t, std::int64_t> float32Range) {
    const auto [rangeStart, rangeBytes] = float32Range;
    const std::int64_t rangeEnd = rangeStart + rangeBytes;
    FileScan out;
    out.anyNotNaN = rangeBytes <= 0;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        throw InputError(path + ": cannot open for the checksum: " + std::strerror(errno));
    }
    // ISA-L's crc32_gzip_refl is zlib's crc32 value for value (init 0, chains like crc32), with
    // PCLMULQDQ folding, ~8x faster; the copy out of the page cache is now most of the cost.
    // 256 KiB blocks stay in L2 between read() and the CRC: 4 MiB blocks were ~40% slower here.
    // Blocks are a multiple of 4 bytes from offset 0, so a 4-aligned float never straddles two.
    constexpr std::size_t kBlock = std::size_t{256} << 10;
    std::vector<unsigned char> buf(kBlock);
    std::uint32_t crc = 0;
    std::int64_t offset = 0;  // of buf[0] in the file
    for (;;) {
        const ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            const int err = errno;
            ::close(fd);
            throw InputError(path + ": read error during the checksum: " + std::strerror(err));
        }
        if (n == 0) {
            break;
        }
        crc = crc32_gzip_refl(crc, buf.data(), static_cast<std::uint64_t>(n));
        // The NaN test stops at the first value that is not NaN (usually the first one).
        const std::int64_t from = std::max(offset, rangeStart);
        const std::int64_t to = std::min(offset + n, rangeEnd) & ~std::int64_t{3};
        for (std::int64_t k = from; !out.anyNotNaN && k + 4 <= to; k += 4) {
            out.anyNotNaN = notNaNBigEndian(buf.data() + (k - offset));
        }
        offset += n;
    }
    ::close(fd);
    if (offset < rangeEnd) {
        throw InputError(path + ": truncated file: the IMAGE pixels end at byte " + std::to_string(rangeEnd) +
                         " but the file has " + std::to_string(offset));
    }
    char text[32];
    std::snprintf(text, sizeof text, "crc32:%08lx", static_cast<unsigned long>(crc));
    out.checksum = text;
    return out;
}

std::string fileChecksum(const std::string& path) {
    return scanFile(path, {0, 0}).checksum;
}

std::string fileFingerprint(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return path + "|missing";
    }
    const long long ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    return path + "|" + std::to_string(static_cast<long long>(st.st_size)) + "|" + std::to_string(ns);
}

void writePatchCheckpoint(const std::string& path, const CheckpointKey& key, const PatchState& s) {
    publish(path, key, s.stage, [&](hid_t file) {
        std::vector<WarpRecord> warps;
        std::vector<std::string> status;
        std::vector<SpanRecord> spans;
        std::vector<SpanRecord> noData;
        for (std::size_t i = 0; i < s.warps.size(); ++i) {
            const WarpState& w = s.warps[i];
            warps.push_back({w.visit, w.scale, w.weight, static_cast<std::uint8_t>(w.used ? 1 : 0),
                             w.nClippedPixels, w.nBigFootprints, w.templateWeight, w.varianceFactor});
            status.push_back(w.status);
            for (const kernel::Span& sp : w.clipped) {
                spans.push_back({static_cast<std::int32_t>(i), sp.y, sp.x0, sp.x1});
            }
            for (const kernel::Span& sp : w.noData) {
                noData.push_back({static_cast<std::int32_t>(i), sp.y, sp.x0, sp.x1});
            }
        }
        std::vector<SpanRecord> edge;
        for (const kernel::Span& sp : s.cwEdge) {
            edge.push_back({-1, sp.y, sp.x0, sp.x1});
        }
        H5Handle wt(warpType(), H5Tclose);
        writeDataset(file, "warps", wt.get(), warps.size(), warps.data(), path);
        writeStrings(file, "warp_status", status, path);
        std::vector<std::string> sums;
        for (const WarpState& w : s.warps) {
            sums.push_back(w.checksum);
        }
        writeStrings(file, "warp_checksum", sums, path);
        H5Handle st(spanType(), H5Tclose);
        writeDataset(file, "clipped_spans", st.get(), spans.size(), spans.data(), path);
        writeRows(file, "footprints", s.decisions.footprints, path);
        writeRows(file, "candidates", s.decisions.candidates, path);
        writeDataset(file, "nodata_spans", st.get(), noData.size(), noData.data(), path);
        writeDataset(file, "cw_edge_spans", st.get(), edge.size(), edge.data(), path);
        writeRows(file, "cw_footprints", s.cwRows, path);
        H5Handle root(H5Gopen2(file, "/", H5P_DEFAULT), H5Gclose);
        writeStringAttr(root.get(), "mode", s.mode, path);
        writeScalarAttr<std::int64_t>(root.get(), "cw_max_radius", H5T_NATIVE_INT64, s.cwMaxRadius, path);
        writeScalarAttr<double>(root.get(), "cw_mean_nimage", H5T_NATIVE_DOUBLE, s.cwMeanNImage, path);
        writeScalarAttr<std::int64_t>(root.get(), "n_footprints", H5T_NATIVE_INT64, s.nFootprints, path);
        writeScalarAttr<std::int64_t>(root.get(), "n_clipped_footprints", H5T_NATIVE_INT64,
                                      s.nClippedFootprints, path);
        writeScalarAttr<double>(root.get(), "psf_sigma", H5T_NATIVE_DOUBLE, s.psfSigma, path);
        writeStringAttr(root.get(), "psf_source", s.psfSource, path);
    });
}

CheckpointRead readPatchCheckpoint(const std::string& path, const CheckpointKey& key) {
    CheckpointRead out;
    const hid_t fileId = openChecked(path, key, out);
    if (fileId < 0) {
        return out;
    }
    H5Handle file(fileId, H5Fclose);
    H5Handle root(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose);
    PatchState& s = out.state;
    s.stage = readStringAttr(root.get(), "stage").value_or("");
    std::vector<WarpRecord> warps;
    std::vector<std::string> status;
    std::vector<std::string> sums;
    std::vector<SpanRecord> spans;
    std::vector<SpanRecord> noData;
    std::vector<SpanRecord> edge;
    H5Handle wt(warpType(), H5Tclose);
    H5Handle st(spanType(), H5Tclose);
    const bool ok =
        readDataset(file.get(), "warps", wt.get(), warps) && readStrings(file.get(), "warp_status", status) &&
        readStrings(file.get(), "warp_checksum", sums) && sums.size() == warps.size() &&
        readDataset(file.get(), "clipped_spans", st.get(), spans) &&
        readRows(file.get(), "footprints", s.decisions.footprints) &&
        readRows(file.get(), "candidates", s.decisions.candidates) && status.size() == warps.size() &&
        readDataset(file.get(), "nodata_spans", st.get(), noData) &&
        readDataset(file.get(), "cw_edge_spans", st.get(), edge) &&
        readRows(file.get(), "cw_footprints", s.cwRows);
    const auto nf = readScalarAttr<std::int64_t>(root.get(), "n_footprints", H5T_NATIVE_INT64);
    const auto ncf = readScalarAttr<std::int64_t>(root.get(), "n_clipped_footprints", H5T_NATIVE_INT64);
    const auto psf = readScalarAttr<double>(root.get(), "psf_sigma", H5T_NATIVE_DOUBLE);
    const auto mode = readStringAttr(root.get(), "mode");
    const auto radius = readScalarAttr<std::int64_t>(root.get(), "cw_max_radius", H5T_NATIVE_INT64);
    const auto meanNImage = readScalarAttr<double>(root.get(), "cw_mean_nimage", H5T_NATIVE_DOUBLE);
    if (!ok || !nf || !ncf || !psf || !mode || !radius || !meanNImage) {
        out.status = CheckpointStatus::Invalid;
        out.reason = path + ": checkpoint is missing datasets or attributes";
        return out;
    }
    if (*radius < 0 || *radius > std::numeric_limits<int>::max()) {
        out.status = CheckpointStatus::Invalid;
        out.reason = path + ": checkpoint has a matching-kernel radius out of range";
        return out;
    }
    s.nFootprints = *nf;
    s.nClippedFootprints = *ncf;
    s.psfSigma = *psf;
    s.mode = *mode;
    s.cwMaxRadius = static_cast<int>(*radius);
    s.cwMeanNImage = *meanNImage;
    s.psfSource = readStringAttr(root.get(), "psf_source").value_or("");
    for (std::size_t i = 0; i < warps.size(); ++i) {
        WarpState w;
        w.visit = warps[i].visit;
        w.scale = warps[i].scale;
        w.weight = warps[i].weight;
        w.used = warps[i].used != 0;
        w.status = status[i];
        w.checksum = sums[i];
        w.nClippedPixels = warps[i].nClipped;
        w.nBigFootprints = warps[i].nBig;
        w.templateWeight = warps[i].templateWeight;
        w.varianceFactor = warps[i].varianceFactor;
        s.warps.push_back(std::move(w));
    }
    // Each span record to its warp's list; false for a warp index out of range.
    auto toWarps = [&s](const std::vector<SpanRecord>& records,
                        std::vector<kernel::Span> WarpState::*member) {
        for (const SpanRecord& r : records) {
            if (r.warp < 0 || static_cast<std::size_t>(r.warp) >= s.warps.size()) {
                return false;
            }
            (s.warps[static_cast<std::size_t>(r.warp)].*member).push_back({r.y, r.x0, r.x1});
        }
        return true;
    };
    if (!toWarps(spans, &WarpState::clipped) || !toWarps(noData, &WarpState::noData)) {
        out.status = CheckpointStatus::Invalid;
        out.reason = path + ": clipped or NO_DATA span of an unknown warp";
        return out;
    }
    for (const SpanRecord& r : edge) {
        s.cwEdge.push_back({r.y, r.x0, r.x1});
    }
    out.status = CheckpointStatus::Ok;
    return out;
}

namespace {

template <class T>
void writePlane(hid_t file, const char* name, hid_t type, const kernel::Image<T>& img,
                const std::string& path) {
    const kernel::Box& b = img.box();
    const hsize_t dims[2] = {static_cast<hsize_t>(b.height), static_cast<hsize_t>(b.width)};
    H5Handle space(H5Screate_simple(2, dims, nullptr), H5Sclose);
    H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    const hsize_t chunk[2] = {std::min<hsize_t>(dims[0], 256), std::min<hsize_t>(dims[1], 256)};
    check(H5Pset_chunk(dcpl.get(), 2, chunk), path, "chunking");
    check(H5Pset_shuffle(dcpl.get()), path, "shuffle");
    check(H5Pset_deflate(dcpl.get(), 1), path, "deflate");
    H5Handle ds(check(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), path,
                      name, true),
                H5Dclose);
    check(H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, img.data().data()), path, name);
}

template <class T>
bool readPlane(hid_t file, const char* name, hid_t type, kernel::Image<T>& img) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
        return false;
    }
    H5Handle ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
    H5Handle space(H5Dget_space(ds.get()), H5Sclose);
    hsize_t dims[2] = {0, 0};
    if (H5Sget_simple_extent_ndims(space.get()) != 2 ||
        H5Sget_simple_extent_dims(space.get(), dims, nullptr) < 0 ||
        dims[0] != static_cast<hsize_t>(img.box().height) ||
        dims[1] != static_cast<hsize_t>(img.box().width)) {
        return false;
    }
    return H5Dread(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, img.data().data()) >= 0;
}

}  // namespace

void writeTileCheckpoint(const std::string& path, const CheckpointKey& key, const kernel::MaskedImage& pixels,
                         const kernel::ImageU16& nImage, const std::vector<std::int64_t>& usedPerWarp) {
    publish(path, key, "tile", [&](hid_t file) {
        writeDataset(file, "used_per_warp", H5T_NATIVE_INT64, usedPerWarp.size(), usedPerWarp.data(), path);
        writePlane(file, "image", H5T_NATIVE_FLOAT, pixels.image, path);
        writePlane(file, "mask", H5T_NATIVE_INT32, pixels.mask, path);
        writePlane(file, "variance", H5T_NATIVE_FLOAT, pixels.variance, path);
        writePlane(file, "nimage", H5T_NATIVE_UINT16, nImage, path);
        const kernel::Box& b = pixels.box();
        const std::int64_t box[4] = {b.x0, b.y0, b.width, b.height};
        const hsize_t dims[1] = {4};
        H5Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
        H5Handle root(H5Gopen2(file, "/", H5P_DEFAULT), H5Gclose);
        H5Handle attr(
            check(H5Acreate2(root.get(), "box", H5T_NATIVE_INT64, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                  path, "box", true),
            H5Aclose);
        check(H5Awrite(attr.get(), H5T_NATIVE_INT64, box), path, "box");
    });
}

bool readTileCheckpoint(const std::string& path, const CheckpointKey& key, const kernel::Box& box,
                        kernel::MaskedImage& pixels, kernel::ImageU16& nImage,
                        std::vector<std::int64_t>& usedPerWarp, std::string* reason) {
    CheckpointRead status;
    auto refuse = [&](const std::string& why) {
        if (reason != nullptr) {
            *reason = why;
        }
        return false;
    };
    const hid_t fileId = openChecked(path, key, status);
    if (fileId < 0) {
        return refuse(status.status == CheckpointStatus::Missing ? std::string() : status.reason);
    }
    H5Handle file(fileId, H5Fclose);
    H5Handle root(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose);
    std::int64_t stored[4] = {0, 0, 0, 0};
    if (H5Aexists(root.get(), "box") <= 0) {
        return refuse(path + ": tile checkpoint without a box");
    }
    H5Handle attr(H5Aopen(root.get(), "box", H5P_DEFAULT), H5Aclose);
    if (H5Aread(attr.get(), H5T_NATIVE_INT64, stored) < 0 || stored[0] != box.x0 || stored[1] != box.y0 ||
        stored[2] != box.width || stored[3] != box.height) {
        return refuse(path + ": tile checkpoint of another box (another tiling)");
    }
    // Into temporaries: the outputs change only when everything was read.
    kernel::MaskedImage px(box);
    kernel::ImageU16 n(box);
    std::vector<std::int64_t> used;
    if (!readDataset(file.get(), "used_per_warp", H5T_NATIVE_INT64, used) ||
        !readPlane(file.get(), "image", H5T_NATIVE_FLOAT, px.image) ||
        !readPlane(file.get(), "mask", H5T_NATIVE_INT32, px.mask) ||
        !readPlane(file.get(), "variance", H5T_NATIVE_FLOAT, px.variance) ||
        !readPlane(file.get(), "nimage", H5T_NATIVE_UINT16, n)) {
        return refuse(path + ": tile checkpoint is missing datasets or has the wrong shape");
    }
    for (const std::int64_t u : used) {
        if (u < 0 || u > box.area()) {
            return refuse(path + ": tile checkpoint counts " + std::to_string(u) +
                          " used pixels of one warp in " + std::to_string(box.area()));
        }
    }
    pixels = std::move(px);
    nImage = std::move(n);
    usedPerWarp = std::move(used);
    return true;
}

}  // namespace safeclip::io
