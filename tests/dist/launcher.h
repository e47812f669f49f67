#pragma once

// Launches N worker processes for medcl::dist's tests: the test executable runs itself again
// (fork + exec of /proc/self/exe) with the hidden test case "medcl-dist-worker" (or the one
// Launch::worker_test names) and the rank's environment, one log file per rank, and waits for
// them for a bounded time (never forever).

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace medcl_test {

/// The name of the hidden test case that the workers run.
inline const char* worker_test_name() {
  return "medcl-dist-worker";
}

/// A TCP port on the loopback interface that nothing listens on right now (bound to port 0,
/// then released: another process could take it meanwhile, which the tests accept).
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    throw std::runtime_error("free_loopback_port: socket() failed");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("free_loopback_port: bind() failed");
  }
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

/// How one worker ended.
struct WorkerExit {
  int rank = 0;
  /// Exited by itself with this code (-1: killed by a signal, see `signal`).
  int code = -1;
  int signal = 0;
  /// Still running at the deadline, or a rank that the launch was told to kill once the others
  /// ended.
  bool killed = false;
  /// Its standard output and error.
  std::string log;
};

/// What to launch.
struct Launch {
  int world_size = 2;
  /// Environment of every worker (besides the parent's, minus the launch variables).
  std::map<std::string, std::string> env;
  /// Environment of one rank only.
  std::map<int, std::map<std::string, std::string>> rank_env;
  /// Ranks that are expected not to end by themselves: killed once every other rank has ended.
  std::vector<int> kill_after_others;
  /// The longest the launch waits for the workers.
  std::chrono::seconds deadline{120};
  /// Where the logs go.
  std::string dir;
  /// The hidden test case the workers run (each test executable has its own); empty:
  /// worker_test_name().
  std::string worker_test;
};

inline std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Starts the workers and waits for them (up to `deadline`, then kills what is left). Fills RANK,
/// WORLD_SIZE and LOCAL_RANK; a worker's output goes to <dir>/log.<rank>.txt.
inline std::vector<WorkerExit> launch_workers(const Launch& launch) {
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) {
    throw std::runtime_error("launch_workers: cannot read /proc/self/exe");
  }
  self[len] = '\0';

  static const char* const kDropped[] = {
      "RANK",
      "WORLD_SIZE",
      "LOCAL_RANK",
      "MASTER_ADDR",
      "MASTER_PORT",
      "TORCHELASTIC_USE_AGENT_STORE",
      "TORCHELASTIC_RESTART_COUNT",
      "GLOO_SOCKET_IFNAME"};
  std::vector<std::string> base;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    bool drop = name == "OMP_NUM_THREADS";
    for (const char* d : kDropped) {
      drop = drop || name == d;
    }
    if (!drop) {
      base.push_back(entry);
    }
  }
  // One thread each: the machine has few cores and runs several workers.
  base.push_back("OMP_NUM_THREADS=1");

  std::vector<pid_t> pids(launch.world_size, -1);
  std::vector<WorkerExit> exits(launch.world_size);
  for (int r = 0; r < launch.world_size; ++r) {
    std::vector<std::string> env = base;
    std::map<std::string, std::string> vars = launch.env;
    vars["RANK"] = std::to_string(r);
    vars["WORLD_SIZE"] = std::to_string(launch.world_size);
    vars["LOCAL_RANK"] = std::to_string(r);
    auto it = launch.rank_env.find(r);
    if (it != launch.rank_env.end()) {
      for (const auto& kv : it->second) {
        vars[kv.first] = kv.second;
      }
    }
    for (const auto& kv : vars) {
      env.push_back(kv.first + "=" + kv.second);
    }
    std::vector<char*> envp;
    for (auto& e : env) {
      envp.push_back(e.data());
    }
    envp.push_back(nullptr);
    std::string name = launch.worker_test.empty() ? worker_test_name() : launch.worker_test;
    std::vector<char*> argv{self, name.data(), nullptr};
    const std::string log = launch.dir + "/log." + std::to_string(r) + ".txt";

    const pid_t pid = ::fork();
    if (pid < 0) {
      throw std::runtime_error("launch_workers: fork() failed");
    }
    if (pid == 0) {
      // The child: only async-signal-safe calls until exec.
#if defined(__linux__)
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::close(fd);
      }
      ::execve(self, argv.data(), envp.data());
      ::_exit(127);
    }
    pids[r] = pid;
    exits[r].rank = r;
  }

  const auto start = std::chrono::steady_clock::now();
  auto expected_to_hang = [&](int r) {
    for (int k : launch.kill_after_others) {
      if (k == r) {
        return true;
      }
    }
    return false;
  };
  for (;;) {
    bool others_running = false;
    bool any_running = false;
    for (int r = 0; r < launch.world_size; ++r) {
      if (pids[r] < 0) {
        continue;
      }
      int status = 0;
      const pid_t done = ::waitpid(pids[r], &status, WNOHANG);
      if (done == pids[r]) {
        if (WIFEXITED(status)) {
          exits[r].code = WEXITSTATUS(status);
        } else if (WIFSIGNALED(status)) {
          exits[r].signal = WTERMSIG(status);
        }
        pids[r] = -1;
        continue;
      }
      any_running = true;
      others_running = others_running || !expected_to_hang(r);
    }
    if (!any_running) {
      break;
    }
    const bool late = std::chrono::steady_clock::now() - start > launch.deadline;
    if (late || !others_running) {
      for (int r = 0; r < launch.world_size; ++r) {
        if (pids[r] >= 0) {
          ::kill(pids[r], SIGKILL);
          int status = 0;
          ::waitpid(pids[r], &status, 0);
          exits[r].killed = true;
          exits[r].signal = SIGKILL;
          pids[r] = -1;
        }
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int r = 0; r < launch.world_size; ++r) {
    exits[r].log = read_text_file(launch.dir + "/log." + std::to_string(r) + ".txt");
  }
  return exits;
}

/// Every worker's log, for the test's failure message.
inline std::string all_logs(const std::vector<WorkerExit>& exits) {
  std::string s;
  for (const auto& e : exits) {
    s += "---- rank " + std::to_string(e.rank) + " (exit code " + std::to_string(e.code) +
        ", signal " + std::to_string(e.signal) + (e.killed ? ", killed" : "") + ")\n" + e.log;
  }
  return s;
}

} // namespace medcl_test
