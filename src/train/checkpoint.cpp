// Checkpoint files: the format (header, checksum, LibTorch archive), atomic writes and restoring.
// Interface: include/medcl/train/checkpoint.h.

#include <medcl/train/checkpoint.h>

#include <medcl/train/optim.h>
#include <medcl/version.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#ifndef _WIN32
#include <fcntl.h>
#include <unistd.h>
#endif

namespace medcl {
namespace train {

namespace detail {

void put_u64(char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
}

uint64_t get_u64(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= static_cast<uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  }
  return v;
}

void Checksum::update(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += n;
  while (n > 0) {
    const size_t take = std::min(n, sizeof(block_) - filled_);
    std::memcpy(block_ + filled_, p, take);
    filled_ += take;
    p += take;
    n -= take;
    if (filled_ == sizeof(block_)) {
      mix_block();
    }
  }
}

uint64_t Checksum::digest() const {
  Checksum c = *this;
  std::memset(c.block_ + c.filled_, 0, sizeof(block_) - c.filled_);
  c.mix_block();
  uint64_t h = c.total_;
  for (uint64_t lane : c.lanes_) {
    h = (h ^ lane) * kPrime;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

void Checksum::mix_block() {
  for (int l = 0; l < 4; ++l) {
    lanes_[l] = (lanes_[l] ^ get_u64(reinterpret_cast<const char*>(block_) + 8 * l)) * kPrime;
  }
  filled_ = 0;
}

void check_name(const char* fn, const char* what, const std::string& name) {
  TORCH_CHECK(
      !name.empty() && name.find('\n') == std::string::npos,
      fn,
      ": ",
      what,
      " name must be non-empty and on one line, got '",
      name,
      "'");
}

} // namespace detail

namespace {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Archive keys stay plain identifiers (names are stored as text, tensors under t0, t1...): keys
// with dots or other characters are not safe in every LibTorch version's archive format.
std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) {
    s += (i ? "\n" : "") + names[i];
  }
  return s;
}

std::vector<std::string> split_names(const std::string& s, size_t count) {
  std::vector<std::string> names;
  size_t start = 0;
  for (size_t i = 0; i < count; ++i) {
    const size_t end = (i + 1 == count) ? s.size() : s.find('\n', start);
    TORCH_CHECK(end != std::string::npos, "Checkpoint: malformed name list");
    names.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return names;
}

void write_tensors(
    torch::serialize::OutputArchive& archive,
    const std::string& key,
    const NamedTensors& tensors) {
  torch::serialize::OutputArchive sub(archive.compilation_unit());
  std::vector<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    names.push_back(tensors[i].first);
    sub.write("t" + std::to_string(i), tensors[i].second.detach(), /*is_buffer=*/true);
  }
  sub.write("count", c10::IValue(static_cast<int64_t>(tensors.size())));
  sub.write("names", c10::IValue(join_names(names)));
  archive.write(key, sub);
}

NamedTensors read_tensors(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::serialize::InputArchive sub;
  archive.read(key, sub);
  c10::IValue count, names;
  sub.read("count", count);
  sub.read("names", names);
  const auto list = split_names(names.toStringRef(), static_cast<size_t>(count.toInt()));
  NamedTensors out;
  for (size_t i = 0; i < list.size(); ++i) {
    at::Tensor t;
    sub.read("t" + std::to_string(i), t, /*is_buffer=*/true);
    out.emplace_back(list[i], t);
  }
  return out;
}

at::Tensor to_device(const at::Tensor& t, const c10::Device& device) {
  return t.defined() ? t.to(device) : t;
}

// Checkpoints are read on the CPU (so that a GPU checkpoint loads anywhere); the optimiser state
// of the optimisers medcl makes (LARS, SGD, Adam, AdamW) then moves to each parameter's device.
void move_optimizer_state(torch::optim::Optimizer& optimizer) {
  using Key = typename std::decay<decltype(optimizer.state())>::type::key_type;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      auto it = optimizer.state().find(detail::optimizer_state_key<Key>(p));
      if (it == optimizer.state().end()) {
        continue;
      }
      auto* state = it->second.get();
      const c10::Device d = p.device();
      if (auto* l = dynamic_cast<LARSParamState*>(state)) {
        l->momentum_buffer(to_device(l->momentum_buffer(), d));
      } else if (auto* s = dynamic_cast<torch::optim::SGDParamState*>(state)) {
        s->momentum_buffer(to_device(s->momentum_buffer(), d));
      } else if (auto* a = dynamic_cast<torch::optim::AdamWParamState*>(state)) {
        a->exp_avg(to_device(a->exp_avg(), d));
        a->exp_avg_sq(to_device(a->exp_avg_sq(), d));
        a->max_exp_avg_sq(to_device(a->max_exp_avg_sq(), d));
      } else if (auto* b = dynamic_cast<torch::optim::AdamParamState*>(state)) {
        b->exp_avg(to_device(b->exp_avg(), d));
        b->exp_avg_sq(to_device(b->exp_avg_sq(), d));
        b->max_exp_avg_sq(to_device(b->max_exp_avg_sq(), d));
      }
    }
  }
}

