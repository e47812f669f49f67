#pragma once

/// \file
/// A progress reporter for training loops: one line rewritten in place on a terminal, plain lines
/// every N steps otherwise (log files, CI).

#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#ifndef _WIN32
#include <unistd.h>
#endif

namespace medcl {
namespace train {

/// How `Progress` writes.
enum class ProgressMode {
  /// `Terminal` when the stream is a terminal (isatty) and TERM is not "dumb", else `Plain`.
  Auto,
  /// One line rewritten with '\r', redrawn at most every `min_interval` seconds.
  Terminal,
  /// A line every `every` steps and at the end.
  Plain,
};

/// Options of `Progress`.
struct ProgressOptions {
  /* implicit */ ProgressOptions(int64_t total_steps = 0) : total_steps_(total_steps) {}
  /// Steps of the run (for "step/total" and the ETA); 0 when unknown. Default: 0
  TORCH_ARG(int64_t, total_steps) = 0;
  /// Terminal or plain output. Default: ProgressMode::Auto
  TORCH_ARG(ProgressMode, mode) = ProgressMode::Auto;
  /// Plain mode: a line every this many steps (and at the last step and at `finish`). Default: 50
  TORCH_ARG(int64_t, every) = 50;
  /// Terminal mode: at most one redraw per this many seconds. Default: 0.1
  TORCH_ARG(double, min_interval) = 0.1;
  /// Terminal mode: colour (bold label) unless NO_COLOR is set in the environment. Default: true
  TORCH_ARG(bool, color) = true;
  /// Prefix of every line. Default: "train"
  TORCH_ARG(std::string, label) = "train";
  /// Seconds since an arbitrary origin; steady_clock when empty (tests inject a fake clock).
  /// Default: {}
  TORCH_ARG(std::function<double()>, clock) = {};
};

/// Reports training progress: step/total, loss, learning rate, throughput (samples/s over the
/// steps since the previous line) and ETA (mean time per step so far × steps left).
///
/// Call `update` once per finished step; it costs a clock read and a comparison unless a line is
/// due. The loss can be given as a callable so that `loss.item()` (a GPU synchronisation) runs only
/// when a line is written. Output goes to a `std::ostream` or a `FILE*` (default stderr).
///
/// Terminal line: `\r[train] step 120/1000 (12.0%)  loss 4.1234  lr 3.000e-04  812.3 samples/s
/// ETA 0:02:13` followed by an erase-to-end-of-line; plain line: the same without '\r' and
/// colour, ending in '\n'. `finish()` ends the line and writes a summary
/// (`[train] done: 1000 steps in 0:03:20, 800.1 samples/s`).
///
/// Example:
///   medcl::train::Progress progress(medcl::train::ProgressOptions(total).every(100));
///   for (int64_t step = 0; step < total; ++step) {
///     ...
///     progress.update(step + 1, [&] { return loss.item<double>(); }, lr, batch_size);
///   }
///   progress.finish();
class Progress {
 public:
  /// Writes to `file` (default stderr); Auto mode checks isatty(fileno(file)).
  explicit Progress(ProgressOptions options = {}, std::FILE* file = stderr)
      : options_(std::move(options)), file_(file) {
    TORCH_CHECK(file != nullptr, "Progress: file is null");
    init(is_terminal_fd(file_fd(file)));
  }
  /// Writes to `stream`; Auto mode treats std::cout / std::cerr / std::clog by their file
  /// descriptor and any other stream as not a terminal.
  Progress(ProgressOptions options, std::ostream& stream)
      : options_(std::move(options)), stream_(&stream) {
    int fd = -1;
    if (&stream == &std::cout) {
      fd = 1;
    } else if (&stream == &std::cerr || &stream == &std::clog) {
      fd = 2;
    }
    init(is_terminal_fd(fd));
  }

  ~Progress() {
    try {
      finish();
    } catch (...) {
      // A destructor must not throw; a failed final line is not worth terminating for.
    }
  }

  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  /// Whether the output is the rewritten terminal line.
  bool terminal() const {
    return terminal_;
  }

  /// Records that step `step` (1-based count of finished steps) processed `samples` samples, with
  /// loss `loss` and learning rate `lr`; writes a line when one is due.
  void update(int64_t step, double loss, double lr, int64_t samples) {
    const auto value = [loss] { return loss; };
    update(step, value, lr, samples);
  }

  /// Same, with the loss computed by `loss()` only when a line is written.
  template <
      typename LossFn,
      typename std::enable_if<std::is_invocable_r<double, LossFn>::value, int>::type = 0>
  void update(int64_t step, LossFn&& loss, double lr, int64_t samples) {
    TORCH_CHECK(samples >= 0, "Progress::update: samples must be >= 0, got ", samples);
    samples_ += samples;
    step_ = step;
    lr_ = lr;
    const bool last = options_.total_steps() > 0 && step >= options_.total_steps();
    double now = 0;
    if (terminal_) {
      now = this->now();
      if (!last && now - last_print_time_ < options_.min_interval()) {
        return;
      }
    } else if (!last && step % options_.every() != 0) {
      return;
    } else {
      now = this->now();
    }
    loss_ = loss();
    loss_step_ = step;
    print(now);
  }

