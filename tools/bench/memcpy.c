// tools/bench/memcpy.c: the memory bandwidth a DAX read or write can reach at best, for
// tools/bench/peers.sh (built there with cc -O2).
//
//   memcpy FILE [PASSES]
//
// Maps FILE (a pre-faulted /dev/shm file made like the pmemfuse images, not an image in
// use: the writes would corrupt it) MAP_SHARED with every page populated, then copies
// 1 MiB at a time, as fio with bs=1M does through read(2)/write(2): from a 1 MiB private
// buffer over the whole mapping (write), and from the whole mapping into the buffer (read),
// on one thread, PASSES times each (default 5). Prints "write GB/s" and "read GB/s"
// (1e9 bytes), the median of the passes.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: memcpy FILE [PASSES]\n");
    return 2;
  }
  int passes = argc > 2 ? atoi(argv[2]) : 5;
  if (passes < 1 || passes > 100) passes = 5;
  int fd = open(argv[1], O_RDWR);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    perror(argv[1]);
    return 1;
  }
  size_t size = st.st_size / CHUNK * CHUNK;
  if (size == 0) {
    fprintf(stderr, "memcpy: %s is smaller than 1 MiB\n", argv[1]);
    return 1;
  }
  char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  char *buf = aligned_alloc(4096, CHUNK);
  if (map == MAP_FAILED || !buf) {
    perror("mmap");
    return 1;
  }
  memset(buf, 0x5a, CHUNK);  // faulted in, as fio's buffer is
  double w[100], r[100];
  volatile char sink = 0;
  for (int p = 0; p < passes; p++) {
    double t0 = now();
    for (size_t off = 0; off < size; off += CHUNK) memcpy(map + off, buf, CHUNK);
    w[p] = size / (now() - t0) / 1e9;
    t0 = now();
    for (size_t off = 0; off < size; off += CHUNK) {
      memcpy(buf, map + off, CHUNK);
      sink += buf[off / CHUNK % CHUNK];  // keeps the copies from being optimized away
    }
    r[p] = size / (now() - t0) / 1e9;
  }
  (void)sink;
  printf("write %.2f\nread %.2f\n", median(w, passes), median(r, passes));
  return 0;
}
