// medcl::dist on c10d: stores, the Gloo process group, the metadata exchange that runs before
// every collective, and the launch environment. The only translation unit that includes c10d's
// headers (they need Gloo's headers and USE_C10D_GLOO, which medcl's CMake provides).

#include <medcl/dist/process_group.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <type_traits>
#include <utility>

#if MEDCL_HAVE_DIST
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#endif
#if MEDCL_HAVE_NCCL
#include <ATen/Context.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace medcl {
namespace dist {

#if MEDCL_HAVE_DIST
namespace {

// The differences between LibTorch versions, in one place.
//
// LibTorch 2.x: ProcessGroupGloo derives from c10d::Backend (the ProcessGroup of 2.x dispatches
// to backends); 1.13: from c10d::ProcessGroup. Both declare the same collectives, which is all
// medcl calls.
#if TORCH_VERSION_MAJOR >= 2
using GlooBase = c10d::Backend;
#else
using GlooBase = c10d::ProcessGroup;
#endif

// TCPStoreOptions::useLibUV exists from LibTorch 2.2 on and defaults to true from 2.4; a LibTorch
// built without libuv (Debian 13's 2.6) then fails to start the store. The classic backend is in
// every version, so it is asked for wherever the option exists (detected by the member itself
// rather than a version table).
template <typename T, typename = void>
struct HasUseLibUV : std::false_type {};
template <typename T>
struct HasUseLibUV<T, std::void_t<decltype(std::declval<T&>().useLibUV)>> : std::true_type {};

template <typename T>
void use_classic_tcp_backend(T& options) {
  if constexpr (HasUseLibUV<T>::value) {
    options.useLibUV = false;
  }
}

} // namespace
#endif

namespace detail {

struct StoreImpl {
#if MEDCL_HAVE_DIST
  c10::intrusive_ptr<c10d::Store> store;
#endif
  std::string description;
  int port = -1;
  std::chrono::milliseconds timeout{kDefaultTimeout};
  // Groups made from this store so far: each gets its own key prefix.
  std::shared_ptr<std::atomic<int64_t>> groups = std::make_shared<std::atomic<int64_t>>(0);
};

struct ProcessGroupImpl {
  int64_t rank = 0;
  int64_t size = 1;
  ProcessGroupOptions options;
  std::string store_description;
#if MEDCL_HAVE_DIST
  c10::intrusive_ptr<GlooBase> backend;
  // CUDA tensors' backend when it is NCCL (null: Gloo moves them too).
  c10::intrusive_ptr<GlooBase> nccl;
  // The group's own keys in the store (side groups are made under it).
  c10::intrusive_ptr<c10d::Store> store;
#endif
  // side_group's group, made at its first call.
  std::mutex side_mutex;
  std::shared_ptr<ProcessGroupImpl> side;
  // The losses' gather capacities (gather_capacity), by call site.
  mutable std::mutex capacity_mutex;
  mutable std::map<std::string, GatherCapacity> capacities;

  static const ProcessGroupImpl* of(const ProcessGroup& group) {
    return group.impl_.get();
  }
};

} // namespace detail

namespace {

constexpr const char* kBuiltWithout =
    "medcl was built without medcl::dist (LibTorch's c10d with Gloo was not found at configure "
    "time: on Debian/Ubuntu install libgloo-dev and configure again, or see the MEDCL_DIST "
    "message of CMake)";

// The message of an exception without LibTorch's backtrace.
std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}

std::string shape_text(const std::vector<int64_t>& sizes, bool first_as_star) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < sizes.size(); ++i) {
    out << (i ? ", " : "");
    if (i == 0 && first_as_star) {
      out << '*';
    } else {
      out << sizes[i];
    }
  }
  out << ']';
  return out.str();
}

std::string dtype_text(int64_t code) {
  if (code < 0 || code >= static_cast<int64_t>(at::ScalarType::NumOptions)) {
    return "dtype #" + std::to_string(code);
  }
  return c10::toString(static_cast<at::ScalarType>(code));
}

constexpr int64_t kMaxDims = 16;

// A tensor's dtype and shape as metadata fields: dtype, dim, sizes (at most kMaxDims).
std::vector<int64_t> tensor_fields(const at::Tensor& t) {
  std::vector<int64_t> fields{static_cast<int64_t>(t.scalar_type()), t.dim()};
  for (int64_t d = 0; d < std::min<int64_t>(t.dim(), kMaxDims); ++d) {
    fields.push_back(t.size(d));
  }
  return fields;
}

std::vector<int64_t> sizes_of(const std::vector<int64_t>& fields) {
  return std::vector<int64_t>(fields.begin() + 2, fields.end());
}

// Requires every rank's fields (from tensor_fields) to agree on dtype and on the shape, all of it
// or all but the first dimension.
void check_same_tensors(
    const char* fn,
    const std::vector<std::vector<int64_t>>& all,
    bool except_first) {
  const auto& ref = all[0];
  for (size_t r = 1; r < all.size(); ++r) {
    TORCH_CHECK(
        all[r][0] == ref[0],
        fn,
        ": ranks disagree on the dtype: rank 0 has ",
        dtype_text(ref[0]),
        ", rank ",
        r,
        " has ",
        dtype_text(all[r][0]),
        " (every rank must pass the same dtype)");
  }
  for (size_t r = 1; r < all.size(); ++r) {
    bool same = all[r][1] == ref[1] && all[r].size() == ref.size();
    for (size_t i = except_first ? 3 : 2; same && i < ref.size(); ++i) {
      same = all[r][i] == ref[i];
    }
    TORCH_CHECK(
        same,
        fn,
        ": ranks disagree on the ",
        except_first ? "shape beyond the first dimension" : "shape",
        ": rank 0 has ",
        shape_text(sizes_of(ref), except_first),
        ", rank ",
        r,
        " has ",
        shape_text(sizes_of(all[r]), except_first),
        except_first ? " (only the number of rows may differ between ranks)"
                     : " (every rank must pass the same shape)");
  }
}

