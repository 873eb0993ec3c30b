#include "safeclip/parallel/TileGather.h"

#include <boost/mpi/collectives.hpp>
#include <boost/serialization/vector.hpp>
#include <cstring>

#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Serialization.h"


namespace safeclip::parallel {

namespace {

/// Wire form of a tile: box plus the raw planes.
struct TileMessage {
    kernel::Box box;
    std::vector<float> image;
    std::vector<kernel::MaskPixel> mask;
    std::vector<float> variance;
    std::vector<std::uint16_t> nImage;

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar& box& image& mask& variance& nImage;
    }
};

template <typename T>
void copyInto(const kernel::Box& box, const std::vector<T>& src, kernel::Image<T>& dst) {
    if (dst.box().area() == 0 || src.empty()) {
        return;
    }
    for (int y = box.y0; y < box.y1(); ++y) {
        const T* from =
            src.data() + static_cast<std::size_t>(y - box.y0) * static_cast<std::size_t>(box.width);
        std::memcpy(&dst(box.x0, y), from, sizeof(T) * static_cast<std::size_t>(box.width));
    }
}

}  // namespace

void gatherTiles(const Comm& comm, int root, const std::vector<Tile>& local, kernel::MaskedImage& patch,
                 kernel::ImageU16& nImage) {
    std::vector<TileMessage> mine;
    mine.reserve(local.size());
    for (const Tile& t : local) {
        TileMessage m;
        m.box = t.pixels.box();
        m.image = t.pixels.image.data();
        m.mask = t.pixels.mask.data();
        m.variance = t.pixels.variance.data();
        m.nImage = t.nImage.data();
        mine.push_back(std::move(m));
    }
    std::vector<std::vector<TileMessage>> all;
    boost::mpi::gather(comm.raw(), mine, all, root);
    if (comm.rank() != root) {
        return;
    }
    for (const auto& fromRank : all) {
        for (const TileMessage& m : fromRank) {
            if (!patch.box().contains(m.box)) {
                throw InvalidParameter("gatherTiles: tile " + m.box.str() + " outside patch " +
                                       patch.box().str());
            }
            copyInto(m.box, m.image, patch.image);
            copyInto(m.box, m.mask, patch.mask);
            copyInto(m.box, m.variance, patch.variance);
            copyInto(m.box, m.nImage, nImage);
        }
    }
}

void gatherTiles(const Comm* comm, int root, const std::vector<Tile>& local, kernel::MaskedImage& patch,
                 kernel::ImageU16& nImage) {
    if (comm != nullptr) {
        gatherTiles(*comm, root, local, patch, nImage);
        return;
    }
    for (const Tile& t : local) {
        const kernel::Box& b = t.pixels.box();
        if (!patch.box().contains(b)) {
            throw InvalidParameter("gatherTiles: tile " + b.str() + " outside patch " + patch.box().str());
        }
        copyInto(b, t.pixels.image.data(), patch.image);
        copyInto(b, t.pixels.mask.data(), patch.mask);
        copyInto(b, t.pixels.variance.data(), patch.variance);
        copyInto(b, t.nImage.data(), nImage);
    }
}

}  // namespace safeclip::parallel
