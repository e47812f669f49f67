#pragma once

/// \file
/// The clinical evaluation of frozen embeddings, from patient-level splits to a filled report:
/// `ClinicalEvaluation` (clinical_evaluation.h), patient-level bootstrap intervals (bootstrap.h)
/// and the recorders of representation measurements and audits (recorders.h).

#include <medcl/eval/bootstrap.h>
#include <medcl/eval/clinical_evaluation.h>
#include <medcl/eval/recorders.h>
