#include "safeclip/parallel/Signals.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "safeclip/kernel/Error.h"

namespace safeclip::parallel {

namespace {
// Lock-free, so the handler may set it and the watchdog thread read it.
std::atomic<int> g_stop{0};
/// The hint after a stop (set once by installStopSignals, before any signal can arrive).
std::atomic<bool> g_rerunHint{false};

const char* afterStopHint() {
    return g_rerunHint.load(std::memory_order_relaxed) ? "rerun the command" : "rerun with --resume";
}
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void onStopSignal(int sig) {
    g_stop.store(sig > 0 ? sig : 1, std::memory_order_relaxed);  // which one, for the message
}

/// The watchdog: once a stop signal arrived, give the run `grace` seconds to stop at a boundary
/// (the normal path, exit 75 with everything tidy); if it has not exited by then, a call does not
/// return (e.g. a library spinning on a damaged file), so leave with 75 anyway. Checkpoints and
/// outputs are published atomically, so nothing torn is left; temporaries are swept by the next run.
void watchdog(double grace) {
    using namespace std::chrono_literals;
    while (g_stop.load(std::memory_order_relaxed) == 0) {
        std::this_thread::sleep_for(100ms);
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(grace));
    std::fprintf(
        stderr,
        "safeclip: still running %.0f s after a stop signal (a call does not return); exiting 75 now, %s\n",
        grace, afterStopHint());
    std::fflush(stderr);
    std::_Exit(static_cast<int>(ExitCode::Resume));  // no destructors: the main thread is still inside a call
}

double graceSeconds() {
    const char* env = std::getenv("SAFECLIP_STOP_GRACE_SECONDS");
    if (env == nullptr) {
        return kDefaultStopGraceSeconds;
    }
    char* end = nullptr;
    const double v = std::strtod(env, &end);
    if (end != env && *end == '\0' && v >= 0 && v < 1e6) {
        return v;
    }
    std::fprintf(stderr,
                 "safeclip: SAFECLIP_STOP_GRACE_SECONDS='%s' is not a number of seconds in [0, 1e6); using "
                 "%.0f\n",
                 env, kDefaultStopGraceSeconds);
    return kDefaultStopGraceSeconds;
}
}  // namespace

void installStopSignals(AfterStop after) {
    g_rerunHint.store(after == AfterStop::Rerun, std::memory_order_relaxed);
    static std::once_flag once;
    std::call_once(once, [] { std::thread(watchdog, graceSeconds()).detach(); });
    struct sigaction sa {};
    sa.sa_handler = onStopSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGUSR1, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
}

bool stopRequested() {
    return g_stop.load(std::memory_order_relaxed) != 0;
}

void throwIfStopRequested(const char* where) {
    if (stopRequested()) {
        const int sig = g_stop.load(std::memory_order_relaxed);
        const char* name = sig == SIGINT    ? "SIGINT"
                           : sig == SIGUSR1 ? "SIGUSR1"
                           : sig == SIGTERM ? "SIGTERM"
                                            : "a stop signal";
        throw Error(std::string("stopped by ") + name + " " + where + "; " +
                        (g_rerunHint.load(std::memory_order_relaxed) ? "nothing was written: "
                                                                     : "finished work is kept: ") +
                        afterStopHint(),
                    ExitCode::Resume);
    }
}

}  // namespace safeclip::parallel
