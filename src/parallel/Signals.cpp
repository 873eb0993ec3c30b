#include "safeclip/parallel/Signals.h"

#include <csignal>
#include <string>

#include "safeclip/kernel/Error.h"

namespace safeclip::parallel {

namespace {
volatile std::sig_atomic_t g_stop = 0;
extern "C" void onStopSignal(int /*sig*/) {
    g_stop = 1;
}
}  // namespace

void installStopSignals() {
    struct sigaction sa {};
    sa.sa_handler = onStopSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGUSR1, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
}

bool stopRequested() {
    return g_stop != 0;
}

void throwIfStopRequested(const char* where) {
    if (stopRequested()) {
        throw Error(std::string("stopped by a signal (SIGTERM/SIGUSR1) ") + where +
                        "; finished work is kept: rerun with --resume",
                    ExitCode::Resume);
    }
}

}  // namespace safeclip::parallel
