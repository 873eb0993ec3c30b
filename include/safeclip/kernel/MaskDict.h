#pragma once
/// @file MaskDict.h  Name -> bit dictionary of mask planes (afw detail::MaskDict).
/// Bits 0..8 are the afw defaults; every other plane is added by name in order of first use.
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "safeclip/kernel/Image.h"

namespace safeclip::kernel {

class MaskDict {
public:
    /// The afw default dictionary: BAD=0 SAT=1 INTRP=2 CR=3 EDGE=4 DETECTED=5
    /// DETECTED_NEGATIVE=6 SUSPECT=7 NO_DATA=8.
    static MaskDict defaults();
    /// The canonical dictionary of safeclip: the defaults, then CLIPPED, REJECTED, SENSOR_EDGE,
    /// INEXACT_PSF (the coadd planes), so that coadd bits do not depend on the inputs. Planes
    /// from input files that are not in it are appended in order of first use.
    static MaskDict canonical();

    /// Bit index of a plane, or -1 when absent.
    [[nodiscard]] int bitOf(std::string_view name) const;
    /// Mask value `1 << bitOf(name)`, or 0 when absent.
    [[nodiscard]] MaskPixel bitMask(std::string_view name) const;
    /// OR of bitMask() over names (absent names contribute 0).
    [[nodiscard]] MaskPixel bitMask(const std::vector<std::string>& names) const;
    /// Returns the bit of `name`, adding the plane at the lowest free bit if absent.
    /// @throws InvalidParameter when all 32 bits are in use or the name is empty.
    int addPlane(const std::string& name);
    /// Adds a plane at a given bit (used when parsing MP_* cards).
    /// @throws InvalidParameter on a duplicate name or a duplicate/out-of-range bit.
    void setPlane(const std::string& name, int bit);
    /// Planes ordered by bit.
    [[nodiscard]] std::vector<std::pair<std::string, int>> planes() const;
    [[nodiscard]] std::size_t size() const { return m_planes.size(); }

private:
    std::vector<std::pair<std::string, int>> m_planes;  // insertion order
};

/// Per-bit remapping table from one file's dictionary into a canonical one.
class MaskRemap {
public:
    MaskRemap() = default;
    /// Build the map file -> canonical, adding missing planes to `canonical`.
    MaskRemap(const MaskDict& file, MaskDict& canonical);
    /// True when every named bit maps to itself (only unnamed bits need clearing).
    [[nodiscard]] bool identity() const { return m_identity; }
    /// Remap one value. Bits that the file does not name are dropped.
    [[nodiscard]] MaskPixel apply(MaskPixel v) const;
    /// Remap n values in place.
    void applyInPlace(MaskPixel* v, std::size_t n) const;

private:
    int m_dst[32] = {};  // destination bit per source bit, -1 = drop
    bool m_identity = true;
    MaskPixel m_keep = ~0;  // bits named by the file
};

}  // namespace safeclip::kernel
