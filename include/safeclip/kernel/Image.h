#pragma once
/// @file Image.h  Owning 2-D pixel containers addressed in PARENT coordinates (row-major [y][x]).
/// Containers never do I/O.
#include <cstdint>
#include <vector>

#include "safeclip/kernel/Box.h"

namespace safeclip::kernel {

using ImagePixel = float;        ///< image plane (afw ImageF)
using VariancePixel = float;     ///< variance plane
using MaskPixel = std::int32_t;  ///< mask plane, a bit field (afw MaskPixel)

/// Owning image of T over a Box; element (x, y) in PARENT coordinates, stored row-major.
template <typename T>
class Image {
public:
    Image() = default;
    explicit Image(const Box& box, T fill = T{})
        : m_box(box), m_data(static_cast<std::size_t>(box.area()), fill) {}

    [[nodiscard]] const Box& box() const { return m_box; }
    [[nodiscard]] T* row(int y) { return m_data.data() + offset(m_box.x0, y); }
    [[nodiscard]] const T* row(int y) const { return m_data.data() + offset(m_box.x0, y); }
    T& operator()(int x, int y) { return m_data[offset(x, y)]; }
    const T& operator()(int x, int y) const { return m_data[offset(x, y)]; }
    [[nodiscard]] std::vector<T>& data() { return m_data; }
    [[nodiscard]] const std::vector<T>& data() const { return m_data; }
    void fill(T v) { std::fill(m_data.begin(), m_data.end(), v); }
    /// Move to `box`, keeping the allocation when it is large enough; pixel values are then
    /// unspecified (for buffers that are overwritten, e.g. read targets reused across chunks).
    void reshape(const Box& box) {
        m_box = box;
        m_data.resize(static_cast<std::size_t>(box.area()));
    }

private:
    [[nodiscard]] std::size_t offset(int x, int y) const {
        return static_cast<std::size_t>(y - m_box.y0) * static_cast<std::size_t>(m_box.width) +
               static_cast<std::size_t>(x - m_box.x0);
    }
    Box m_box;
    std::vector<T> m_data;
};

using ImageF = Image<float>;
using ImageU16 = Image<std::uint16_t>;
using MaskImage = Image<MaskPixel>;

/// Image, mask and variance on one box (afw MaskedImage). 12 bytes per pixel.
struct MaskedImage {
    MaskedImage() = default;
    explicit MaskedImage(const Box& box) : image(box), mask(box), variance(box) {}
    [[nodiscard]] const Box& box() const { return image.box(); }
    /// Image::reshape of all three planes.
    void reshape(const Box& box) {
        image.reshape(box);
        mask.reshape(box);
        variance.reshape(box);
    }
    ImageF image;
    MaskImage mask;
    ImageF variance;
};

}  // namespace safeclip::kernel