std::string errno_text() {
  return std::strerror(errno);
}

// Flushes a file (or a directory entry) to the disk, so that the rename publishes complete data.
void sync_path(const std::string& path) {
#ifndef _WIN32
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
#else
  (void)path;
#endif
}

std::string temporary_path_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
#ifndef _WIN32
  const long pid = static_cast<long>(::getpid());
#else
  const long pid = 0;
#endif
  return path + ".tmp." + std::to_string(pid) + "." + std::to_string(counter++);
}

template <typename Dict>
NamedTensors named(const Dict& dict) {
  NamedTensors out;
  for (const auto& item : dict) {
    if (item.value().defined()) {
      out.emplace_back(item.key(), item.value());
    }
  }
  return out;
}

size_t index_of(const std::vector<std::string>& names, const std::string& name) {
  size_t i = 0;
  while (i < names.size() && names[i] != name) {
    ++i;
  }
  return i;
}

const at::Tensor* find_tensor(const NamedTensors& items, const std::string& name) {
  for (const auto& item : items) {
    if (item.first == name) {
      return &item.second;
    }
  }
  return nullptr;
}

template <typename Dict>
void check_tensors(
    const std::string& path,
    const std::string& module,
    const char* what,
    const Dict& live,
    const NamedTensors& saved) {
  constexpr const char* fn = "Checkpoint::load";
  for (const auto& item : live) {
    if (!item.value().defined()) {
      continue;
    }
    const at::Tensor* t = find_tensor(saved, item.key());
    TORCH_CHECK(
        t != nullptr,
        fn,
        ": '",
        path,
        "' has no ",
        what,
        " '",
        item.key(),
        "' in module '",
        module,
        "'");
    TORCH_CHECK(
        t->sizes() == item.value().sizes(),
        fn,
        ": ",
        what,
        " '",
        item.key(),
        "' of module '",
        module,
        "' has shape ",
        item.value().sizes(),
        " but ",
        t->sizes(),
        " in '",
        path,
        "'");
  }
  for (const auto& s : saved) {
    TORCH_CHECK(
        live.find(s.first) != nullptr,
        fn,
        ": '",
        path,
        "' has ",
        what,
        " '",
        s.first,
        "' that module '",
        module,
        "' does not have");
  }
}

template <typename Dict>
void copy_into(const Dict& live, const NamedTensors& saved) {
  for (const auto& item : live) {
    if (item.value().defined()) {
      at::Tensor target = item.value();
      target.copy_(*find_tensor(saved, item.key()));
    }
  }
}

std::string first_line(const std::string& s) {
  return s.substr(0, s.find('\n'));
}

