// tests/crash/crash_explorer: runs the power-loss simulation over the workloads and
// prints, per workload, how many crash states were explored and whether any violated the
// guarantees. Exit 0 when none did (or, with --expect-violations, when some did).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "tests/crash/explorer.h"

namespace {

using pmemfuse::crash::ExploreOptions;
using pmemfuse::crash::ExploreResult;
using pmemfuse::crash::Workload;

void print_row(const Workload& w, const ExploreResult& r) {
  std::printf("| %s | %llu | %llu | %llu | %llu | %llu | %llu | %.1f |\n", w.name.c_str(),
              (unsigned long long)r.steps, (unsigned long long)r.events, (unsigned long long)r.fences,
              (unsigned long long)r.fences_explored, (unsigned long long)r.states,
              (unsigned long long)r.violations, r.seconds);
  for (const std::string& rep : r.reports) std::printf("\nVIOLATION in %s: %s\n", w.name.c_str(), rep.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Power-loss simulation: crash every workload at every fence and check recovery", "crash_explorer"};
  ExploreOptions o;
  std::vector<std::string> only;
  bool full = false, list = false, expect_violations = false;
  app.add_option("-w,--workload", only, "run only these workloads (default: all)");
  app.add_option("--max-states", o.max_states, "crash states per workload; beyond it fences are sampled evenly")
      ->capture_default_str();
  app.add_option("--subsets", o.random_subsets, "random cache-line subsets per fence")->capture_default_str();
  app.add_option("--seed", o.seed, "seed for the random subsets")->capture_default_str();
  app.add_option("-j,--jobs", o.jobs, "threads checking crash states")->capture_default_str();
  app.add_flag("--full", full, "every fence, 16 random subsets each (local runs; takes long)");
  app.add_option("--ignore-fence-every", o.ignore_fence_every,
                 "fault injection: treat every Nth fence as absent (the run should then find violations)");
  app.add_flag("--expect-violations", expect_violations, "succeed only if violations are found");
  app.add_flag("--list", list, "list the workloads");
  CLI11_PARSE(app, argc, argv);
  if (full) {
    o.max_states = UINT64_MAX / 64;
    o.random_subsets = 16;
  }
  uint64_t violations = 0;
  std::printf("| workload | steps | events | fences | fences explored | crash states | violations | seconds |\n"
              "|---|---|---|---|---|---|---|---|\n");
  for (const Workload& w : pmemfuse::crash::workloads()) {
    if (list) {
      std::printf("%-10s %s\n", w.name.c_str(), w.covers.c_str());
      continue;
    }
    if (!only.empty() && std::find(only.begin(), only.end(), w.name) == only.end()) continue;
    auto r = pmemfuse::crash::explore(w, o);
    if (!r) {
      std::fprintf(stderr, "crash_explorer: %s: %s\n", w.name.c_str(), r.error().msg.c_str());
      return 2;
    }
    print_row(w, *r);
    violations += r->violations;
  }
  if (expect_violations) return violations ? 0 : 1;
  return violations ? 1 : 0;
}