std::string local_tensor_error(const char* fn, const at::Tensor& t, bool need_rows) {
  std::ostringstream out;
  if (!t.defined()) {
    out << fn << ": the tensor is undefined";
  } else if (need_rows && t.dim() < 1) {
    out << fn << ": expected a tensor with at least one dimension (rows), got a 0-dim tensor";
  } else if (t.dim() > kMaxDims) {
    out << fn << ": tensors of more than " << kMaxDims << " dimensions are not supported, got "
        << t.sizes();
  } else if (t.is_sparse()) {
    out << fn << ": sparse tensors are not supported";
  }
  return out.str();
}

#if MEDCL_HAVE_DIST
const detail::ProcessGroupImpl& impl_of(const ProcessGroup& group) {
  const auto* impl = detail::ProcessGroupImpl::of(group);
  TORCH_INTERNAL_ASSERT(impl != nullptr && impl->backend, "a one-process group has no backend");
  return *impl;
}

// The backend that moves `t`: NCCL for CUDA tensors where the group has it, else Gloo.
GlooBase& payload_backend(const detail::ProcessGroupImpl& g, const at::Tensor& t) {
  return t.is_cuda() && g.nccl ? *g.nccl : *g.backend;
}

const char* payload_backend_name(const detail::ProcessGroupImpl& g, const at::Tensor& t) {
  return t.is_cuda() && g.nccl ? "nccl" : "gloo";
}

// ProcessGroupOptions::poll where the collective runs on Gloo; NCCL's waits do not block the host.
std::chrono::microseconds poll_of(const detail::ProcessGroupImpl& g, const std::string& backend) {
  return backend == "gloo" ? g.options.poll() : std::chrono::microseconds(0);
}

// Waits for `work`: first checks for its completion for up to `poll` (yielding the CPU between
// checks), then sleeps until it completes; `bound` only guards against a wait that Gloo would not
// end (Gloo itself gives up after the group's timeout).
void wait_for(c10d::Work& work, std::chrono::microseconds poll, std::chrono::milliseconds bound) {
  if (poll.count() > 0) {
    const auto until = std::chrono::steady_clock::now() + poll;
    while (!work.isCompleted() && std::chrono::steady_clock::now() < until) {
      std::this_thread::yield();
    }
  }
  work.wait(bound);
}

// Waits for one c10d operation; a failure (a rank gone, a timeout) becomes an error naming the
// operation, this rank and the timeout.
void run(
    const detail::ProcessGroupImpl& g,
    const char* fn,
    const char* what,
    const std::function<c10::intrusive_ptr<c10d::Work>()>& start,
    const char* backend_name = "gloo") {
  const auto timeout = g.options.timeout();
  std::string failure;
  try {
    auto work = start();
    wait_for(*work, poll_of(g, backend_name), timeout * 2 + std::chrono::seconds(10));
    return;
  } catch (const std::exception& e) {
    failure = message_of(e);
  }
  TORCH_CHECK(
      false,
      fn,
      ": ",
      what,
      " failed on rank ",
      g.rank,
      " of ",
      g.size,
      " (",
      backend_name,
      ", timeout ",
      timeout.count(),
      " ms): another rank exited, stalled beyond the timeout or called a different collective. "
      "c10d said: ",
      failure);
}
#endif

} // namespace

bool available() {
#if MEDCL_HAVE_DIST
  return true;
#else
  return false;
#endif
}

