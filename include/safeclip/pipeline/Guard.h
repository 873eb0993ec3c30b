#pragma once
/// @file Guard.h  The failure protocol of a patch's rank group: run a stage's rank-local work,
/// then agree. If any rank failed, every rank throws (the failing rank its own error, the others
/// an Error naming the stage, with the worst exit code of the group), so no rank is left waiting
/// in a collective (STYLE §4.3).
#include <exception>
#include <functional>
#include <string>

#include "safeclip/pipeline/PatchContext.h"

namespace safeclip::pipeline {

/// Run `fn` on this rank, then agree with the group (collective).
/// injectAtStart: apply the SAFECLIP_FAIL_AT hook for `stage` before `fn` (false when `fn` places
/// it itself). A failure deferred by an earlier stage (ctx.deferred) is rethrown inside the guard.
void guarded(PatchContext& ctx, const char* stage, const std::function<void()>& fn,
             bool injectAtStart = true);

/// A stage whose work is the group root's alone (reduce, post, write): only the root runs `fn`
/// (and the failure hook and the stop check), then the group agrees. The other ranks cannot fail
/// it, so a published output is never reported as failed by another rank.
void guardedOnRoot(PatchContext& ctx, const char* stage, const std::function<void()>& fn);

/// Run `fn` without agreeing; a failure is kept in ctx.deferred for the next guarded stage.
void deferred(PatchContext& ctx, const std::function<void()>& fn);

/// Test hook: SAFECLIP_FAIL_AT="<world rank>:<stage>" makes that rank throw at that stage.
void maybeInjectFailure(const char* stage);

}  // namespace safeclip::pipeline
