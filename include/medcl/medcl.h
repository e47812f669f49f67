#pragma once

/// \file
/// Umbrella header: everything medcl offers, for convenience. Production code may include the
/// one-concept headers (medcl/losses/nt_xent.h, ...) to compile faster.

#include <medcl/augment/image.h>
#include <medcl/augment/policy.h>
#include <medcl/augment/probe.h>
#include <medcl/augment/signal.h>
#include <medcl/augment/tabular.h>
#include <medcl/augment/text.h>
#include <medcl/core/negative_weighting.h>
#include <medcl/core/runtime.h>
#include <medcl/core/similarity_engine.h>
#include <medcl/data/samplers.h>
#include <medcl/data/splits.h>
#include <medcl/eval/knn.h>
#include <medcl/eval/metrics.h>
#include <medcl/losses/clip.h>
#include <medcl/losses/dino.h>
#include <medcl/losses/info_nce.h>
#include <medcl/losses/negative_free.h>
#include <medcl/losses/nt_xent.h>
#include <medcl/losses/supcon.h>
#include <medcl/losses/swav.h>
#include <medcl/memory/memory_queue.h>
#include <medcl/nn/momentum.h>
#include <medcl/pairing/pair_rule.h>
#include <medcl/pairing/sample_keys.h>
#include <medcl/pairing/strategy.h>
#include <medcl/version.h>
