#pragma once

/// \file
/// Process groups for data-parallel training across processes and machines, on PyTorch's own
/// c10d (no transport of medcl's own): a `Store` where the ranks meet (c10d's `FileStore` or
/// `TCPStore`) and a `ProcessGroup` on c10d's Gloo backend with barrier, broadcast, all-reduce
/// (sum) and all-gather of tensors whose first dimension may differ between ranks.
///
/// Every collective first gathers a few integers from every rank (the operation, dtype and
/// shape, or the error a rank found in its own input), so that ranks that disagree fail together
/// with a message naming the ranks and what differs, instead of deadlocking in the payload
/// collective. Every wait is bounded by the group's timeout; a rank that exits or stalls makes
/// the others fail with an error naming the operation. See docs/distributed.md.
///
/// This header does not include c10d's headers: c10d is used by medcl's compiled part only, so
/// code that includes this header needs neither Gloo's headers nor c10d's build definitions.

#include <ATen/ATen.h>
#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace medcl {
namespace dist {

/// Whether this build of medcl has c10d's Gloo backend (CMake: MEDCL_DIST, reported at configure
/// time). Without it, the one-process `ProcessGroup` still works (every collective returns its
/// input) and everything that would reach another process throws a c10::Error that says so.
bool available();

/// PyTorch's default timeout of a process group (30 minutes).
constexpr std::chrono::milliseconds kDefaultTimeout{30 * 60 * 1000};

namespace detail {
struct StoreImpl;
struct ProcessGroupImpl;
} // namespace detail

class ProcessGroup;

namespace detail {
ProcessGroup side_group(const ProcessGroup& group);
} // namespace detail

/// Options of a `ProcessGroup`.
///
/// Example:
///   auto opts = medcl::dist::ProcessGroupOptions().timeout(std::chrono::seconds(60));
///   auto group = medcl::dist::init_from_env(opts);
/// Which c10d backend moves CUDA tensors.
enum class CudaBackend {
  /// NCCL when medcl was built with it (a LibTorch with CUDA and NCCL, and nccl.h) and CUDA is
  /// available at run time; Gloo otherwise.
  Auto,
  /// Gloo (CUDA tensors go through the host where Gloo lacks a CUDA path).
  Gloo,
  /// NCCL; new_group fails, naming why, where medcl was built without it.
  NCCL,
};

struct ProcessGroupOptions {
  /// The longest one operation (the rendezvous, one collective) waits for the other ranks before
  /// it fails with an error naming the operation. Default: 30 minutes (PyTorch's default)
  TORCH_ARG(std::chrono::milliseconds, timeout) = kDefaultTimeout;
  /// The address Gloo listens on for the other ranks, e.g. "127.0.0.1" for processes of one
  /// machine. Empty: the interfaces named by GLOO_SOCKET_IFNAME (comma-separated) when it is set,
  /// else the address of this machine's hostname, falling back to the loopback address (what
  /// PyTorch does). Default: ""
  TORCH_ARG(std::string, hostname) = "";
  /// Whether barrier, broadcast and all-reduce first check that every rank called the same
  /// operation on tensors of the same dtype and shape (one small all-gather more). All-gathers
  /// always check, because they need every rank's row count anyway. Default: true
  TORCH_ARG(bool, check_consistency) = true;
  /// The backend of collectives on CUDA tensors. CPU tensors, the metadata exchanges and
  /// barriers always use Gloo. With NCCL, set each rank's CUDA device (LOCAL_RANK) before the first
  /// collective, one GPU per rank. Default: CudaBackend::Auto
  TORCH_ARG(CudaBackend, cuda_backend) = CudaBackend::Auto;
  /// How long a rank that waits for a Gloo collective keeps checking whether it has completed,
  /// yielding the CPU between checks, before it sleeps until woken (c10d's way). Where waking a
  /// sleeping thread is slow (virtual machines, every core busy) this shortens each collective,
  /// for at most this much CPU time per wait; measured in docs/distributed.md. NCCL collectives
  /// are never polled (their wait does not block the host). 0: sleep at once. Default: 0
  TORCH_ARG(std::chrono::microseconds, poll) = std::chrono::microseconds(0);
};

/// Whether medcl was built with c10d's NCCL backend (a LibTorch with CUDA and NCCL).
bool nccl_available();

/// A key-value store through which the ranks find each other: c10d's `FileStore` (a file on a
/// file system every rank sees) or `TCPStore` (one process hosts it, the others connect). A
/// cheap handle: copies share the store.
///
/// Example:
///   auto store = medcl::dist::Store::file("/shared/run42.store", world_size);
///   auto group = medcl::dist::new_group(store, rank, world_size);
class Store {
 public:
  /// No store.
  Store() = default;

