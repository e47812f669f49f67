#pragma once

/// \file
/// Checkpoints of a training run: module parameters and buffers, optimiser state, the step, random
/// generator states and extra tensors, written atomically, so that a resumed run reproduces the
/// losses of an uninterrupted one. Compiled in src/train/checkpoint.cpp.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

// MEDCL_VERSION_STRING: the version `save` records and `loaded_version` is compared with.
#include <medcl/version.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace torch {
namespace nn {
class Module;
} // namespace nn
namespace optim {
class Optimizer;
} // namespace optim
} // namespace torch

namespace medcl {
namespace train {

/// What `Checkpoint::peek` reads from a checkpoint file without restoring anything.
struct CheckpointInfo {
  /// The method that wrote it, e.g. "medcl.SimCLR".
  std::string kind;
  /// medcl's version that wrote it, e.g. "0.1.0".
  std::string medcl_version;
  /// The step counter saved with it.
  int64_t step = 0;
  /// The metadata text (JSON by convention).
  std::string metadata;
  /// Names of the modules, optimisers, generators and extra tensors it holds.
  std::vector<std::string> modules, optimizers, generators, tensors;
};

namespace detail {

constexpr const char* kCheckpointFormat = "medcl-checkpoint";
constexpr int64_t kCheckpointFormatVersion = 1;

// File layout: kMagic (16 bytes), the archive's size and checksum (little-endian uint64 each),
// then the LibTorch archive. LibTorch's zip reader does not verify the stored CRCs of every
// version, so damaged tensor data would load silently without this checksum.
constexpr char kMagic[16] =
    {'m', 'e', 'd', 'c', 'l', '-', 'c', 'k', 'p', 't', '\0', '\0', '\0', '\0', '\0', '\1'};
constexpr size_t kHeaderSize = sizeof(kMagic) + 16;

/// Writes `v` to out[0..8) in little-endian order.
void put_u64(char* out, uint64_t v);
/// Reads a little-endian uint64 from in[0..8).
uint64_t get_u64(const char* in);

// A fast non-cryptographic 64-bit checksum (four independent FNV-1a-style lanes over 8-byte
// words, finished by a murmur3 mix): any single changed word changes the digest.
class Checksum {
 public:
  void update(const void* data, size_t n);
  uint64_t digest() const;

 private:
  static constexpr uint64_t kPrime = 0x100000001b3ULL;
  void mix_block();
  uint64_t lanes_[4] = {
      0xcbf29ce484222325ULL,
      0x84222325cbf29ce4ULL,
      0x9ce484222325cbf2ULL,
      0x2325cbf29ce48422ULL};
  unsigned char block_[32] = {};
  size_t filled_ = 0;
  uint64_t total_ = 0;
};

// Names are stored as one text of lines: a name must be non-empty and hold no newline.
void check_name(const char* fn, const char* what, const std::string& name);

template <typename T>
void check_unique(
    const char* fn,
    const char* what,
    const std::vector<std::pair<std::string, T>>& items,
    const std::string& name) {
  check_name(fn, what, name);
  for (const auto& item : items) {
    TORCH_CHECK(item.first != name, fn, ": ", what, " '", name, "' registered twice");
  }
}

} // namespace detail

/// A description of a training state that can be saved to and loaded from a file: register the
/// live objects once, then `save(path)` or `load(path)`. It holds
/// - modules: every parameter and buffer, recursively (queues, DINO centres and momentum copies are
///   buffers or submodules, so they are included);
/// - optimisers: their per-parameter state (momentum buffers, Adam moments and step counts), via
///   the optimiser's own `save`/`load`; an optimiser must be built over the same parameters in the
///   same order when loading;
/// - the step counter, the method `kind` (e.g. "medcl.SimCLR"), medcl's version and a metadata
///   text (the run's configuration as JSON, by convention);
/// - random generator states: named `at::Generator`s (CPU or CUDA; e.g. the one a sampler or an
///   augmentation draws from) and, unless `default_generators(false)`, the default CPU generator
///   (which dropout and `torch::randn` without a generator use) and the default generator of every
///   visible CUDA device;
/// - extra named tensors.
///
/// `save` writes to a temporary file in the same directory and renames it over `path` only once it
/// is complete and flushed: a crash or a failed write leaves the previous checkpoint intact and no
/// temporary file behind. The file is a 32-byte header (magic, data size, 64-bit checksum) followed
/// by a LibTorch archive; `load` verifies size and checksum before parsing, so a truncated or
/// damaged file is an error naming it, never a silent load of damaged tensors. `load` checks the
/// format, the kind, the presence and shape of every parameter and buffer and the presence of every
/// registered optimiser and generator before it changes anything; tensors are read on the CPU and
/// copied to each parameter's device, so a checkpoint written on a GPU loads on a CPU-only machine
/// (CUDA generator states whose device is absent are then skipped); the state of LARS, SGD, Adam
/// and AdamW optimisers moves to each parameter's device (other optimisers keep theirs on the
/// CPU). The learning rate and weight decay are not restored: they come from the schedules at the
/// restored step.
///
/// Exact resumption (bit-identical losses) also needs what the checkpoint cannot hold: the same
/// code, data, thread count and device, deterministic kernels, and data order drawn from a
/// registered generator.
///
/// Example:
///   medcl::train::Checkpoint ckpt("medcl.SimCLR");
///   ckpt.module(*model).optimizer(*opt).generator("sampler", sampler_gen);
///   ckpt.step(step).metadata(config.dump()).save("run/last.ckpt");
///   // later, with freshly built objects registered the same way:
///   ckpt.load("run/last.ckpt");
///   for (int64_t step = ckpt.step(); step < total; ++step) { ... }
/// Checks, before a run starts, that a checkpoint can be written to `path`: its directory exists
/// and is writable, and `path` is not a directory. `who` starts the error message (e.g.
/// "Trainer: checkpoint_path").
void check_checkpoint_path(const std::string& path, const std::string& who);

class Checkpoint;

/// A copy of the live state a `Checkpoint` restores (its modules' parameters and buffers, its
/// optimisers' state, its generators' states), taken by `Checkpoint::snapshot`, to put back with
/// `restore` when a larger restore (a trainer's, which also restores a method's queues) fails
/// half-way. It costs one copy of each of them.
class CheckpointSnapshot {
 public:
  /// Puts every registered object back as it was when the snapshot was taken.
  void restore() const;