bool nccl_available() {
#if MEDCL_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

// ---- Store ----------------------------------------------------------------------------------

#if MEDCL_HAVE_DIST
namespace {
void check_timeout(const char* fn, std::chrono::milliseconds timeout) {
  TORCH_CHECK(
      timeout.count() > 0, fn, ": the timeout must be positive, got ", timeout.count(), " ms");
}
} // namespace
#endif

Store Store::file(const std::string& path, int64_t world_size, std::chrono::milliseconds timeout) {
#if MEDCL_HAVE_DIST
  const char* fn = "medcl::dist::Store::file";
  TORCH_CHECK(!path.empty(), fn, ": the path is empty");
  TORCH_CHECK(world_size >= 1, fn, ": world_size must be at least 1, got ", world_size);
  check_timeout(fn, timeout);
  Store s;
  s.impl_ = std::make_shared<detail::StoreImpl>();
  try {
    s.impl_->store = c10::make_intrusive<c10d::FileStore>(path, static_cast<int>(world_size));
  } catch (const std::exception& e) {
    TORCH_CHECK(false, fn, ": could not open the FileStore at '", path, "': ", message_of(e));
  }
  s.impl_->store->setTimeout(timeout);
  s.impl_->timeout = timeout;
  s.impl_->description = "FileStore at " + path;
  return s;
#else
  (void)path;
  (void)world_size;
  (void)timeout;
  TORCH_CHECK(false, "medcl::dist::Store::file: ", kBuiltWithout);
#endif
}

Store Store::tcp(
    const std::string& host,
    int port,
    bool is_server,
    int64_t world_size,
    std::chrono::milliseconds timeout) {
#if MEDCL_HAVE_DIST
  const char* fn = "medcl::dist::Store::tcp";
  TORCH_CHECK(!host.empty(), fn, ": the host is empty");
  TORCH_CHECK(
      port >= 0 && port <= 65535 && (port > 0 || is_server),
      fn,
      ": the port must be in [1, 65535] (0 only for the process that hosts the store), got ",
      port);
  check_timeout(fn, timeout);
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<std::uint16_t>(port);
  opts.isServer = is_server;
  // As PyTorch does: every process that knows the world size counts itself in, and the host
  // waits until all have (LibTorch 1.13's host stops waiting silently at the timeout; the group's
  // rendezvous then names the failure).
  if (world_size > 0) {
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = true;
  } else {
    opts.waitWorkers = false;
  }
  opts.timeout = timeout;
  use_classic_tcp_backend(opts);
  Store s;
  s.impl_ = std::make_shared<detail::StoreImpl>();
  const std::string address = host + ":" + std::to_string(port);
  c10::intrusive_ptr<c10d::TCPStore> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(host, opts);
  } catch (const std::exception& e) {
    if (is_server) {
      TORCH_CHECK(
          false,
          fn,
          ": could not host the TCPStore at ",
          address,
          world_size > 0 ? " or not all " + std::to_string(world_size) + " ranks joined it" : "",
          " within ",
          timeout.count(),
          " ms: ",
          message_of(e));
    }
    TORCH_CHECK(
        false,
        fn,
        ": could not reach the TCPStore at ",
        address,
        " within ",
        timeout.count(),
        " ms (is the process that hosts it, rank 0 or torchrun's agent, running, and are the "
        "address and port right?): ",
        message_of(e));
  }
  tcp->setTimeout(timeout);
  s.impl_->port = tcp->getPort();
  s.impl_->store = tcp;
  s.impl_->timeout = timeout;
  s.impl_->description = "TCPStore at " + host + ":" + std::to_string(s.impl_->port) +
      (is_server ? " (hosted here)" : "");
  return s;
#else
  (void)host;
  (void)port;
  (void)is_server;
  (void)world_size;
  (void)timeout;
  TORCH_CHECK(false, "medcl::dist::Store::tcp: ", kBuiltWithout);
#endif
}

Store Store::with_prefix(const std::string& prefix) const {
  TORCH_CHECK(impl_, "medcl::dist::Store::with_prefix: the store is undefined");
  Store s;
  s.impl_ = std::make_shared<detail::StoreImpl>(*impl_);
  s.impl_->groups = std::make_shared<std::atomic<int64_t>>(0);
#if MEDCL_HAVE_DIST
  s.impl_->store = c10::make_intrusive<c10d::PrefixStore>(prefix, impl_->store);
#endif
  s.impl_->description = impl_->description + ", prefix '" + prefix + "'";
  return s;
}

void Store::set(const std::string& key, const std::string& value) const {
  TORCH_CHECK(impl_, "medcl::dist::Store::set: the store is undefined");
#if MEDCL_HAVE_DIST
  try {
    impl_->store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
  } catch (const std::exception& e) {
    TORCH_CHECK(
        false,
        "medcl::dist::Store::set: setting '",
        key,
        "' in the ",
        impl_->description,
        " failed: ",
        message_of(e));
  }
#else
  (void)key;
  (void)value;
#endif
}

std::string Store::get(const std::string& key) const {
  TORCH_CHECK(impl_, "medcl::dist::Store::get: the store is undefined");
#if MEDCL_HAVE_DIST
  std::vector<uint8_t> value;
  try {
    value = impl_->store->get(key);
  } catch (const std::exception& e) {
    TORCH_CHECK(
        false,
        "medcl::dist::Store::get: '",
        key,
        "' did not appear in the ",
        impl_->description,
        " within ",
        impl_->timeout.count(),
        " ms: ",
        message_of(e));
  }
  return std::string(value.begin(), value.end());
#else
  (void)key;
  return {};
#endif
}

int Store::port() const {
  return impl_ ? impl_->port : -1;
}

std::string Store::describe() const {
  return impl_ ? impl_->description : "no store";
}

// ---- ProcessGroup ---------------------------------------------------------------------------

int64_t ProcessGroup::rank() const {
  return impl_ ? impl_->rank : 0;
}

int64_t ProcessGroup::size() const {
  return impl_ ? impl_->size : 1;
}

std::string ProcessGroup::backend() const {
#if MEDCL_HAVE_DIST
  if (impl_ && impl_->nccl) {
    return "gloo+nccl";
  }
#endif
  return impl_ ? "gloo" : "none";
}

ProcessGroupOptions ProcessGroup::options() const {
  return impl_ ? impl_->options : ProcessGroupOptions();
}

std::string ProcessGroup::describe() const {
  if (!impl_) {
    return "one process (no group)";
  }
  return "gloo rank " + std::to_string(impl_->rank) + " of " + std::to_string(impl_->size) + " (" +
      impl_->store_description + ")";
}

