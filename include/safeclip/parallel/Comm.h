#pragma once
/// @file Comm.h  Thin wrapper over a Boost.MPI communicator: rank/size and failure agreement.
#include <boost/mpi/communicator.hpp>

namespace safeclip::parallel {

class Comm {
public:
    Comm() = default;  ///< MPI_COMM_WORLD (boost::mpi::environment must exist)
    explicit Comm(boost::mpi::communicator comm) : m_comm(std::move(comm)) {}
    [[nodiscard]] int rank() const { return m_comm.rank(); }
    [[nodiscard]] int size() const { return m_comm.size(); }
    /// Collective: true only if `ok` is true on every rank. Call it before every collective stage
    /// so that a failure on one rank never leaves the others waiting.
    [[nodiscard]] bool agree(bool ok) const;
    /// Collective sum of a 64-bit counter.
    [[nodiscard]] long long sum(long long v) const;
    /// Collective max of a double.
    [[nodiscard]] double max(double v) const;
    [[nodiscard]] const boost::mpi::communicator& raw() const { return m_comm; }

private:
    boost::mpi::communicator m_comm;
};

}  // namespace safeclip::parallel
