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
#include <exception>
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
  /// Steps done before this process started (a resumed run): the ETA and the throughput count
  /// only the steps done here, and the summary says which steps ran. Default: 0
  TORCH_ARG(int64_t, start_step) = 0;
  /// Weight of the past in the smoothed loss shown beside the step's loss (an exponential moving
  /// average with bias correction, as TensorBoard smooths: 0.98 averages over about 50 steps; 0
  /// shows no smoothed value). It is fed by every `update` given a number, and by each line's
  /// value when the loss is given as a callable. Default: 0.98
  TORCH_ARG(double, smoothing) = 0.98;
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
/// Terminal line: `\r[train] step 120/1000 (12.0%)  loss 4.1234 (smoothed 4.3012)  lr 3.000e-04
/// 812.3 samples/s  ETA 0:02:13` followed by an erase-to-end-of-line; plain line: the same without
/// '\r' and colour, ending in '\n'. `finish()` ends the line and writes a summary: `[train] done:
/// 1000 steps in 0:03:20, 800.1 samples/s` when the run reached its last step; `[train] done:
/// steps 501-1000 of 1000 (500 in this process) ...` for a resumed run; `[train] stopped at step
/// 600 of 1000 after 0:00:06 ...` when it did not reach the end, with "(an exception ended the
/// run)" when the destructor runs during stack unwinding.
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
      finish_impl(std::uncaught_exceptions() > uncaught_at_start_);
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
    smooth(loss);
    const auto value = [loss] { return loss; };
    update_impl(step, value, lr, samples, false);
  }

  /// Same, with the loss computed by `loss()` only when a line is written.
  template <
      typename LossFn,
      typename std::enable_if<std::is_invocable_r<double, LossFn>::value, int>::type = 0>
  void update(int64_t step, LossFn&& loss, double lr, int64_t samples) {
    update_impl(step, std::forward<LossFn>(loss), lr, samples, true);
  }

  /// Ends the terminal line and writes the summary line (once; also called by the destructor). If
  /// the last step was not shown yet, its line is written first, without the loss (which `update`
  /// only evaluates for lines it writes).
  void finish() {
    finish_impl(false);
  }

 private:
  template <typename LossFn>
  void update_impl(int64_t step, LossFn&& loss, double lr, int64_t samples, bool smooth_here) {
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
    if (smooth_here) {
      smooth(loss_);
    }
    print(now);
  }

  void smooth(double loss) {
    const double b = options_.smoothing();
    if (b > 0 && std::isfinite(loss)) {
      ema_ = b * ema_ + (1 - b) * loss;
      ema_weight_ = b * ema_weight_ + (1 - b);
    }
  }

  void finish_impl(bool unwinding) {
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
    const int64_t total = options_.total_steps();
    const int64_t first = options_.start_step();
    const int64_t here = step_ - first;
    if (unwinding || (total > 0 && step_ < total)) {
      s << prefix() << "stopped at step " << step_;
      if (total > 0) {
        s << " of " << total;
      }
      s << " after " << hms(elapsed);
      if (first > 0) {
        s << " (" << here << " in this process)";
      }
      if (unwinding) {
        s << " (an exception ended the run)";
      }
    } else if (first > 0) {
      s << prefix() << "done: steps " << first + 1 << "-" << step_;
      if (total > 0) {
        s << " of " << total;
      }
      s << " (" << here << " in this process) in " << hms(elapsed);
    } else {
      s << prefix() << "done: " << step_ << " steps in " << hms(elapsed);
    }
    if (elapsed > 0) {
      s << ", " << fixed(static_cast<double>(samples_) / elapsed, 1) << " samples/s";
    }
    s << '\n';
    write(s.str());
  }

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
    TORCH_CHECK(
        options_.start_step() >= 0 &&
            (options_.total_steps() == 0 || options_.start_step() <= options_.total_steps()),
        "Progress: start_step must be in [0, total_steps = ",
        options_.total_steps(),
        "], got ",
        options_.start_step());
    TORCH_CHECK(
        std::isfinite(options_.smoothing()) && options_.smoothing() >= 0 &&
            options_.smoothing() < 1,
        "Progress: smoothing must be in [0, 1), got ",
        options_.smoothing());
    uncaught_at_start_ = std::uncaught_exceptions();
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
      if (ema_weight_ > 0) {
        std::snprintf(num, sizeof(num), "%.4f", ema_ / ema_weight_);
        s << " (smoothed " << num << ")";
      }
    }
    std::snprintf(num, sizeof(num), "%.3e", lr_);
    s << "  lr " << num;
    const double dt = now - last_print_time_;
    const double rate = dt > 0 ? static_cast<double>(samples_ - printed_samples_) / dt : 0.0;
    s << "  " << fixed(rate, 1) << " samples/s";
    const double elapsed = now - start_time_;
    const int64_t here = step_ - options_.start_step(); // steps this process has timed
    if (total > 0 && here > 0 && step_ <= total) {
      s << "  ETA "
        << hms(elapsed / static_cast<double>(here) * static_cast<double>(total - step_));
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
  double ema_ = 0;
  double ema_weight_ = 0;
  int uncaught_at_start_ = 0;
};

} // namespace train
} // namespace medcl