#if MEDCL_HAVE_DIST
namespace {

// The Gloo (and NCCL) process groups of `rank` of `world_size` meeting under `prefixed`.
std::shared_ptr<detail::ProcessGroupImpl> connect(
    const char* fn,
    const c10::intrusive_ptr<c10d::Store>& prefixed,
    int64_t rank,
    int64_t world_size,
    const ProcessGroupOptions& options,
    const std::string& store_description) {
  auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout());
  // One Gloo worker thread: medcl waits for every collective as soon as it starts it.
  gloo_options->threads = 1;
  try {
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (!options.hostname().empty()) {
      gloo_options->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(options.hostname()));
    } else if (ifname != nullptr && *ifname != '\0') {
      std::stringstream names(ifname);
      std::string name;
      while (std::getline(names, name, ',')) {
        if (!name.empty()) {
          gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
        }
      }
    }
    if (gloo_options->devices.empty()) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
  } catch (const std::exception& e) {
    TORCH_CHECK(
        false,
        fn,
        ": could not create Gloo's network device (hostname '",
        options.hostname(),
        "', GLOO_SOCKET_IFNAME '",
        std::getenv("GLOO_SOCKET_IFNAME") ? std::getenv("GLOO_SOCKET_IFNAME") : "",
        "'): ",
        message_of(e));
  }

  auto impl = std::make_shared<detail::ProcessGroupImpl>();
  impl->rank = rank;
  impl->size = world_size;
  impl->options = options;
  impl->store_description = store_description;
  impl->store = prefixed;
  try {
    impl->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(
        prefixed, static_cast<int>(rank), static_cast<int>(world_size), gloo_options);
  } catch (const std::exception& e) {
    TORCH_CHECK(
        false,
        fn,
        ": rank ",
        rank,
        " of ",
        world_size,
        " could not connect to the other ranks through the ",
        store_description,
        " within ",
        options.timeout().count(),
        " ms (did every rank start, with the same world size and store?): ",
        message_of(e));
  }
  // CUDA tensors through NCCL (communicators are made at the first collective on a device).
  bool want_nccl = options.cuda_backend() == CudaBackend::NCCL;
#if MEDCL_HAVE_NCCL
  want_nccl = want_nccl || (options.cuda_backend() == CudaBackend::Auto && at::hasCUDA());
  if (want_nccl) {
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = options.timeout();
    auto nccl_store = c10::make_intrusive<c10d::PrefixStore>("nccl", prefixed);
    try {
      impl->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          nccl_store, static_cast<int>(rank), static_cast<int>(world_size), nccl_options);
    } catch (const std::exception& e) {
      TORCH_CHECK(
          false, fn, ": rank ", rank, " could not create the NCCL process group: ", message_of(e));
    }
  }
#else
  TORCH_CHECK(
      !want_nccl,
      fn,
      ": CudaBackend::NCCL was asked for, but medcl was built without c10d's NCCL backend (it "
      "needs "
      "a LibTorch with CUDA and NCCL, and nccl.h at configure time: Debian's libnccl-dev); use "
      "CudaBackend::Auto or Gloo");
#endif
  return impl;
}

} // namespace
#endif

ProcessGroup
new_group(const Store& store, int64_t rank, int64_t world_size, ProcessGroupOptions options) {
  const char* fn = "medcl::dist::new_group";
#if MEDCL_HAVE_DIST
  TORCH_CHECK(store.defined(), fn, ": the store is undefined");
  TORCH_CHECK(
      world_size >= 1 && world_size <= (1 << 24),
      fn,
      ": world_size must be in [1, 2^24], got ",
      world_size);
  TORCH_CHECK(
      rank >= 0 && rank < world_size,
      fn,
      ": rank must be in [0, world_size) = [0, ",
      world_size,
      "), got ",
      rank);
  check_timeout(fn, options.timeout());
  TORCH_CHECK(
      options.poll().count() >= 0 && options.poll() < options.timeout(),
      fn,
      ": ProcessGroupOptions::poll must be in [0, the timeout), got ",
      options.poll().count(),
      " us");

  // Every group made from one store gets its own keys (ranks make groups in the same order).
  const int64_t index = store.impl_->groups->fetch_add(1);
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(
      "medcl/group_" + std::to_string(index), store.impl_->store);
  prefixed->setTimeout(options.timeout());

  auto impl = connect(fn, prefixed, rank, world_size, options, store.describe());
  ProcessGroup group;
  group.impl_ = std::move(impl);
  return group;
#else
  (void)store;
  (void)rank;
  (void)world_size;
  (void)options;
  TORCH_CHECK(false, fn, ": ", kBuiltWithout);
#endif
}

// ---- Collectives ----------------------------------------------------------------------------

