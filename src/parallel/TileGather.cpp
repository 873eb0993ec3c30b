#include "safeclip/parallel/TileGather.h"

#include <mpi.h>

#include <cstring>

#include "safeclip/kernel/Error.h"

namespace safeclip::parallel {

namespace {

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

namespace {

template <typename T>
MPI_Datatype mpiType();
template <>
MPI_Datatype mpiType<float>() {
    return MPI_FLOAT;
}
template <>
MPI_Datatype mpiType<kernel::MaskPixel>() {
    return MPI_INT32_T;
}
template <>
MPI_Datatype mpiType<std::uint16_t>() {
    return MPI_UINT16_T;
}

/// Receive one plane of `box` from `src` into `dst` through a tile-sized buffer.
template <typename T>
void recvPlane(MPI_Comm comm, int src, const kernel::Box& box, kernel::Image<T>& dst, std::vector<T>& buf) {
    buf.resize(static_cast<std::size_t>(box.area()));
    MPI_Recv(buf.data(), static_cast<int>(buf.size()), mpiType<T>(), src, 2, comm, MPI_STATUS_IGNORE);
    copyInto(box, buf, dst);
}

template <typename T>
void sendPlane(MPI_Comm comm, int root, const kernel::Image<T>& img) {
    MPI_Send(img.data().data(), static_cast<int>(img.data().size()), mpiType<T>(), root, 2, comm);
}

}  // namespace

void gatherTiles(const Comm& comm, int root, const std::vector<Tile>& local, kernel::MaskedImage& patch,
                 kernel::ImageU16& nImage) {
    // Point to point, one plane at a time: the root never holds more than one received tile plane
    // beside the patch (no serialized copies of whole tiles).
    MPI_Comm raw = comm.raw();
    if (comm.rank() != root) {
        int n = static_cast<int>(local.size());
        MPI_Send(&n, 1, MPI_INT, root, 1, raw);
        for (const Tile& t : local) {
            const kernel::Box& b = t.pixels.box();
            const int box[4] = {b.x0, b.y0, b.width, b.height};
            MPI_Send(box, 4, MPI_INT, root, 1, raw);
            sendPlane(raw, root, t.pixels.image);
            sendPlane(raw, root, t.pixels.mask);
            sendPlane(raw, root, t.pixels.variance);
            sendPlane(raw, root, t.nImage);
        }
        return;
    }
    gatherTiles(static_cast<const Comm*>(nullptr), root, local, patch, nImage);
    std::vector<float> fbuf;
    std::vector<kernel::MaskPixel> mbuf;
    std::vector<std::uint16_t> nbuf;
    for (int r = 0; r < comm.size(); ++r) {
        if (r == root) {
            continue;
        }
        int n = 0;
        MPI_Recv(&n, 1, MPI_INT, r, 1, raw, MPI_STATUS_IGNORE);
        for (int k = 0; k < n; ++k) {
            int box[4] = {0, 0, 0, 0};
            MPI_Recv(box, 4, MPI_INT, r, 1, raw, MPI_STATUS_IGNORE);
            const kernel::Box b{box[0], box[1], box[2], box[3]};
            if (!patch.box().contains(b)) {
                throw InvalidParameter("gatherTiles: tile " + b.str() + " outside patch " +
                                       patch.box().str());
            }
            recvPlane(raw, r, b, patch.image, fbuf);
            recvPlane(raw, r, b, patch.mask, mbuf);
            recvPlane(raw, r, b, patch.variance, fbuf);
            recvPlane(raw, r, b, nImage, nbuf);
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
