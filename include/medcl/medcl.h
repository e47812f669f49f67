#pragma once

/// \file
/// Umbrella header: everything medcl offers, for convenience. Production code may include the
/// one-concept headers (medcl/losses/nt_xent.h, ...) to compile faster.

#include <medcl/core/runtime.h>
#include <medcl/version.h>