  /// A `FileStore` at `path` (created when missing) for `world_size` processes; its waits give up
  /// after `timeout`.
  static Store file(
      const std::string& path,
      int64_t world_size,
      std::chrono::milliseconds timeout = kDefaultTimeout);

  /// A `TCPStore` at `host`:`port`. With `is_server`, this process hosts it (`port` 0: any free
  /// port, see port()); otherwise it connects to the host and fails after `timeout` when none
  /// answers, naming the address. With `world_size` > 0 every process counts itself in and the
  /// host waits (up to `timeout`) until `world_size` processes, itself included, have joined, as
  /// PyTorch's stores do; 0 joins without counting (a store that is not a group's, e.g. hosted by
  /// a launcher).
  static Store tcp(
      const std::string& host,
      int port,
      bool is_server,
      int64_t world_size,
      std::chrono::milliseconds timeout = kDefaultTimeout);

  /// The same store with every key prefixed by `prefix` (c10d's `PrefixStore`).
  Store with_prefix(const std::string& prefix) const;

  /// Sets `key` to `value`.
  void set(const std::string& key, const std::string& value) const;
  /// The value of `key`, waiting for it up to the store's timeout.
  std::string get(const std::string& key) const;

  /// The TCP port (the one chosen when 0 was asked); -1 for other stores.
  int port() const;
  /// "FileStore at <path>", "TCPStore at <host>:<port> (hosted here)", ...
  std::string describe() const;
  /// Whether this handle holds a store.
  bool defined() const {
    return impl_ != nullptr;
  }

 private:
  std::shared_ptr<detail::StoreImpl> impl_;
  friend class ProcessGroup;
  friend ProcessGroup new_group(const Store&, int64_t, int64_t, ProcessGroupOptions);
};

/// A group of processes (ranks 0 .. size-1) that run the same collectives in the same order.
/// Default-constructed, it is the one-process group (rank 0 of 1) whose collectives return their
/// input without communicating: code written for a group runs unchanged in one process. A cheap
/// handle: copies share the group.
///
/// Every collective is blocking and bounded by the group's timeout. When the ranks disagree (a
/// different operation, dtype or shape, or a rank whose input was refused), every rank throws
/// the same c10::Error before any payload is sent; when a rank exits or stalls, the others throw
/// one naming the operation, this rank and the timeout.
///
/// Example:
///   auto group = medcl::dist::init_from_env();   // under torchrun
///   group.broadcast(weights, 0);                 // every rank starts from rank 0's weights
///   at::Tensor all = group.all_gather(local);    // [sum of every rank's rows, ...], rank order
///   group.all_reduce(grad);                      // sum over ranks, in place
class ProcessGroup {
 public:
  /// The one-process group: rank 0 of 1.
  ProcessGroup() = default;

  /// This process's rank, in [0, size()).
  int64_t rank() const;
  /// The number of ranks.
  int64_t size() const;
  /// "gloo", or "none" for the one-process group.
  std::string backend() const;
  /// The options the group was made with.
  ProcessGroupOptions options() const;
  /// "gloo rank 1 of 4 (TCPStore at 10.0.0.1:29500)" or "one process (no group)".
  std::string describe() const;

  /// Returns when every rank has called it.
  void barrier() const;

  /// Replaces `tensor` on every rank with rank `root`'s, in place. Every rank must pass a tensor
  /// of the same dtype and shape, and the same root.
  void broadcast(at::Tensor& tensor, int64_t root = 0) const;

  /// Replaces `tensor` on every rank with the sum over ranks, in place. Every rank must pass a
  /// tensor of the same dtype and shape.
  void all_reduce(at::Tensor& tensor) const;