namespace detail {

const char* collective_name(Collective op) {
  switch (op) {
    case Collective::Barrier:
      return "barrier";
    case Collective::Broadcast:
      return "broadcast";
    case Collective::AllReduce:
      return "all_reduce";
    case Collective::AllGather:
      return "all_gather";
    case Collective::GatherWithGradient:
      return "gather_with_gradient";
    case Collective::GatherWithGradientBackward:
      return "gather_with_gradient's backward";
    case Collective::GatherKeys:
      return "gather_keys";
    case Collective::LossInputs:
      return "the loss's check of its inputs";
  }
  return "an unknown collective";
}

namespace {
std::string collective_name_of(int64_t code) {
  if (code >= static_cast<int64_t>(Collective::Barrier) &&
      code <= static_cast<int64_t>(Collective::LossInputs)) {
    return collective_name(static_cast<Collective>(code));
  }
  return "an unknown collective (#" + std::to_string(code) + ")";
}

// Layout of one rank's metadata: a marker, the error flag, the operation, the number of fields,
// the fields, zeros.
constexpr int64_t kMarker = 0x6d6564636c; // "medcl"
constexpr int64_t kHeader = 4;
constexpr int64_t kMetadataLength = kHeader + kMaxMetadataFields;
} // namespace

std::vector<std::vector<int64_t>> exchange_metadata(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    const std::vector<int64_t>& fields,
    const std::string& local_error) {
  return exchange_metadata(group, fn, op, fields, local_error, at::Tensor(), 0, nullptr);
}

std::vector<std::vector<int64_t>> exchange_metadata(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    const std::vector<int64_t>& fields,
    const std::string& local_error,
    const at::Tensor& payload,
    int64_t payload_bytes,
    std::vector<at::Tensor>* gathered) {
  TORCH_INTERNAL_ASSERT(static_cast<int64_t>(fields.size()) <= kMaxMetadataFields);
  const int64_t own_bytes = payload.defined() ? static_cast<int64_t>(payload.nbytes()) : 0;
  TORCH_INTERNAL_ASSERT(
      payload_bytes >= own_bytes &&
      (!payload.defined() || (payload.is_contiguous() && payload.device().is_cpu())));
  TORCH_INTERNAL_ASSERT(group.size() > 1 || gathered == nullptr);
  if (group.size() == 1) {
    TORCH_CHECK(local_error.empty(), local_error);
    return {fields};
  }
#if MEDCL_HAVE_DIST
  const auto& g = impl_of(group);
  // One byte buffer: the metadata (int64), then the payload.
  constexpr int64_t kMetadataBytes = kMetadataLength * static_cast<int64_t>(sizeof(int64_t));
  auto mine = at::empty({kMetadataBytes + payload_bytes}, at::kByte);
  int64_t m[kMetadataLength] = {};
  m[0] = kMarker;
  m[1] = local_error.empty() ? 0 : 1;
  m[2] = static_cast<int64_t>(op);
  m[3] = static_cast<int64_t>(fields.size());
  std::copy(fields.begin(), fields.end(), m + kHeader);
  std::memcpy(mine.data_ptr(), m, sizeof(m));
  if (own_bytes > 0) {
    std::memcpy(mine.data_ptr<uint8_t>() + kMetadataBytes, payload.data_ptr(), own_bytes);
  }

  std::vector<at::Tensor> inputs{mine};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int64_t r = 0; r < g.size; ++r) {
    outputs[0].push_back(at::empty_like(mine));
  }
  const std::string what = std::string("the metadata exchange before ") + collective_name(op);
  run(g, fn, what.c_str(), [&]() {
    c10d::AllgatherOptions opts;
    opts.timeout = g.options.timeout();
    return g.backend->allgather(outputs, inputs, opts);
  });

  if (gathered != nullptr) {
    gathered->clear();
  }
  // The metadata, copied out of the byte buffers (aligned).
  std::vector<std::vector<int64_t>> copies(g.size, std::vector<int64_t>(kMetadataLength));
  std::vector<const int64_t*> meta;
  for (int64_t r = 0; r < g.size; ++r) {
    std::memcpy(copies[r].data(), outputs[0][r].data_ptr(), kMetadataBytes);
    meta.push_back(copies[r].data());
    if (gathered != nullptr) {
      gathered->push_back(outputs[0][r].narrow(0, kMetadataBytes, payload_bytes));
    }
    TORCH_CHECK(
        meta[r][0] == kMarker,
        fn,
        ": rank ",
        r,
        " sent something else than medcl's metadata: the ranks are not running the same "
        "sequence of collectives (every rank must call the same ones in the same order)");
  }
  // A rank that refused its input: every rank stops here, this rank with its own message.
  if (!local_error.empty()) {
    TORCH_CHECK(false, local_error, " (every rank stops at this ", collective_name(op), ")");
  }
  for (int64_t r = 0; r < g.size; ++r) {
    TORCH_CHECK(
        meta[r][1] == 0,
        fn,
        ": rank ",
        r,
        " refused its input to ",
        collective_name(op),
        " (its own error says why); every rank stops here so that none waits for it");
  }
  std::vector<std::vector<int64_t>> all;
  for (int64_t r = 0; r < g.size; ++r) {
    TORCH_CHECK(
        meta[r][2] == static_cast<int64_t>(op),
        fn,
        ": the ranks called different collectives: rank ",
        g.rank,
        " called ",
        collective_name(op),
        ", rank ",
        r,
        " called ",
        collective_name_of(meta[r][2]),
        " (every rank must call the same collectives in the same order)");
    const int64_t n = std::min<int64_t>(std::max<int64_t>(meta[r][3], 0), kMaxMetadataFields);
    all.emplace_back(meta[r] + kHeader, meta[r] + kHeader + n);
  }
  return all;
#else
  (void)fn;
  (void)op;
  TORCH_INTERNAL_ASSERT(false, "a group of more than one process without medcl::dist");
#endif
}

GatherCapacity gather_capacity(const ProcessGroup& group, const std::string& key) {
  const auto* g = ProcessGroupImpl::of(group);
  if (g == nullptr) {
    return {};
  }
  std::lock_guard<std::mutex> lock(g->capacity_mutex);
  const auto it = g->capacities.find(key);
  return it == g->capacities.end() ? GatherCapacity{} : it->second;
}

void set_gather_capacity(
    const ProcessGroup& group,
    const std::string& key,
    GatherCapacity capacity) {
  const auto* g = ProcessGroupImpl::of(group);
  if (g == nullptr) {
    return;
  }
  std::lock_guard<std::mutex> lock(g->capacity_mutex);
  g->capacities[key] = capacity;
}

