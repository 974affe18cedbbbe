// See process.h. fork/exec with a pipe, so arguments need no shell quoting.
#include "support/process.h"

#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>

namespace diffuse::test {

RunResult run(const std::vector<std::string>& argv, const std::string& cwd, const EnvVars& env) {
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    bool overridden = false;
    for (const auto& [name, value] : env) overridden |= entry.rfind(name + "=", 0) == 0;
    if (!overridden) env_strings.push_back(entry);
  }
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp, args;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  RunResult r;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

RunResult run_cli(const std::vector<std::string>& args, const std::string& cwd, const EnvVars& env) {
  std::vector<std::string> argv{DIFFUSE_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, cwd, env);
}

RunResult run_self(const std::string& test_name, const EnvVars& env) {
  // The exact name, so only that case runs (Catch2 reads ',' as "or" and '[' as a tag unless
  // escaped); Catch2 prints the usual summary after it.
  std::string spec;
  for (char c : test_name) {
    if (c == ',' || c == '[' || c == ']' || c == '\\' || c == '*' || c == '"') spec += '\\';
    spec += c;
  }
  return run({"/proc/self/exe", spec}, "", env);
}

bool python_has_torch() {
  static int ok = -1;
  if (ok < 0) ok = access("/usr/bin/python3", X_OK) == 0 && run({"/usr/bin/python3", "-c", "import torch"}).exit_code == 0;
  return ok == 1;
}

std::string source_path(const std::string& relative) { return std::string(DIFFUSE_SOURCE_DIR) + "/" + relative; }

}  // namespace diffuse::test
