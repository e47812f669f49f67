#pragma once

/// \file
/// Every encoder per modality: `MLPEncoder` (tabular, EHR, omics), `ResNet1d` (ECG, EEG),
/// `CNN2d` / `CNN3d` (images, volumes), `TextEncoder` with `HashTokenizer` (region names,
/// reports). Each is a Cloneable LibTorch module, so methods can make momentum copies of it.

#include <medcl/nn/cnn.h>
#include <medcl/nn/mlp_encoder.h>
#include <medcl/nn/resnet1d.h>
#include <medcl/nn/text_encoder.h>
