// GoogleTest main for MPI tests: one process per rank; rank 0 prints the usual output, other ranks
// print only failures prefixed with their rank; the exit code is the worst over all ranks.
#include <gtest/gtest.h>

#include <boost/mpi/collectives.hpp>
#include <boost/mpi/communicator.hpp>
#include <boost/mpi/environment.hpp>
#include <cstdio>

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
public:
    explicit RankFailurePrinter(int rank) : m_rank(rank) {}
    void OnTestPartResult(const ::testing::TestPartResult& r) override {
        if (r.failed()) {
            std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", m_rank,
                         r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
        }
    }

private:
    int m_rank;
};

}  // namespace

int main(int argc, char** argv) {
    boost::mpi::environment env(argc, argv);
    boost::mpi::communicator world;
    ::testing::InitGoogleTest(&argc, argv);
    if (world.rank() != 0) {
        auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
        delete listeners.Release(listeners.default_result_printer());
        listeners.Append(new RankFailurePrinter(world.rank()));
    }
    const int rc = RUN_ALL_TESTS();
    return boost::mpi::all_reduce(world, rc, boost::mpi::maximum<int>());
}