  /// Ends the terminal line and writes the summary line (once; also called by the destructor). If
  /// the last step was not shown yet, its line is written first, without the loss (which `update`
  /// only evaluates for lines it writes).
  void finish() {
    if (finished_ || step_ < 0) {
      finished_ = true;
      return;
    }
    finished_ = true;
    const double now = this->now();
    std::ostringstream s;
    if (terminal_) {
      if (printed_step_ != step_) {
        print(now);
      }
      s << '\n';
    } else if (printed_step_ != step_) {
      print(now);
    }
    const double elapsed = now - start_time_;
    s << prefix() << "done: " << step_ << " steps in " << hms(elapsed);
    if (elapsed > 0) {
      s << ", " << fixed(static_cast<double>(samples_) / elapsed, 1) << " samples/s";
    }
    s << '\n';
    write(s.str());
  }

 private:
  void init(bool is_tty) {
    TORCH_CHECK(options_.every() >= 1, "Progress: every must be >= 1, got ", options_.every());
    TORCH_CHECK(
        options_.min_interval() >= 0,
        "Progress: min_interval must be >= 0, got ",
        options_.min_interval());
    TORCH_CHECK(
        options_.total_steps() >= 0,
        "Progress: total_steps must be >= 0, got ",
        options_.total_steps());
    const char* term = std::getenv("TERM");
    const bool dumb = term != nullptr && std::string(term) == "dumb";
    switch (options_.mode()) {
      case ProgressMode::Terminal:
        terminal_ = true;
        break;
      case ProgressMode::Plain:
        terminal_ = false;
        break;
      case ProgressMode::Auto:
        terminal_ = is_tty && !dumb;
        break;
    }
    color_ = terminal_ && options_.color() && std::getenv("NO_COLOR") == nullptr && !dumb;
    start_time_ = now();
    last_print_time_ = start_time_;
  }

  static int file_fd(std::FILE* file) {
#ifndef _WIN32
    return ::fileno(file);
#else
    (void)file;
    return -1;
#endif
  }

  static bool is_terminal_fd(int fd) {
#ifndef _WIN32
    return fd >= 0 && ::isatty(fd) == 1;
#else
    (void)fd;
    return false;
#endif
  }

  double now() const {
    if (options_.clock()) {
      return options_.clock()();
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  std::string prefix() const {
    if (color_) {
      return "\x1b[1m[" + options_.label() + "]\x1b[0m ";
    }
    return "[" + options_.label() + "] ";
  }

  static std::string fixed(double v, int digits) {
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(digits);
    s << v;
    return s.str();
  }

  static std::string hms(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) {
      return "?";
    }
    const auto total = static_cast<int64_t>(std::llround(seconds));
    char buf[48];
    std::snprintf(
        buf,
        sizeof(buf),
        "%lld:%02lld:%02lld",
        static_cast<long long>(total / 3600),
        static_cast<long long>((total / 60) % 60),
        static_cast<long long>(total % 60));
    return buf;
  }

  void print(double now) {
    const int64_t total = options_.total_steps();
    std::ostringstream s;
    if (terminal_) {
      s << '\r';
    }
    s << prefix() << "step " << step_;
    if (total > 0) {
      s << '/' << total << " (" << fixed(100.0 * static_cast<double>(step_) / total, 1) << "%)";
    }
    char num[32];
    if (loss_step_ == step_) {
      std::snprintf(num, sizeof(num), "%.4f", loss_);
      s << "  loss " << num;
    }
    std::snprintf(num, sizeof(num), "%.3e", lr_);
    s << "  lr " << num;
    const double dt = now - last_print_time_;
    const double rate = dt > 0 ? static_cast<double>(samples_ - printed_samples_) / dt : 0.0;
    s << "  " << fixed(rate, 1) << " samples/s";
    const double elapsed = now - start_time_;
    if (total > 0 && step_ > 0 && step_ <= total) {
      s << "  ETA "
        << hms(elapsed / static_cast<double>(step_) * static_cast<double>(total - step_));
    }
    if (terminal_) {
      s << "\x1b[K";
    } else {
      s << '\n';
    }
    write(s.str());
    last_print_time_ = now;
    printed_samples_ = samples_;
    printed_step_ = step_;
  }

  void write(const std::string& text) {
    if (stream_ != nullptr) {
      *stream_ << text;
      stream_->flush();
    } else {
      std::fwrite(text.data(), 1, text.size(), file_);
      std::fflush(file_);
    }
  }

  ProgressOptions options_;
  std::FILE* file_ = nullptr;
  std::ostream* stream_ = nullptr;
  bool terminal_ = false;
  bool color_ = false;
  bool finished_ = false;
  double start_time_ = 0;
  double last_print_time_ = 0;
  int64_t step_ = -1;
  int64_t printed_step_ = -1;
  int64_t samples_ = 0;
  int64_t printed_samples_ = 0;
  double loss_ = 0;
  int64_t loss_step_ = -1;
  double lr_ = 0;
};

} // namespace train
} // namespace medcl
