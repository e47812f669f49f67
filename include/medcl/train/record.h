#pragma once

/// \file
/// Writes what a pretraining run was into a report: method, loss and its options, pairing rule,
/// augmentation policy, encoder, optimiser and schedules, seeds, steps, final loss, loss curve.

#include <medcl/eval/report.h>
#include <medcl/methods/method.h>
#include <medcl/train/trainer.h>

#include <string>
#include <vector>

namespace medcl {
namespace train {

/// What the method and trainer cannot know about a run: the augmentation policy's description
/// (`Policy::describe()`), the encoder, and the pairing heuristic in words when the
/// method's loss has no pairing strategy (negative-free methods: "two augmented views").
struct PretrainingRecord {
  Json augmentation;
  std::string encoder;
  std::string pairing;
};

/// Fills the pretraining run `run` of the report (default: the method's name; see
/// `Report::begin_pretraining`) from `method.describe()`, `trainer.describe()` and the trainer's
/// loss history. The pairing rule is the loss's pairing strategy when it has one, else
/// `record.pairing`, else "two augmented views of each sample (instance discrimination)". Name
/// the run as the model is named in the evaluation, and the report links the two (else
/// `Report::set_model_pretraining`); a report comparing several pretrainings records each.
///
/// Example:
///   medcl::train::record_pretraining(report, method, trainer,
///       {policy.describe(), "MLP 17-128-64", ""}, "SimCLR patient (PCLR)");
inline void record_pretraining(
    Report& report,
    const MethodBase& method,
    const Trainer& trainer,
    const PretrainingRecord& record,
    const std::string& run = "") {
  report.begin_pretraining(run.empty() ? method.name() : run);
  const auto d = method.describe();
  report.set_method(method.name());
  std::string loss_name = method.name();
  Json loss = Json::object();
  if (d.contains("loss")) {
    loss = d.at("loss");
    if (loss.is_object() && loss.contains("loss") && loss.at("loss").is_string()) {
      loss_name = loss.at("loss").as_string();
    } else if (loss.is_string()) {
      loss_name = loss.as_string();
      loss = Json::object();
    }
  }
  report.set_loss(loss_name, loss);
  std::string pairing;
  // A loss without a pairing strategy describes its pairing as null.
  if (loss.is_object() && loss.contains("pairing") && loss.at("pairing").is_string()) {
    pairing = loss.at("pairing").as_string();
  } else if (!record.pairing.empty()) {
    pairing = record.pairing;
  } else {
    pairing = "two augmented views of each sample (instance discrimination)";
  }
  report.set_pairing_rule(pairing);
  if (!record.augmentation.is_null()) {
    report.set_augmentation(record.augmentation);
  }
  const auto t = trainer.describe();
  report.set_hyperparameter("method", d);
  if (!record.encoder.empty()) {
    report.set_hyperparameter("encoder", record.encoder);
  }
  for (const auto& item : t.items()) {
    if (item.first != "seed") {
      report.set_hyperparameter(item.first, item.second);
    }
  }
  if (t.at("seed").is_number()) {
    report.set_seed("trainer", t.at("seed").as_int64());
  }
  const auto& losses = trainer.losses();
  TORCH_CHECK(
      !losses.empty(),
      "record_pretraining: the trainer has not run a step; train before recording");
  report.set_training_result(static_cast<int64_t>(losses.size()), losses.back());
  std::vector<double> steps(losses.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    steps[i] = static_cast<double>(i);
  }
  // A queue of negatives (MoCo v2, SwAV) makes the loss rise while it fills: say so beside the
  // curve, so that a reader does not take it for divergence.
  std::string series = run.empty() ? method.name() : run;
  if (d.contains("queue_size") && d.at("queue_size").is_integer() &&
      d.at("queue_size").as_int64() > 0) {
    series += " (the loss rises while its queue of " +
        std::to_string(d.at("queue_size").as_int64()) + " keys fills)";
  }
  report.add_loss_curve(steps, losses, series);
}

} // namespace train
} // namespace medcl
