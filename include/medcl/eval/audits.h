#pragma once

/// \file
/// Clinical-validity audits of an embedding: subgroup metrics, external (leave-one-site-out)
/// validation, how much of the site the embedding encodes, invariance against clinically meaningful
/// change, and a 2-D PCA for metadata overlays. Results hold plain numbers and names for reports.
/// One header per audit; this one includes them all.

#include <medcl/eval/external_validation.h>
#include <medcl/eval/invariance_audit.h>
#include <medcl/eval/pca.h>
#include <medcl/eval/site_audit.h>
#include <medcl/eval/subgroup_metrics.h>