 private:
  friend class Checkpoint;
  struct State;
  std::shared_ptr<const State> state_;
};

class Checkpoint {
 public:
  /// `kind` names what is checkpointed (e.g. "medcl.SimCLR"); `load` refuses another kind.
  explicit Checkpoint(std::string kind);

  /// Registers `module` (held by reference: it must outlive the Checkpoint's use) as "model".
  Checkpoint& module(torch::nn::Module& module) {
    return this->module("model", module);
  }
  /// Registers `module` under `name`.
  Checkpoint& module(const std::string& name, torch::nn::Module& module);
  /// Registers `optimizer` (held by reference) as "optimizer".
  Checkpoint& optimizer(torch::optim::Optimizer& optimizer) {
    return this->optimizer("optimizer", optimizer);
  }
  /// Registers `optimizer` under `name`.
  Checkpoint& optimizer(const std::string& name, torch::optim::Optimizer& optimizer);
  /// Registers a random generator (CPU or CUDA) under `name`; the handle shares its state with
  /// the caller's, so `load` restores the caller's generator.
  Checkpoint& generator(const std::string& name, const at::Generator& generator);
  /// Whether the default CPU generator and the default generator of each visible CUDA device are
  /// saved and restored (as "default_cpu", "default_cuda0", ...). Default: true
  Checkpoint& default_generators(bool enabled) {
    default_generators_ = enabled;
    return *this;
  }
  /// Sets the step counter to save.
  Checkpoint& step(int64_t step);
  /// The step counter (the loaded one after `load`).
  int64_t step() const {
    return step_;
  }
  /// Sets the metadata text (JSON by convention) to save.
  Checkpoint& metadata(std::string text) {
    metadata_ = std::move(text);
    return *this;
  }
  /// The metadata text (the loaded one after `load`).
  const std::string& metadata() const {
    return metadata_;
  }
  /// Sets an extra tensor to save under `name` (replacing one of the same name).
  Checkpoint& tensor(const std::string& name, const at::Tensor& value);
  /// The extra tensor `name` (set, or loaded by `load`, on the CPU).
  const at::Tensor& tensor(const std::string& name) const;
  /// Whether an extra tensor `name` is set or was loaded.
  bool has_tensor(const std::string& name) const {
    return tensors_.count(name) > 0;
  }
  /// The kind given to the constructor.
  const std::string& kind() const {
    return kind_;
  }
  /// The medcl version that wrote the loaded checkpoint (empty before `load`).
  const std::string& loaded_version() const {
    return loaded_version_;
  }

  /// Writes the registered state to `path` atomically (temporary file + rename). Errors (missing
  /// or read-only directory, full disk) name the path and leave no file behind.
  void save(const std::string& path) const;

  /// Restores the registered objects from `path`, and the step, metadata and extra tensors; on
  /// any error every registered object is left as it was.
  /// Errors: a missing, corrupt or truncated file (naming it), another kind (naming both), a
  /// registered module, parameter, buffer, optimiser or generator missing from the file, a
  /// parameter or buffer of another shape (naming it), a parameter or buffer in the file that the
  /// module does not have.
  void load(const std::string& path);

  /// Reads kind, version, step, metadata and the names in `path` without restoring anything.
  static CheckpointInfo peek(const std::string& path);

  /// A copy of the registered objects' current state (see `CheckpointSnapshot`). `load` takes one
  /// itself, so that a failure while restoring leaves every registered object as it was.
  CheckpointSnapshot snapshot() const;

 private:
  // The registered generators, then (unless disabled) the default CPU and CUDA generators.
  std::vector<std::pair<std::string, at::Generator>> all_generators() const;

  std::string kind_;
  std::vector<std::pair<std::string, torch::nn::Module*>> modules_;
  std::vector<std::pair<std::string, torch::optim::Optimizer*>> optimizers_;
  std::vector<std::pair<std::string, at::Generator>> generators_;
  bool default_generators_ = true;
  int64_t step_ = 0;
  std::string metadata_ = "{}";
  std::map<std::string, at::Tensor> tensors_;
  std::string loaded_version_;
};

} // namespace train
} // namespace medcl