at::Tensor all_gather_rows(
    const ProcessGroup& group,
    const char* fn,
    const at::Tensor& local,
    const std::vector<int64_t>& counts) {
  if (group.size() == 1) {
    return local;
  }
#if MEDCL_HAVE_DIST
  const auto& g = impl_of(group);
  TORCH_INTERNAL_ASSERT(static_cast<int64_t>(counts.size()) == g.size);
  TORCH_INTERNAL_ASSERT(counts[g.rank] == local.size(0));
  const int64_t most = *std::max_element(counts.begin(), counts.end());
  auto shape = local.sizes().vec();
  if (most == 0) {
    return at::empty(shape, local.options());
  }
  at::Tensor padded = local.contiguous();
  if (local.size(0) < most) {
    shape[0] = most - local.size(0);
    padded = at::cat({padded, at::zeros(shape, local.options())});
  }
  std::vector<at::Tensor> inputs{padded};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int64_t r = 0; r < g.size; ++r) {
    outputs[0].push_back(at::empty_like(padded));
  }
  auto gather_payload = [&]() {
    c10d::AllgatherOptions opts;
    opts.timeout = g.options.timeout();
    return payload_backend(g, padded).allgather(outputs, inputs, opts);
  };
  run(g, fn, "the all_gather of the payload", gather_payload, payload_backend_name(g, padded));
  std::vector<at::Tensor> pieces;
  for (int64_t r = 0; r < g.size; ++r) {
    pieces.push_back(outputs[0][r].narrow(0, 0, counts[r]));
  }
  return at::cat(pieces);
#else
  (void)fn;
  (void)counts;
  TORCH_INTERNAL_ASSERT(false, "a group of more than one process without medcl::dist");
#endif
}

at::Tensor all_gather(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    const at::Tensor& tensor,
    std::vector<int64_t>* counts,
    int records_gradient) {
  const std::string error = local_tensor_error(fn, tensor, /*need_rows=*/true);
  if (group.size() == 1) {
    TORCH_CHECK(error.empty(), error);
    if (counts != nullptr) {
      *counts = {tensor.size(0)};
    }
    return tensor;
  }
  std::vector<int64_t> fields;
  if (error.empty()) {
    fields = tensor_fields(tensor);
    fields.push_back(records_gradient);
  }
  auto all = exchange_metadata(group, fn, op, fields, error);
  std::vector<int64_t> flags;
  for (auto& f : all) {
    flags.push_back(f.back());
    f.pop_back();
  }
  check_same_tensors(fn, all, /*except_first=*/true);
  for (size_t r = 1; r < flags.size(); ++r) {
    TORCH_CHECK(
        flags[r] == flags[0],
        fn,
        ": ranks disagree on whether the result records a gradient: on rank 0 it ",
        flags[0] == 1 ? "does" : "does not",
        ", on rank ",
        r,
        " it ",
        flags[r] == 1 ? "does" : "does not",
        " (the backward is a collective: gather tensors that require grad, with grad mode on, on "
        "every rank or on none)");
  }
  std::vector<int64_t> rows;
  for (const auto& f : all) {
    rows.push_back(f[2]);
  }
  auto out = all_gather_rows(group, fn, tensor, rows);
  if (counts != nullptr) {
    *counts = std::move(rows);
  }
  return out;
}

void all_reduce(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    at::Tensor& tensor,
    bool check) {
  const std::string error = local_tensor_error(fn, tensor, /*need_rows=*/false);
  if (group.size() == 1) {
    TORCH_CHECK(error.empty(), error);
    return;
  }
#if MEDCL_HAVE_DIST
  const auto& g = impl_of(group);
  if (check && g.options.check_consistency()) {
    const auto all = exchange_metadata(
        group, fn, op, error.empty() ? tensor_fields(tensor) : std::vector<int64_t>{}, error);
    check_same_tensors(fn, all, /*except_first=*/false);
  } else {
    TORCH_CHECK(error.empty(), error);
  }
  at::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
  auto reduce_payload = [&]() {
    std::vector<at::Tensor> tensors{buffer};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = g.options.timeout();
    return payload_backend(g, buffer).allreduce(tensors, opts);
  };
  run(g, fn, "the all_reduce of the payload", reduce_payload, payload_backend_name(g, buffer));
  if (!buffer.is_same(tensor)) {
    tensor.copy_(buffer);
  }
#else
  (void)op;
  TORCH_INTERNAL_ASSERT(false, "a group of more than one process without medcl::dist");
#endif
}