void open_archive(const std::string& path, torch::serialize::InputArchive& archive) {
  constexpr const char* fn = "Checkpoint::load";
  auto in = std::make_shared<std::ifstream>(path, std::ios::binary);
  TORCH_CHECK(in->good(), fn, ": cannot open '", path, "': ", errno_text());
  in->seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(in->tellg());
  in->seekg(0);
  char header[detail::kHeaderSize] = {};
  in->read(header, detail::kHeaderSize);
  TORCH_CHECK(
      in->gcount() == static_cast<std::streamsize>(detail::kHeaderSize) &&
          std::memcmp(header, detail::kMagic, sizeof(detail::kMagic)) == 0,
      fn,
      ": '",
      path,
      "' is not a medcl checkpoint");
  const uint64_t size = detail::get_u64(header + sizeof(detail::kMagic));
  const uint64_t checksum = detail::get_u64(header + sizeof(detail::kMagic) + 8);
  TORCH_CHECK(
      file_size - detail::kHeaderSize == size,
      fn,
      ": '",
      path,
      "' is truncated or damaged: its header announces ",
      size,
      " bytes of data, the file holds ",
      file_size - detail::kHeaderSize);
  // First pass: the checksum, so that a damaged file is refused before anything is parsed.
  detail::Checksum sum;
  std::vector<char> chunk(1 << 20);
  for (uint64_t left = size; left > 0;) {
    const auto n = static_cast<std::streamsize>(std::min<uint64_t>(left, chunk.size()));
    in->read(chunk.data(), n);
    TORCH_CHECK(in->gcount() == n, fn, ": reading '", path, "' failed: ", errno_text());
    sum.update(chunk.data(), static_cast<size_t>(n));
    left -= static_cast<uint64_t>(n);
  }
  TORCH_CHECK(
      sum.digest() == checksum,
      fn,
      ": '",
      path,
      "' is corrupt: its checksum does not match its contents");
  try {
    archive.load_from(
        [in](uint64_t pos, void* buf, size_t nbytes) -> size_t {
          in->clear();
          in->seekg(static_cast<std::streamoff>(pos + detail::kHeaderSize));
          in->read(static_cast<char*>(buf), static_cast<std::streamsize>(nbytes));
          return static_cast<size_t>(in->gcount());
        },
        [size]() -> size_t { return static_cast<size_t>(size); },
        c10::Device(c10::DeviceType::CPU));
  } catch (const std::exception& e) {
    TORCH_CHECK(
        false,
        fn,
        ": '",
        path,
        "' is not a readable checkpoint (corrupt or truncated file?): ",
        first_line(e.what()));
  }
}

CheckpointInfo read_info(const std::string& path, torch::serialize::InputArchive& archive) {
  constexpr const char* fn = "Checkpoint::load";
  c10::IValue v;
  TORCH_CHECK(
      archive.try_read("format", v) && v.isString() && v.toStringRef() == detail::kCheckpointFormat,
      fn,
      ": '",
      path,
      "' is not a medcl checkpoint");
  try {
    archive.read("format_version", v);
    TORCH_CHECK(
        v.toInt() == detail::kCheckpointFormatVersion,
        "format version ",
        v.toInt(),
        " is not supported (expected ",
        detail::kCheckpointFormatVersion,
        ")");
    CheckpointInfo info;
    archive.read("kind", v);
    info.kind = v.toStringRef();
    archive.read("medcl_version", v);
    info.medcl_version = v.toStringRef();
    archive.read("step", v);
    info.step = v.toInt();
    archive.read("metadata", v);
    info.metadata = v.toStringRef();
    c10::IValue count;
    archive.read("modules", v);
    archive.read("module_count", count);
    info.modules = split_names(v.toStringRef(), static_cast<size_t>(count.toInt()));
    archive.read("optimizers", v);
    archive.read("optimizer_count", count);
    info.optimizers = split_names(v.toStringRef(), static_cast<size_t>(count.toInt()));
    for (const auto& g : read_tensors(archive, "generators")) {
      info.generators.push_back(g.first);
    }
    for (const auto& t : read_tensors(archive, "tensors")) {
      info.tensors.push_back(t.first);
    }
    return info;
  } catch (const c10::Error& e) {
    TORCH_CHECK(
        false, fn, ": '", path, "' is not a complete checkpoint: ", e.what_without_backtrace());
  }
  return {}; // not reached: TORCH_CHECK(false) throws (some compilers cannot tell)
}

