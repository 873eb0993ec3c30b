#include "safeclip/parallel/Comm.h"

#include <boost/mpi/collectives.hpp>
#include <functional>

namespace safeclip::parallel {

bool Comm::agree(bool ok) const {
    return boost::mpi::all_reduce(m_comm, ok ? 1 : 0, boost::mpi::minimum<int>()) == 1;
}

long long Comm::sum(long long v) const {
    return boost::mpi::all_reduce(m_comm, v, std::plus<long long>());
}

double Comm::max(double v) const {
    return boost::mpi::all_reduce(m_comm, v, boost::mpi::maximum<double>());
}

}  // namespace safeclip::parallel