at::Tensor reduce_scatter_rows(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    const at::Tensor& tensor,
    const std::vector<int64_t>& counts) {
  TORCH_INTERNAL_ASSERT(tensor.defined() && tensor.dim() >= 1);
  TORCH_INTERNAL_ASSERT(static_cast<int64_t>(counts.size()) == group.size());
  int64_t offset = 0;
  for (int64_t r = 0; r < group.rank(); ++r) {
    offset += counts[r];
  }
  const int64_t mine = counts[group.rank()];
  if (group.size() == 1) {
    return tensor.narrow(0, offset, mine).clone();
  }
#if MEDCL_HAVE_DIST
  const auto& g = impl_of(group);
  const std::string what = std::string("the payload of ") + collective_name(op);
  if (tensor.is_cuda() && g.nccl) {
    at::Tensor buffer = tensor.contiguous().clone();
    std::vector<at::Tensor> tensors{buffer};
    run(
        g,
        fn,
        what.c_str(),
        [&]() {
          c10d::AllreduceOptions opts;
          opts.reduceOp = c10d::ReduceOp::SUM;
          opts.timeout = g.options.timeout();
          return g.nccl->allreduce(tensors, opts);
        },
        "nccl");
    return buffer.narrow(0, offset, mine).clone();
  }
  // Rank r sends each rank s its rows of s; receives its own rows from every rank, in rank order.
  at::Tensor input = tensor.is_contiguous() ? tensor : tensor.contiguous();
  auto shape = tensor.sizes().vec();
  shape[0] = g.size * mine;
  at::Tensor output = at::empty(shape, tensor.options());
  std::vector<int64_t> input_splits = counts;
  std::vector<int64_t> output_splits(static_cast<size_t>(g.size), mine);
  run(g, fn, what.c_str(), [&]() {
    c10d::AllToAllOptions opts;
    opts.timeout = g.options.timeout();
    return g.backend->alltoall_base(output, input, output_splits, input_splits, opts);
  });
  if (mine == 0) {
    shape[0] = 0;
    return output.view(shape);
  }
  shape.insert(shape.begin(), g.size);
  shape[1] = mine;
  return output.view(shape).sum(0);
#else
  (void)fn;
  (void)op;
  TORCH_INTERNAL_ASSERT(false, "a group of more than one process without medcl::dist");
#endif
}

struct PendingCollective {
  std::string fn;
  std::string what;
  std::string backend_name = "gloo";
  int64_t rank = 0;
  int64_t size = 1;
  std::chrono::milliseconds timeout{kDefaultTimeout};
  std::chrono::microseconds poll{0}; // ProcessGroupOptions::poll (Gloo only)
  std::string failure;               // a failure to start
#if MEDCL_HAVE_DIST
  c10::intrusive_ptr<c10d::Work> work;
#endif
};

std::shared_ptr<PendingCollective>
all_reduce_start(const ProcessGroup& group, const char* fn, const at::Tensor& tensor) {
  TORCH_INTERNAL_ASSERT(tensor.defined() && tensor.is_contiguous());
  auto pending = std::make_shared<PendingCollective>();
  pending->fn = fn;
  pending->what = "the all_reduce of the payload";
  if (group.size() == 1) {
    return pending;
  }
#if MEDCL_HAVE_DIST
  const auto& g = impl_of(group);
  pending->rank = g.rank;
  pending->size = g.size;
  pending->timeout = g.options.timeout();
  pending->backend_name = payload_backend_name(g, tensor);
  pending->poll = poll_of(g, pending->backend_name);
  try {
    std::vector<at::Tensor> tensors{tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = g.options.timeout();
    pending->work = payload_backend(g, tensor).allreduce(tensors, opts);
  } catch (const std::exception& e) {
    pending->failure = message_of(e);
  }
#else
  TORCH_INTERNAL_ASSERT(false, "a group of more than one process without medcl::dist");
#endif
  return pending;
}

void wait(const std::shared_ptr<PendingCollective>& pending) {
  TORCH_INTERNAL_ASSERT(pending != nullptr);
  std::string failure = pending->failure;
#if MEDCL_HAVE_DIST
  if (failure.empty() && pending->work) {
    try {
      wait_for(*pending->work, pending->poll, pending->timeout * 2 + std::chrono::seconds(10));
    } catch (const std::exception& e) {
      failure = message_of(e);
    }
    pending->work.reset();
  }
#endif
  pending->failure.clear();
  TORCH_CHECK(
      failure.empty(),
      pending->fn,
      ": ",
      pending->what,
      " failed on rank ",
      pending->rank,
      " of ",
      pending->size,
      " (",
      pending->backend_name,
      ", timeout ",
      pending->timeout.count(),
      " ms): another rank exited, stalled beyond the timeout or called a different collective. "
      "c10d said: ",
      failure);
}

ProcessGroup side_group(const ProcessGroup& group) {
  if (group.size() == 1) {
    return group;
  }
#if MEDCL_HAVE_DIST
  auto* g = const_cast<ProcessGroupImpl*>(&impl_of(group));
  std::lock_guard<std::mutex> lock(g->side_mutex);
  if (!g->side) {
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("side", g->store);
    g->side = connect(
        "medcl::dist::detail::side_group",
        prefixed,
        g->rank,
        g->size,
        g->options,
        g->store_description + ", side group");
  }
  ProcessGroup side;
  side.impl_ = g->side;
  return side;
#else
  TORCH_INTERNAL_ASSERT(false, "a group of more than one process without medcl::dist");
#endif
}

} // namespace detail

void ProcessGroup::barrier() const {
  const char* fn = "medcl::dist::barrier";
  if (size() == 1) {
    return;
  }
#if MEDCL_HAVE_DIST
  const auto& g = impl_of(*this);
  // The metadata exchange is itself a barrier (no rank gets every rank's metadata before all
  // have sent theirs); c10d's barrier follows it when the check is off.
  if (g.options.check_consistency()) {
    detail::exchange_metadata(*this, fn, detail::Collective::Barrier, {}, "");
    return;
  }
  run(g, fn, "the barrier", [&]() {
    c10d::BarrierOptions opts;
    opts.timeout = g.options.timeout();
    return g.backend->barrier(opts);
  });
#endif
}

