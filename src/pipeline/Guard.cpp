/// @file Guard.cpp  Stage agreement and the failure-injection test hook.
#include "safeclip/pipeline/Guard.h"

#include <boost/mpi/communicator.hpp>
#include <boost/mpi/environment.hpp>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/parallel/Signals.h"

namespace safeclip::pipeline {

void maybeInjectFailure(const char* stage) {
    const char* spec = std::getenv("SAFECLIP_FAIL_AT");
    const char* hang = std::getenv("SAFECLIP_TEST_HANG_AT");
    if (spec == nullptr && hang == nullptr) {
        return;
    }
    int worldRank = 0;
    if (boost::mpi::environment::initialized() && !boost::mpi::environment::finalized()) {
        worldRank = boost::mpi::communicator().rank();
    }
    const std::string here = std::to_string(worldRank) + ":" + stage;
    if (hang != nullptr && (here == hang || std::string(stage) == hang)) {
        // Test hook: a call that never returns and ignores the stop flag (as HDF5 spinning on a damaged
        // file did); only the stop-signal watchdog (parallel/Signals.h) ends it.
        parallel::log().warn("test hook: hanging in stage '{}' (SAFECLIP_TEST_HANG_AT={})", stage, hang);
        parallel::log().flush();
        for (;;) {
            std::this_thread::sleep_for(std::chrono::hours(1));
        }
    }
    if (spec != nullptr && here == spec) {
        throw InputError("injected failure (SAFECLIP_FAIL_AT=" + std::string(spec) + ")");
    }
}

namespace {

/// Run `body` (which may throw), then agree with the group: if any rank failed, every rank throws.
void runAndAgree(PatchContext& ctx, const char* stage, const std::function<void()>& body) {
    std::string error;
    ExitCode code = ExitCode::Ok;
    try {
        body();
    } catch (const Error& e) {
        error = e.what();
        code = e.code();
    } catch (const std::exception& e) {
        error = std::string("internal error: ") + e.what();
        code = ExitCode::Internal;
    }
    if (!parallel::agreeAll(ctx.group, error.empty())) {
        // Every rank exits with the failing rank's code (the worst if several failed).
        const auto worst = static_cast<ExitCode>(
            ctx.group == nullptr ? static_cast<int>(code)
                                 : static_cast<int>(ctx.group->max(static_cast<int>(code))));
        if (!error.empty()) {
            throw Error(error, code);
        }
        throw Error("patch " + ctx.name + ": stage '" + std::string(stage) +
                        "' failed on another rank of this patch's group",
                    worst);
    }
}

void rethrowDeferred(PatchContext& ctx) {
    if (ctx.deferred) {
        std::exception_ptr e = ctx.deferred;
        ctx.deferred = nullptr;
        std::rethrow_exception(e);
    }
}

}  // namespace

void guarded(PatchContext& ctx, const char* stage, const std::function<void()>& fn, bool injectAtStart) {
    runAndAgree(ctx, stage, [&] {
        rethrowDeferred(ctx);
        if (injectAtStart) {
            maybeInjectFailure(stage);
        }
        parallel::throwIfStopRequested((std::string("before stage '") + stage + "'").c_str());
        fn();
    });
}

void guardedOnRoot(PatchContext& ctx, const char* stage, const std::function<void()>& fn) {
    runAndAgree(ctx, stage, [&] {
        rethrowDeferred(ctx);
        if (!ctx.isRoot()) {
            return;  // nothing to do, so nothing to fail: the root's outcome is the stage's
        }
        maybeInjectFailure(stage);
        parallel::throwIfStopRequested((std::string("before stage '") + stage + "'").c_str());
        fn();
    });
}

void deferred(PatchContext& ctx, const std::function<void()>& fn) {
    try {
        fn();
    } catch (...) {
        ctx.deferred = std::current_exception();
    }
}

}  // namespace safeclip::pipeline
