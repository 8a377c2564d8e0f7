/*
 * C reference for `npm run bench`: the physical limit of a spinning 64-byte round trip between two
 * processes on this machine.
 *
 *   pingpong <count> [size=64]
 *
 * Two processes (fork) share one anonymous MAP_SHARED mapping. The parent writes a `size`-byte
 * ping (a sequence number at both ends), then publishes it by storing the sequence number into
 * its word; the child spins on that word (with a pause instruction), checks and copies the
 * payload into its reply, and publishes the reply the same way; the parent spins on the reply
 * word and checks the payload. Each round trip is timed with clock_gettime(CLOCK_MONOTONIC)
 * (like the Node trials' performance.now(), the timer is inside every sample).
 *
 * After min(count, 10000) warm-up rounds it prints one JSON line, the shape of the Node rtt trials
 * (bench/fixtures/transport.mjs): {"median_us":..,"p99_us":..}
 *
 * BENCH_CHILD_CPU=<n> pins the child to CPU n (start the parent with `taskset -c <m>`), like the
 * Node trials. Spinning needs two CPUs: a waiter that has spun for a long while (~1 ms) yields its
 * CPU between polls, so a run placed on one CPU finishes (slowly) instead of burning whole slices.
 */
#define PROG "pingpong"
#include "common.h"


struct side {
  _Alignas(LINE) uint32_t seq; /* the published word, alone on its cache line */
  _Alignas(LINE) unsigned char payload[];
};

/* Spins until *word == want (acquire), pausing between polls. */
static void await_word(uint32_t *word, uint32_t want) {
  uint32_t polls = 0;
  while (__atomic_load_n(word, __ATOMIC_ACQUIRE) != want) {
    CPU_PAUSE();
    if (++polls >= YIELD_AFTER) {
      sched_yield();
      if (peer_gone() && __atomic_load_n(word, __ATOMIC_ACQUIRE) != want) {
        fprintf(stderr, "pingpong: the child exited early\n");
        exit(1);
      }
    }
  }
}

static void stamp(unsigned char *p, size_t n, uint32_t v) {
  memcpy(p, &v, 4);
  memcpy(p + n - 4, &v, 4);
}

static int check(const unsigned char *p, size_t n, uint32_t v) {
  uint32_t a, b;
  memcpy(&a, p, 4);
  memcpy(&b, p + n - 4, 4);
  return a == v && b == v;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: pingpong <count> [size=64]\n");
    return 2;
  }
  long count = strtol(argv[1], NULL, 10);
  long size = argc > 2 ? strtol(argv[2], NULL, 10) : 64;
  if (count < 1 || count > 1000000000L || size < 8 || size > 1 << 20) {
    fprintf(stderr, "pingpong: count must be 1..10^9 and size 8..1048576\n");
    return 2;
  }
  long warm = count < 10000 ? count : 10000;
  size_t sideBytes = (LINE + (size_t)size + LINE - 1) / LINE * LINE;
  unsigned char *mem = mmap(NULL, 2 * sideBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  struct side *req = (struct side *)mem;
  struct side *res = (struct side *)(mem + sideBytes);

  pid_t pid = fork_peer();
  if (pid == 0) {
    unsigned char *buf = malloc((size_t)size);
    for (uint32_t i = 1; i <= (uint32_t)(warm + count); i++) {
      await_word(&req->seq, i);
      memcpy(buf, req->payload, (size_t)size);
      if (!check(buf, (size_t)size, i)) {
        fprintf(stderr, "pingpong: ping %u corrupt\n", i);
        _exit(1);
      }
      memcpy(res->payload, buf, (size_t)size);
      __atomic_store_n(&res->seq, i, __ATOMIC_RELEASE);
    }
    _exit(0);
  }

  peer = pid;
  double *samples = malloc(sizeof(double) * (size_t)count);
  unsigned char *ping = malloc((size_t)size), *pong = malloc((size_t)size);
  if (!samples || !ping || !pong) die("malloc");
  memset(ping, 1, (size_t)size);
  for (uint32_t i = 1; i <= (uint32_t)(warm + count); i++) {
    double t = now_us();
    stamp(ping, (size_t)size, i);
    memcpy(req->payload, ping, (size_t)size);
    __atomic_store_n(&req->seq, i, __ATOMIC_RELEASE);
    await_word(&res->seq, i);
    memcpy(pong, res->payload, (size_t)size);
    if (!check(pong, (size_t)size, i)) {
      fprintf(stderr, "pingpong: pong %u corrupt\n", i);
      kill(pid, SIGKILL);
      return 1;
    }
    if (i > (uint32_t)warm) samples[i - warm - 1] = now_us() - t;
  }
  if (!peerReaped && waitpid(pid, &peerStatus, 0) < 0) die("waitpid");
  int status = peerStatus;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "pingpong: the child failed\n");
    return 1;
  }
  qsort(samples, (size_t)count, sizeof(double), cmp);
  printf("{\"median_us\":%.4f,\"p99_us\":%.4f}\n", samples[count / 2], samples[(size_t)(count * 0.99)]);
  return 0;
}
