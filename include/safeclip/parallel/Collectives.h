#pragma once
/// @file Collectives.h  The few collectives the pipeline needs, over an optional communicator:
/// with `comm == nullptr` (a plain serial run without MPI) they are local no-ops, so one code path
/// serves `safeclip coadd` in a unit test and `mpirun -n R safeclip run`.
#include <boost/mpi/collectives.hpp>
#include <vector>

#include "safeclip/parallel/Comm.h"
#include "safeclip/parallel/Serialization.h"

namespace safeclip::parallel {

/// Rank within comm (0 when serial).
inline int rankOf(const Comm* comm) {
    return comm == nullptr ? 0 : comm->rank();
}
/// Size of comm (1 when serial).
inline int sizeOf(const Comm* comm) {
    return comm == nullptr ? 1 : comm->size();
}

/// Collective: true only if ok on every rank.
inline bool agreeAll(const Comm* comm, bool ok) {
    return comm == nullptr ? ok : comm->agree(ok);
}

/// Gather `mine` to rank 0: all values in rank order on rank 0, empty elsewhere.
template <class T>
std::vector<T> gatherToRoot(const Comm* comm, const T& mine) {
    std::vector<T> all;
    if (comm == nullptr) {
        all.push_back(mine);
        return all;
    }
    boost::mpi::gather(comm->raw(), mine, all, 0);
    return all;
}

/// Every rank's value, in rank order, on every rank.
template <class T>
std::vector<T> allGather(const Comm* comm, const T& mine) {
    std::vector<T> all;
    if (comm == nullptr) {
        all.push_back(mine);
        return all;
    }
    boost::mpi::all_gather(comm->raw(), mine, all);
    return all;
}

/// Broadcast rank 0's value to every rank.
template <class T>
void broadcastFromRoot(const Comm* comm, T& value) {
    if (comm != nullptr) {
        boost::mpi::broadcast(comm->raw(), value, 0);
    }
}

}  // namespace safeclip::parallel