void write_atomically(torch::serialize::OutputArchive& archive, const std::string& path) {
  constexpr const char* fn = "Checkpoint::save";
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  TORCH_CHECK(
      dir.empty() || fs::is_directory(dir, ec),
      fn,
      ": cannot write '",
      path,
      "': directory '",
      dir.string(),
      "' does not exist");
  const std::string tmp = temporary_path_for(path);
  std::string error;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      TORCH_CHECK(false, fn, ": cannot write '", path, "': ", errno_text());
    }
    try {
      // Header with placeholders for the size and checksum, the archive streamed after it,
      // then the header completed.
      char header[detail::kHeaderSize] = {};
      std::memcpy(header, detail::kMagic, sizeof(detail::kMagic));
      out.write(header, detail::kHeaderSize);
      detail::Checksum sum;
      uint64_t size = 0;
      archive.save_to([&](const void* data, size_t n) -> size_t {
        out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
        sum.update(data, n);
        size += n;
        return out ? n : 0;
      });
      detail::put_u64(header + sizeof(detail::kMagic), size);
      detail::put_u64(header + sizeof(detail::kMagic) + 8, sum.digest());
      out.seekp(0);
      out.write(header, detail::kHeaderSize);
      out.flush();
      if (!out) {
        error = "write failed (disk full?)";
      }
    } catch (const std::exception& e) {
      error = first_line(e.what());
    }
  }
  if (error.empty()) {
    sync_path(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      error = "cannot rename the temporary file over it: " + errno_text();
    }
  }
  if (!error.empty()) {
    std::remove(tmp.c_str());
    TORCH_CHECK(false, fn, ": cannot write '", path, "': ", error);
  }
  sync_path(dir.empty() ? std::string(".") : dir.string());
}

} // namespace

Checkpoint::Checkpoint(std::string kind) : kind_(std::move(kind)) {
  detail::check_name("Checkpoint", "kind", kind_);
}

Checkpoint& Checkpoint::module(const std::string& name, torch::nn::Module& module) {
  detail::check_unique("Checkpoint::module", "module", modules_, name);
  modules_.emplace_back(name, &module);
  return *this;
}

Checkpoint& Checkpoint::optimizer(const std::string& name, torch::optim::Optimizer& optimizer) {
  detail::check_unique("Checkpoint::optimizer", "optimizer", optimizers_, name);
  optimizers_.emplace_back(name, &optimizer);
  return *this;
}

Checkpoint& Checkpoint::generator(const std::string& name, const at::Generator& generator) {
  detail::check_unique("Checkpoint::generator", "generator", generators_, name);
  TORCH_CHECK(generator.defined(), "Checkpoint::generator: generator '", name, "' is undefined");
  TORCH_CHECK(
      name.rfind("default_", 0) != 0,
      "Checkpoint::generator: names starting with 'default_' are reserved, got '",
      name,
      "'");
  generators_.emplace_back(name, generator);
  return *this;
}

Checkpoint& Checkpoint::step(int64_t step) {
  TORCH_CHECK(step >= 0, "Checkpoint::step: step must be >= 0, got ", step);
  step_ = step;
  return *this;
}

Checkpoint& Checkpoint::tensor(const std::string& name, const at::Tensor& value) {
  detail::check_name("Checkpoint::tensor", "tensor", name);
  TORCH_CHECK(value.defined(), "Checkpoint::tensor: tensor '", name, "' is undefined");
  tensors_[name] = value;
  return *this;
}

const at::Tensor& Checkpoint::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  TORCH_CHECK(it != tensors_.end(), "Checkpoint::tensor: no tensor '", name, "'");
  return it->second;
}

void Checkpoint::save(const std::string& path) const {
  constexpr const char* fn = "Checkpoint::save";
  TORCH_CHECK(!path.empty(), fn, ": empty path");
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string(detail::kCheckpointFormat)));
  archive.write("format_version", c10::IValue(detail::kCheckpointFormatVersion));
  archive.write("kind", c10::IValue(kind_));
  archive.write("medcl_version", c10::IValue(std::string(MEDCL_VERSION_STRING)));
  archive.write("step", c10::IValue(step_));
  archive.write("metadata", c10::IValue(metadata_));

  std::vector<std::string> module_names;
  for (size_t i = 0; i < modules_.size(); ++i) {
    module_names.push_back(modules_[i].first);
    torch::serialize::OutputArchive sub(archive.compilation_unit());
    write_tensors(sub, "parameters", named(modules_[i].second->named_parameters(true)));
    write_tensors(sub, "buffers", named(modules_[i].second->named_buffers(true)));
    archive.write("m" + std::to_string(i), sub);
  }
  archive.write("modules", c10::IValue(join_names(module_names)));
  archive.write("module_count", c10::IValue(static_cast<int64_t>(modules_.size())));

  std::vector<std::string> optimizer_names;
  for (size_t i = 0; i < optimizers_.size(); ++i) {
    optimizer_names.push_back(optimizers_[i].first);
    torch::serialize::OutputArchive sub(archive.compilation_unit());
    optimizers_[i].second->save(sub);
    archive.write("o" + std::to_string(i), sub);
  }
  archive.write("optimizers", c10::IValue(join_names(optimizer_names)));
  archive.write("optimizer_count", c10::IValue(static_cast<int64_t>(optimizers_.size())));

  NamedTensors states;
  for (const auto& g : all_generators()) {
    at::Generator gen = g.second;
    std::lock_guard<std::mutex> lock(gen.mutex());
    states.emplace_back(g.first, gen.get_state());
  }
  write_tensors(archive, "generators", states);
  NamedTensors extra(tensors_.begin(), tensors_.end());
  write_tensors(archive, "tensors", extra);

  write_atomically(archive, path);
}

