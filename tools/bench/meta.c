// tools/bench/meta.c: metadata rates for tools/bench/peers.sh (built there with cc -O2).
//
//   meta DIR N [NDIRS]
//
// Creates N empty files (open O_CREAT|O_EXCL, close), then stats each of them, then unlinks
// each of them, and prints one line per phase: "create|stat|unlink OPS_PER_S". With NDIRS
// (default 0: all N files in DIR/flat), the files are spread over NDIRS directories
// DIR/tree/dNNN, N/NDIRS each; those directories are made before and removed after the
// timed phases, outside the timing.
// The stat phase follows the create phase at once, so it sees what the kernel still has
// cached from the creates (for FUSE: within the entry and attribute timeouts).
// Every call goes through a descriptor of the file's directory (openat, fstatat, unlinkat),
// as tar, rm and git do: path walks from the root would be timed too otherwise.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *name) {
  fprintf(stderr, "meta: %s %s: %s\n", what, name, strerror(errno));
  exit(1);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

enum phase { CREATE, STAT, UNLINK };

// One phase over every file: file i lives in directory i / per (of ndirs descriptors).
static double run(enum phase p, const int *dfd, long n, long per) {
  char name[32];
  struct stat st;
  double t0 = now();
  for (long i = 0; i < n; i++) {
    int d = dfd[i / per];
    snprintf(name, sizeof name, "f%07ld", i);
    if (p == CREATE) {
      int fd = openat(d, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0 || close(fd) != 0) die("create", name);
    } else if (p == STAT) {
      if (fstatat(d, name, &st, 0) != 0) die("stat", name);
    } else if (unlinkat(d, name, 0) != 0) {
      die("unlink", name);
    }
  }
  return n / (now() - t0);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: meta DIR N [NDIRS]\n");
    return 2;
  }
  long n = atol(argv[2]), ndirs = argc > 3 ? atol(argv[3]) : 0;
  int flat = ndirs == 0;
  if (flat) ndirs = 1;
  if (n <= 0 || n % ndirs) {
    fprintf(stderr, "meta: N must be a positive multiple of NDIRS\n");
    return 2;
  }
  char top[4096], sub[4200];
  snprintf(top, sizeof top, "%s/%s", argv[1], flat ? "flat" : "tree");
  if (mkdir(top, 0755) != 0) die("mkdir", top);
  int *dfd = calloc(ndirs, sizeof *dfd);
  for (long d = 0; d < ndirs; d++) {
    if (flat) snprintf(sub, sizeof sub, "%s", top);
    else snprintf(sub, sizeof sub, "%s/d%03ld", top, d);
    if (!flat && mkdir(sub, 0755) != 0) die("mkdir", sub);
    dfd[d] = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd[d] < 0) die("open", sub);
  }
  static const char *names[] = {"create", "stat", "unlink"};
  for (int p = CREATE; p <= UNLINK; p++) printf("%s %.0f\n", names[p], run(p, dfd, n, n / ndirs));
  for (long d = 0; d < ndirs; d++) {
    close(dfd[d]);
    snprintf(sub, sizeof sub, "%s/d%03ld", top, d);
    if (!flat && rmdir(sub) != 0) die("rmdir", sub);
  }
  if (rmdir(top) != 0) die("rmdir", top);
  return 0;
}
