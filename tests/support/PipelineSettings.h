#pragma once
// Pipeline settings with the defaults of configs/default.toml, for tests of the pipeline layer (which
// cannot see app::makePatchSettings).
#include <string>

#include "safeclip/pipeline/Settings.h"

namespace safeclip::test {

inline pipeline::PatchSettings defaultPatchSettings(const std::string& mode = "safeclip",
                                                    double psfSigma = 0) {
    pipeline::PatchSettings s;
    s.mode = mode;
    s.memoryBudget = 64LL << 20;
    s.zeroPoint = 27.0;
    s.sigmaClip = 1.5;
    s.clipIter = 3;
    s.badMaskPlanes = {"NO_DATA", "BAD", "SAT", "EDGE"};
    s.removeMaskPlanes = {"NOT_DEBLENDED"};
    s.detect.psfSigma = psfSigma;  // 0: from the warps' PSFSIGMA cards
    s.scienceConfig = {"test = 1"};
    s.scienceConfigHash = "0123456789abcdef";
    return s;
}

}  // namespace safeclip::test