  /// Every rank's `tensor` concatenated along the first dimension in rank order. The ranks' first
  /// dimensions may differ (0 included); dtype and the other dimensions must agree. `counts`,
  /// when given, receives every rank's number of rows. No gradient flows back: see
  /// medcl::dist::gather_with_gradient.
  ///
  /// Shape: tensor [n_r, *] on rank r; result [n_0 + ... + n_{size-1}, *].
  at::Tensor all_gather(const at::Tensor& tensor, std::vector<int64_t>* counts = nullptr) const;

 private:
  std::shared_ptr<detail::ProcessGroupImpl> impl_;
  friend ProcessGroup new_group(const Store&, int64_t, int64_t, ProcessGroupOptions);
  friend struct detail::ProcessGroupImpl;
  friend ProcessGroup detail::side_group(const ProcessGroup&);
};

/// A Gloo process group of `world_size` ranks meeting through `store`, this process being
/// `rank`. Every rank calls it with the same store location and world size; it returns once all
/// have joined, or fails after the timeout. Several groups made from one store (in the same
/// order on every rank) do not see each other's keys.
ProcessGroup
new_group(const Store& store, int64_t rank, int64_t world_size, ProcessGroupOptions options = {});

/// The launch settings that torchrun (and `env://` in PyTorch) read from the environment.
struct LaunchEnv {
  /// RANK: this process's rank among all processes.
  int64_t rank = 0;
  /// WORLD_SIZE: the number of processes.
  int64_t world_size = 1;
  /// LOCAL_RANK: the rank among the processes of this machine (0 when unset).
  int64_t local_rank = 0;
  /// MASTER_ADDR: the host of the TCPStore.
  std::string master_addr;
  /// MASTER_PORT: its port.
  int master_port = 0;
  /// TORCHELASTIC_USE_AGENT_STORE is "True": torchrun's agent hosts the store, every rank
  /// (rank 0 too) connects to it.
  bool use_agent_store = false;
  /// TORCHELASTIC_RESTART_COUNT (0 when unset): keys of a restarted attempt do not meet the
  /// previous attempt's.
  int64_t restart_count = 0;
};

/// Reads and checks the launch environment. Fails naming the variable when WORLD_SIZE, RANK,
/// MASTER_ADDR or MASTER_PORT is missing or not a number, when RANK >= WORLD_SIZE, or when
/// WORLD_SIZE < 1.
LaunchEnv launch_env();

/// The process group of a torchrun (or `env://`) launch: a TCPStore at MASTER_ADDR:MASTER_PORT
/// (hosted by rank 0, or by torchrun's agent when TORCHELASTIC_USE_AGENT_STORE says so) and a
/// Gloo group on it. An unreachable master fails after the timeout, naming the address.
///
/// Example:
///   // torchrun --nproc-per-node 2 --no-python ./pretrain
///   auto group = medcl::dist::init_from_env(
///       medcl::dist::ProcessGroupOptions().timeout(std::chrono::minutes(5)));
ProcessGroup init_from_env(ProcessGroupOptions options = {});

namespace detail {

/// The collectives, as the messages name them. Every rank must call the same ones in the same
/// order; the metadata exchange before each one tells when they do not.
enum class Collective : int64_t {
  Barrier = 1,
  Broadcast,
  AllReduce,
  AllGather,
  GatherWithGradient,
  GatherWithGradientBackward,
  GatherKeys,
  /// A loss's check that every rank calls it with the same options and embedding size.
  LossInputs,
};

/// "barrier", "broadcast", "all_reduce", ...
const char* collective_name(Collective op);

/// Gathers `fields` (at most kMaxMetadataFields integers) from every rank, with the operation and
/// whether this rank refused its input (`local_error` non-empty). Every rank then throws the same
/// way when a rank refused its input (that rank: its own message; the others: a message naming
/// it) or when the ranks called different operations. Returns every rank's fields, in rank order.
/// `fn` starts the messages. The one-process group returns {fields} (or throws `local_error`).
std::vector<std::vector<int64_t>> exchange_metadata(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    const std::vector<int64_t>& fields,
    const std::string& local_error);

/// exchange_metadata that also all-gathers `payload_bytes` bytes per rank in the same round trip
/// (the same number on every rank, which the ranks must know without asking: a size learnt at an
/// earlier exchange): the bytes of `payload` (a contiguous CPU tensor of at most that many bytes,
/// or undefined), then padding. `gathered` receives every rank's `payload_bytes` bytes in rank
/// order (byte views of one buffer each). Where a rank refused its input the others still receive
/// its bytes (ignore them).
std::vector<std::vector<int64_t>> exchange_metadata(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    const std::vector<int64_t>& fields,
    const std::string& local_error,
    const at::Tensor& payload,
    int64_t payload_bytes,
    std::vector<at::Tensor>* gathered);

/// The most integers exchange_metadata carries per rank.
constexpr int64_t kMaxMetadataFields = 30;

/// What a loss learnt at its last gather on a group: the rows per rank, of `row_bytes` bytes each,
/// that its next agreement may carry (0 rows: none). Every rank learns the same from the same
/// exchange, so every rank sizes its next payload alike.
struct GatherCapacity {
  int64_t rows = 0;
  int64_t row_bytes = 0;
};

/// The capacity stored under `key` on `group` ({0, 0} before the first set).
GatherCapacity gather_capacity(const ProcessGroup& group, const std::string& key);

/// Stores the capacity under `key` on `group` (for every copy of the handle).
void set_gather_capacity(
    const ProcessGroup& group,
    const std::string& key,
    GatherCapacity capacity);

/// The payload of an all-gather whose row counts every rank already knows (`counts`, from
/// exchange_metadata): pads `local` to the largest count, all-gathers, trims, concatenates in rank
/// order. No check, no gradient.
at::Tensor all_gather_rows(
    const ProcessGroup& group,
    const char* fn,
    const at::Tensor& local,
    const std::vector<int64_t>& counts);

/// ProcessGroup::all_gather with `fn` and `op` in its messages. `records_gradient` (0 or 1; -1:
/// not checked) must be the same on every rank: gather_with_gradient's backward is a collective,
/// so a rank whose result records no gradient would leave the others waiting in it.
at::Tensor all_gather(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    const at::Tensor& tensor,
    std::vector<int64_t>* counts,
    int records_gradient = -1);

/// ProcessGroup::all_reduce with `fn` and `op` in its messages. `check` false skips the metadata
/// exchange (one round trip) where the caller has already made the ranks agree on the shape and
/// on calling it (a loss's row count after its agreement check).
void all_reduce(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    at::Tensor& tensor,
    bool check = true);

/// The sum over ranks of every rank's rows of this rank: `tensor` [sum of counts, *] on every
/// rank (the same shape and dtype: the caller has made the ranks agree), `counts` every rank's
/// rows in rank order; returns a new tensor [counts[rank], *]. On CPU tensors one all-to-all, each
/// rank receiving only its own rows from each other rank ((W - 1) / W of an all-reduce's bytes, in
/// one round instead of a ring's 2 (W - 1) steps); on CUDA tensors with NCCL an all-reduce, sliced.
/// No metadata exchange. Collective.
at::Tensor reduce_scatter_rows(
    const ProcessGroup& group,
    const char* fn,
    Collective op,
    const at::Tensor& tensor,
    const std::vector<int64_t>& counts);

/// A collective started and not yet waited for (all_reduce_start).
struct PendingCollective;

/// Starts the all-reduce (sum, in place) of `tensor` (contiguous) and returns without waiting,
/// with no metadata exchange: the caller makes the ranks agree on the shapes and on the order
/// of the calls. `tensor` must not be touched until `wait`. Collective. The one-process group
/// does nothing.
std::shared_ptr<PendingCollective>
all_reduce_start(const ProcessGroup& group, const char* fn, const at::Tensor& tensor);

/// Waits for a started collective; a failure (a rank gone, a timeout) becomes an error naming
/// `fn`, the operation, this rank and the timeout. Waiting twice returns at once.
void wait(const std::shared_ptr<PendingCollective>& pending);

/// A second group over the same ranks and store whose collectives are matched only among
/// themselves, so that they may run while the group's own run (gradient buckets reduced during
/// backward while a loss's gather backward runs on the group). Made once per group, at the first
/// call, which is collective: every rank makes it at the same point. The one-process group
/// returns itself.
ProcessGroup side_group(const ProcessGroup& group);

} // namespace detail

} // namespace dist
} // namespace medcl