void Checkpoint::load(const std::string& path) {
  constexpr const char* fn = "Checkpoint::load";
  torch::serialize::InputArchive archive;
  open_archive(path, archive);
  CheckpointInfo info = read_info(path, archive);
  TORCH_CHECK(
      info.kind == kind_,
      fn,
      ": '",
      path,
      "' is a checkpoint of kind '",
      info.kind,
      "', expected kind '",
      kind_,
      "'");
  try {
    // Read and check everything first, so that a mismatch changes nothing.
    std::vector<NamedTensors> params(modules_.size());
    std::vector<NamedTensors> buffers(modules_.size());
    for (size_t i = 0; i < modules_.size(); ++i) {
      const auto& name = modules_[i].first;
      const size_t at = index_of(info.modules, name);
      TORCH_CHECK(at < info.modules.size(), fn, ": '", path, "' has no module '", name, "'");
      torch::serialize::InputArchive sub;
      archive.read("m" + std::to_string(at), sub);
      params[i] = read_tensors(sub, "parameters");
      buffers[i] = read_tensors(sub, "buffers");
      check_tensors(path, name, "parameter", modules_[i].second->named_parameters(true), params[i]);
      check_tensors(path, name, "buffer", modules_[i].second->named_buffers(true), buffers[i]);
    }
    std::vector<size_t> optimizer_at;
    for (const auto& o : optimizers_) {
      optimizer_at.push_back(index_of(info.optimizers, o.first));
      TORCH_CHECK(
          optimizer_at.back() < info.optimizers.size(),
          fn,
          ": '",
          path,
          "' has no optimizer '",
          o.first,
          "'");
    }
    auto states = read_tensors(archive, "generators");
    for (const auto& g : generators_) {
      TORCH_CHECK(
          find_tensor(states, g.first) != nullptr,
          fn,
          ": '",
          path,
          "' has no generator '",
          g.first,
          "'");
    }
    auto extra = read_tensors(archive, "tensors");

    // Everything is read and checked; what follows changes the registered objects. An optimiser
    // that refuses its state (built over other parameters) is only found out here: put back
    // whatever changed before it.
    const CheckpointSnapshot before = snapshot();
    try {
      for (size_t i = 0; i < optimizers_.size(); ++i) {
        torch::serialize::InputArchive sub;
        archive.read("o" + std::to_string(optimizer_at[i]), sub);
        try {
          optimizers_[i].second->load(sub);
          move_optimizer_state(*optimizers_[i].second);
        } catch (const c10::Error& e) {
          TORCH_CHECK(
              false,
              fn,
              ": cannot restore optimizer '",
              optimizers_[i].first,
              "' from '",
              path,
              "' (is it built over the same parameters in the same order?): ",
              e.what_without_backtrace());
        }
      }
      {
        c10::NoGradGuard no_grad;
        for (size_t i = 0; i < modules_.size(); ++i) {
          copy_into(modules_[i].second->named_parameters(true), params[i]);
          copy_into(modules_[i].second->named_buffers(true), buffers[i]);
        }
      }
      for (const auto& g : all_generators()) {
        const at::Tensor* state = find_tensor(states, g.first);
        if (state == nullptr) {
          continue; // a default generator that was not saved (e.g. no CUDA when saving)
        }
        at::Generator gen = g.second;
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(*state);
      }
    } catch (...) {
      before.restore();
      throw;
    }
    tensors_.clear();
    for (auto& t : extra) {
      tensors_[t.first] = t.second;
    }
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    if (msg.find(path) != std::string::npos) {
      throw;
    }
    TORCH_CHECK(false, fn, ": '", path, "' is not a complete checkpoint: ", msg);
  }
  step_ = info.step;
  metadata_ = info.metadata;
  loaded_version_ = info.medcl_version;
}

