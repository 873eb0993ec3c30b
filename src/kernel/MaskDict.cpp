#include "safeclip/kernel/MaskDict.h"

#include <algorithm>

#include "safeclip/kernel/Error.h"

namespace safeclip::kernel {

namespace {
constexpr const char* kDefaultPlanes[] = {
    "BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT", "NO_DATA"};
constexpr const char* kCoaddPlanes[] = {"CLIPPED", "REJECTED", "SENSOR_EDGE", "INEXACT_PSF"};
}  // namespace

MaskDict MaskDict::defaults() {
    MaskDict d;
    int bit = 0;
    for (const char* name : kDefaultPlanes) {
        d.setPlane(name, bit++);
    }
    return d;
}

MaskDict MaskDict::canonical() {
    MaskDict d = defaults();
    for (const char* name : kCoaddPlanes) {
        d.addPlane(name);
    }
    return d;
}

int MaskDict::bitOf(std::string_view name) const {
    for (const auto& [n, b] : m_planes) {
        if (n == name) {
            return b;
        }
    }
    return -1;
}

MaskPixel MaskDict::bitMask(std::string_view name) const {
    const int b = bitOf(name);
    return b < 0 ? 0 : static_cast<MaskPixel>(1U << static_cast<unsigned>(b));
}

MaskPixel MaskDict::bitMask(const std::vector<std::string>& names) const {
    MaskPixel m = 0;
    for (const auto& n : names) {
        m |= bitMask(n);
    }
    return m;
}

int MaskDict::addPlane(const std::string& name) {
    if (name.empty()) {
        throw InvalidParameter("mask plane name is empty");
    }
    if (const int b = bitOf(name); b >= 0) {
        return b;
    }
    for (int bit = 0; bit < 32; ++bit) {
        const bool used =
            std::any_of(m_planes.begin(), m_planes.end(), [bit](const auto& p) { return p.second == bit; });
        if (!used) {
            m_planes.emplace_back(name, bit);
            return bit;
        }
    }
    throw InvalidParameter("no free mask bit for plane " + name + " (all 32 bits in use)");
}

void MaskDict::setPlane(const std::string& name, int bit) {
    if (name.empty()) {
        throw InvalidParameter("mask plane name is empty");
    }
    if (bit < 0 || bit > 31) {
        throw InvalidParameter("mask plane " + name + " has bit " + std::to_string(bit) + " outside 0..31");
    }
    for (const auto& [n, b] : m_planes) {
        if (n == name) {
            throw InvalidParameter("duplicate mask plane " + name);
        }
        if (b == bit) {
            throw InvalidParameter("mask planes " + n + " and " + name + " share bit " + std::to_string(bit));
        }
    }
    m_planes.emplace_back(name, bit);
}

std::vector<std::pair<std::string, int>> MaskDict::planes() const {
    auto p = m_planes;
    std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    return p;
}

MaskRemap::MaskRemap(const MaskDict& file, MaskDict& canonical) {
    std::fill(std::begin(m_dst), std::end(m_dst), -1);
    m_identity = true;
    std::uint32_t keep = 0;
    for (const auto& [name, bit] : file.planes()) {
        m_dst[bit] = canonical.addPlane(name);
        keep |= 1U << static_cast<unsigned>(bit);
        if (m_dst[bit] != bit) {
            m_identity = false;
        }
    }
    m_keep = static_cast<MaskPixel>(keep);  // bits the file does not name are dropped
}

MaskPixel MaskRemap::apply(MaskPixel v) const {
    if (m_identity) {
        return v & m_keep;
    }
    auto u = static_cast<std::uint32_t>(v);
    std::uint32_t out = 0;
    while (u != 0) {
        const int b = __builtin_ctz(u);
        u &= u - 1;
        if (m_dst[b] >= 0) {
            out |= 1U << static_cast<unsigned>(m_dst[b]);
        }
    }
    return static_cast<MaskPixel>(out);
}

void MaskRemap::applyInPlace(MaskPixel* v, std::size_t n) const {
    if (m_identity) {
        for (std::size_t i = 0; i < n; ++i) {
            v[i] &= m_keep;
        }
        return;
    }
    for (std::size_t i = 0; i < n; ++i) {
        v[i] = apply(v[i]);
    }
}

}  // namespace safeclip::kernel
