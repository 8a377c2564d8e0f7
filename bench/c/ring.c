/*
 * C reference for `npm run bench`: the physical limit of a single-producer/single-consumer ring in
 * shared memory with the record design of shmkit's channel (src/channel/channel.ts).
 *
 *   ring <count> [size=64]
 *
 * Two processes (fork) share one anonymous MAP_SHARED mapping: a `tail` word and a `head` word on
 * cache lines of their own, then a 4 MiB ring (the capacity of the Node throughput trials).
 * As in shmkit's channel:
 * - tail and head are 32-bit positions that wrap mod 2^32; `pos & (capacity - 1)` is the index;
 * - a record is `u32 length, u32 tag, payload`, padded to 8 bytes, with tag = pos ^ TAG_MAGIC;
 *   a record never wraps: a PAD record fills the end of the ring instead;
 * - the producer (the child) writes the whole record, then publishes it with one sequentially
 *   consistent CAS of tail; the consumer (the parent) reads tail, checks the record's tag, copies
 *   the payload out, then exchanges head. Both sides cache the other side's word and spin on it
 *   (with a pause instruction) only when the ring looks empty or full.
 * Every message carries its sequence number at both ends; the consumer checks both.
 *
 * Prints one JSON line, the shape of the Node throughput trials (bench/fixtures/transport.mjs):
 * {"value":..,"unit":"msg/s","count":..} (MB/s for sizes above 64 bytes), the consumer's rate
 * from its first message to its last.
 *
 * BENCH_CHILD_CPU=<n> pins the producer to CPU n. A waiter that has spun for a long while (~1 ms)
 * yields its CPU between polls, so a run placed on one CPU still finishes.
 */
#define PROG "ring"
#include "common.h"

#define CAPACITY (1u << 22)
#define MASK (CAPACITY - 1)
#define HEADER 8u
#define PAD 0xffffffffu
#define TAG_MAGIC 0x5a17c0deu

struct ctl {
  _Alignas(LINE) uint32_t tail;
  _Alignas(LINE) uint32_t head;
  _Alignas(4096) unsigned char ring[];
};

static void fail(const char *what, uint32_t at) {
  fprintf(stderr, "ring: %s at %u\n", what, at);
  exit(1);
}

static inline uint32_t record_size(uint32_t len) { return HEADER + ((len + 7u) & ~7u); }

static inline void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint32_t get32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static void producer(struct ctl *c, uint32_t count, uint32_t size) {
  unsigned char *msg = malloc(size);
  if (!msg) die("malloc");
  memset(msg, 7, size);
  uint32_t pos = 0, headCache = 0, polls = 0;
  const uint32_t rec = record_size(size);
  for (uint32_t i = 0; i < count; i++) {
    put32(msg, i);
    put32(msg + size - 4, i);
    uint32_t idx = pos & MASK;
    uint32_t toEnd = CAPACITY - idx;
    uint32_t need = rec <= toEnd ? rec : toEnd + rec;
    while (CAPACITY - (pos - headCache) < need) {
      headCache = __atomic_load_n(&c->head, __ATOMIC_ACQUIRE);
      if (CAPACITY - (pos - headCache) >= need) break;
      CPU_PAUSE();
      if (++polls >= YIELD_AFTER) sched_yield();
    }
    polls = 0;
    uint32_t start = pos; /* the published tail: the CAS below expects it */
    if (need != rec) { /* pad to the end of the ring; the record starts at index 0 */
      put32(c->ring + idx, PAD);
      put32(c->ring + idx + 4, pos ^ TAG_MAGIC);
      pos += toEnd;
      idx = 0;
    }
    put32(c->ring + idx, size);
    put32(c->ring + idx + 4, pos ^ TAG_MAGIC);
    memcpy(c->ring + idx + HEADER, msg, size);
    uint32_t expected = start, next = pos + rec;
    if (!__atomic_compare_exchange_n(&c->tail, &expected, next, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) fail("tail changed under the producer", pos);
    pos = next;
  }
  free(msg);
}

static double consumer(struct ctl *c, uint32_t count, uint32_t size) {
  unsigned char *out = malloc(size);
  if (!out) die("malloc");
  uint32_t head = 0, tailCache = 0, polls = 0;
  double t0 = 0;
  for (uint32_t i = 0; i < count;) {
    while (head == tailCache) {
      tailCache = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
      if (head != tailCache) break;
      CPU_PAUSE();
      if (++polls >= YIELD_AFTER) {
        sched_yield();
        if (peer_gone() && __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE) == head) fail("the producer exited early; consumer", head);
      }
    }
    polls = 0;
    uint32_t avail = tailCache - head, idx = head & MASK;
    uint32_t len = get32(c->ring + idx);
    if (get32(c->ring + idx + 4) != (head ^ TAG_MAGIC)) fail("bad tag", head);
    if (len == PAD) {
      if (CAPACITY - idx > avail) fail("padding runs past the tail", head);
      head += CAPACITY - idx;
      continue;
    }
    uint32_t rec = record_size(len);
    if (len != size || rec > avail || idx + rec > CAPACITY) fail("bad record", head);
    memcpy(out, c->ring + idx + HEADER, len);
    if (get32(out) != i || get32(out + len - 4) != i) fail("payload corrupt", i);
    head += rec;
    __atomic_exchange_n(&c->head, head, __ATOMIC_SEQ_CST);
    if (i == 0) t0 = now_us();
    i++;
  }
  double t1 = now_us();
  free(out);
  return t1 - t0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: ring <count> [size=64]\n");
    return 2;
  }
  long count = strtol(argv[1], NULL, 10);
  long size = argc > 2 ? strtol(argv[2], NULL, 10) : 64;
  if (count < 2 || count > 0x7fffffffL || size < 8 || size > (long)(CAPACITY / 4)) {
    fprintf(stderr, "ring: count must be 2..2^31-1 and size 8..%u\n", CAPACITY / 4);
    return 2;
  }
  struct ctl *c = mmap(NULL, sizeof(struct ctl) + CAPACITY, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (c == MAP_FAILED) die("mmap");

  pid_t pid = fork_peer();
  if (pid == 0) {
    producer(c, (uint32_t)count, (uint32_t)size);
    _exit(0);
  }
  peer = pid;
  double us = consumer(c, (uint32_t)count, (uint32_t)size);
  if (!peerReaped && waitpid(pid, &peerStatus, 0) < 0) die("waitpid");
  int status = peerStatus;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "ring: the producer failed\n");
    return 1;
  }
  double perSec = (double)(count - 1) / us * 1e6;
  if (size <= 64) printf("{\"value\":%.1f,\"unit\":\"msg/s\",\"count\":%ld}\n", perSec, count);
  else printf("{\"value\":%.1f,\"unit\":\"MB/s\",\"count\":%ld}\n", perSec * (double)size / 1e6, count);
  return 0;
}
