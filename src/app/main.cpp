// safeclip: SafeClip coadds at HPC scale. All logic lives in the app layer (Cli.cpp).
#include "safeclip/app/Cli.h"

int main(int argc, char** argv) {
    return safeclip::app::runCli(argc, argv);
}