void ProcessGroup::broadcast(at::Tensor& tensor, int64_t root) const {
  const char* fn = "medcl::dist::broadcast";
  std::string error = local_tensor_error(fn, tensor, /*need_rows=*/false);
  if (error.empty() && (root < 0 || root >= size())) {
    error = std::string(fn) + ": root must be a rank in [0, " + std::to_string(size()) + "), got " +
        std::to_string(root);
  }
  if (size() == 1) {
    TORCH_CHECK(error.empty(), error);
    return;
  }
#if MEDCL_HAVE_DIST
  const auto& g = impl_of(*this);
  if (g.options.check_consistency()) {
    std::vector<int64_t> fields;
    if (error.empty()) {
      fields = tensor_fields(tensor);
      fields.push_back(root);
    }
    const auto all =
        detail::exchange_metadata(*this, fn, detail::Collective::Broadcast, fields, error);
    for (size_t r = 1; r < all.size(); ++r) {
      TORCH_CHECK(
          all[r].back() == all[0].back(),
          fn,
          ": ranks disagree on the root: rank 0 says ",
          all[0].back(),
          ", rank ",
          r,
          " says ",
          all[r].back());
    }
    auto without_root = all;
    for (auto& f : without_root) {
      f.pop_back();
    }
    check_same_tensors(fn, without_root, /*except_first=*/false);
  } else {
    TORCH_CHECK(error.empty(), error);
  }
  at::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
  auto broadcast_payload = [&]() {
    std::vector<at::Tensor> tensors{buffer};
    c10d::BroadcastOptions opts;
    opts.rootRank = static_cast<int>(root);
    opts.rootTensor = 0;
    opts.timeout = g.options.timeout();
    return payload_backend(g, buffer).broadcast(tensors, opts);
  };
  run(g, fn, "the broadcast of the payload", broadcast_payload, payload_backend_name(g, buffer));
  if (!buffer.is_same(tensor)) {
    tensor.copy_(buffer);
  }
#else
  (void)root;
#endif
}

void ProcessGroup::all_reduce(at::Tensor& tensor) const {
  detail::all_reduce(*this, "medcl::dist::all_reduce", detail::Collective::AllReduce, tensor);
}

at::Tensor ProcessGroup::all_gather(const at::Tensor& tensor, std::vector<int64_t>* counts) const {
  return detail::all_gather(
      *this, "medcl::dist::all_gather", detail::Collective::AllGather, tensor, counts);
}

// ---- The launch environment -----------------------------------------------------------------

namespace {

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

int64_t env_int(const char* fn, const char* name, const char* hint) {
  const char* v = std::getenv(name);
  TORCH_CHECK(v != nullptr && *v != '\0', fn, ": ", name, " is not set", hint);
  const std::string text(v);
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  TORCH_CHECK(
      errno == 0 && end != text.c_str() && *end == '\0',
      fn,
      ": ",
      name,
      " must be an integer, got '",
      text,
      "'");
  return static_cast<int64_t>(value);
}

} // namespace

LaunchEnv launch_env() {
  const char* fn = "medcl::dist::launch_env";
  const char* hint =
      " (launch with torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and "
      "MASTER_PORT, or set them yourself)";
  LaunchEnv env;
  env.world_size = env_int(fn, "WORLD_SIZE", hint);
  TORCH_CHECK(env.world_size >= 1, fn, ": WORLD_SIZE must be at least 1, got ", env.world_size);
  env.rank = env_int(fn, "RANK", hint);
  TORCH_CHECK(
      env.rank >= 0 && env.rank < env.world_size,
      fn,
      ": RANK must be in [0, WORLD_SIZE) = [0, ",
      env.world_size,
      "), got RANK=",
      env.rank,
      " with WORLD_SIZE=",
      env.world_size);
  env.local_rank = env_set("LOCAL_RANK") ? env_int(fn, "LOCAL_RANK", hint) : 0;
  TORCH_CHECK(env.local_rank >= 0, fn, ": LOCAL_RANK must not be negative, got ", env.local_rank);
  TORCH_CHECK(env_set("MASTER_ADDR"), fn, ": MASTER_ADDR is not set", hint);
  env.master_addr = std::getenv("MASTER_ADDR");
  const int64_t port = env_int(fn, "MASTER_PORT", hint);
  TORCH_CHECK(port >= 1 && port <= 65535, fn, ": MASTER_PORT must be in [1, 65535], got ", port);
  env.master_port = static_cast<int>(port);
  // torchrun's own test (torch.distributed.elastic.utils.api) compares with str(True).
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  env.use_agent_store = agent != nullptr && std::string(agent) == "True";
  env.restart_count =
      env_set("TORCHELASTIC_RESTART_COUNT") ? env_int(fn, "TORCHELASTIC_RESTART_COUNT", "") : 0;
  return env;
}

ProcessGroup init_from_env(ProcessGroupOptions options) {
  const LaunchEnv env = launch_env();
  // As PyTorch's env:// rendezvous: torchrun's agent hosts the store when it says so, otherwise
  // rank 0 hosts it and waits for the others.
  const bool host_here = !env.use_agent_store && env.rank == 0;
  Store store =
      Store::tcp(env.master_addr, env.master_port, host_here, env.world_size, options.timeout());
  const std::string attempt = "medcl/attempt_" + std::to_string(env.restart_count) + "/";
  return new_group(store.with_prefix(attempt), env.rank, env.world_size, std::move(options));
}

} // namespace dist
} // namespace medcl