void check_checkpoint_path(const std::string& path, const std::string& who) {
  namespace fs = std::filesystem;
  TORCH_CHECK(!path.empty(), who, ": the path is empty");
  std::error_code ec;
  TORCH_CHECK(
      !fs::is_directory(path, ec), who, " '", path, "' is a directory; name the file to write");
  const fs::path parent = fs::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  TORCH_CHECK(
      fs::is_directory(dir, ec),
      who,
      " '",
      path,
      "': the directory '",
      dir,
      "' does not exist (create it before the run; checkpoints are written there)");
#ifndef _WIN32
  TORCH_CHECK(
      ::access(dir.c_str(), W_OK | X_OK) == 0,
      who,
      " '",
      path,
      "': the directory '",
      dir,
      "' is not writable: ",
      std::strerror(errno));
#endif
}

struct CheckpointSnapshot::State {
  std::vector<std::pair<torch::nn::Module*, std::vector<at::Tensor>>> modules;
  std::vector<std::pair<torch::optim::Optimizer*, std::string>> optimizers;
  std::vector<std::pair<at::Generator, at::Tensor>> generators;
};

CheckpointSnapshot Checkpoint::snapshot() const {
  auto st = std::make_shared<CheckpointSnapshot::State>();
  for (const auto& m : modules_) {
    std::vector<at::Tensor> copies;
    for (const auto& p : m.second->parameters(true)) {
      copies.push_back(p.detach().clone());
    }
    for (const auto& b : m.second->buffers(true)) {
      copies.push_back(b.detach().clone());
    }
    st->modules.emplace_back(m.second, std::move(copies));
  }
  for (const auto& o : optimizers_) {
    torch::serialize::OutputArchive archive;
    o.second->save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    st->optimizers.emplace_back(o.second, bytes.str());
  }
  for (const auto& g : all_generators()) {
    at::Generator gen = g.second;
    std::lock_guard<std::mutex> lock(gen.mutex());
    st->generators.emplace_back(gen, gen.get_state());
  }
  CheckpointSnapshot out;
  out.state_ = std::move(st);
  return out;
}

void CheckpointSnapshot::restore() const {
  if (!state_) {
    return;
  }
  {
    c10::NoGradGuard no_grad;
    for (const auto& m : state_->modules) {
      size_t i = 0;
      for (auto& p : m.first->parameters(true)) {
        p.copy_(m.second.at(i++));
      }
      for (auto& b : m.first->buffers(true)) {
        b.copy_(m.second.at(i++));
      }
    }
  }
  for (const auto& o : state_->optimizers) {
    torch::serialize::InputArchive archive;
    std::istringstream bytes(o.second);
    archive.load_from(bytes);
    o.first->load(archive);
  }
  for (const auto& g : state_->generators) {
    at::Generator gen = g.first;
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(g.second);
  }
}

CheckpointInfo Checkpoint::peek(const std::string& path) {
  torch::serialize::InputArchive archive;
  open_archive(path, archive);
  return read_info(path, archive);
}

std::vector<std::pair<std::string, at::Generator>> Checkpoint::all_generators() const {
  auto all = generators_;
  if (default_generators_) {
    all.emplace_back("default_cpu", at::detail::getDefaultCPUGenerator());
    if (torch::cuda::is_available()) {
      const auto n = static_cast<int64_t>(torch::cuda::device_count());
      for (int64_t d = 0; d < n; ++d) {
        all.emplace_back(
            "default_cuda" + std::to_string(d),
            at::globalContext().defaultGenerator(
                c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(d))));
      }
    }
  }
  return all;
}

} // namespace train
} // namespace medcl
