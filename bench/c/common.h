/* common.h: what the C reference programs share (spinning, the clock, watching the peer process).
 * Include after defining PROG (the program's name, for error messages). */
#ifndef SHMKIT_BENCH_COMMON_H
#define SHMKIT_BENCH_COMMON_H
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define CPU_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define CPU_PAUSE() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_PAUSE() __asm__ __volatile__("" ::: "memory")
/* Forks the peer process: in the child (returns 0) it dies with its parent and, when
 * BENCH_CHILD_CPU is set, runs pinned to that CPU (placement experiments, see docs/benchmarks.md). */
static pid_t fork_peer(void) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    const char *cpu = getenv("BENCH_CHILD_CPU");
    if (cpu && *cpu) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(atoi(cpu), &set);
      if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
    }
  }
  return pid;
}

#endif

#define LINE 64
#define YIELD_AFTER (1u << 14) /* polls before a waiter starts yielding its CPU */

static void die(const char *what) {
  fprintf(stderr, PROG ": %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* The parent's view of its child: a waiter that has spun for long checks that the child still runs. */
static pid_t peer = 0;
static int peerStatus = 0, peerReaped = 0;

static int peer_gone(void) {
  if (peer > 0 && !peerReaped && waitpid(peer, &peerStatus, WNOHANG) == peer) peerReaped = 1;
  return peerReaped;
}

/* Forks the peer process: in the child (returns 0) it dies with its parent and, when
 * BENCH_CHILD_CPU is set, runs pinned to that CPU (placement experiments, see docs/benchmarks.md). */
static pid_t fork_peer(void) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    const char *cpu = getenv("BENCH_CHILD_CPU");
    if (cpu && *cpu) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(atoi(cpu), &set);
      if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
    }
  }
  return pid;
}

#endif
