/* platform_linux.c: platform.h for Linux (shm_open/mmap, futex, futex_waitv, /proc). */
#define _GNU_SOURCE
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <dlfcn.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
/* The futex ABI constants (linux/futex.h), written out so that the build needs no kernel headers
 * (musl toolchains ship none). */
#ifndef FUTEX_WAIT
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define FUTEX_PRIVATE_FLAG 128
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
#endif

/* Segments ------------------------------------------------------------------------------------- */

static int shm_path(const char *name, char *out, size_t cap) {
  int n = snprintf(out, cap, "/dev/shm/%s", name);
  return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

int plat_shm_create(const char *name, size_t size, int mode, void **addr, int *fdout, const char **syscall) {
  *syscall = "shm_open";
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) return -errno;
  int err = 0;
  /* shm_open applies the umask; the caller asked for exactly `mode`. */
  if (fchmod(fd, (mode_t)mode) != 0) { err = -errno; *syscall = "fchmod"; goto fail; }
  /* posix_fallocate both sets the size and reserves the pages on tmpfs. */
  int rc = posix_fallocate(fd, 0, (off_t)size);
  if (rc != 0) { err = -rc; *syscall = "posix_fallocate"; goto fail; }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) { err = -errno; *syscall = "mmap"; goto fail; }
  *addr = p;
  *fdout = fd;
  return 0;
fail:
  close(fd);
  shm_unlink(name);
  return err;
}

/* fstat as a system call: glibc before 2.33 exports no fstat symbol (only __fxstat64), so calling the
 * libc function would tie a build to 2.33+. The kernel's struct stat is the libc's on x86-64 and
 * arm64, with glibc and musl alike. */
static int plat_fstat(int fd, struct stat *st) {
  return (int)syscall(SYS_fstat, fd, st);
}

int plat_shm_open(const char *name, void **addr, plat_shm_info *info, int *fdout, const char **syscall) {
  *syscall = "shm_open";
  int fd = shm_open(name, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd < 0) return -errno;
  struct stat st;
  if (plat_fstat(fd, &st) != 0) { int e = -errno; *syscall = "fstat"; close(fd); return e; }
  info->size = (size_t)st.st_size;
  info->uid = (uint32_t)st.st_uid;
  info->gid = (uint32_t)st.st_gid;
  info->mode = (uint32_t)(st.st_mode & 07777);
  info->regular = S_ISREG(st.st_mode) ? 1 : 0;
  *addr = NULL;
  *fdout = -1;
  if (st.st_size > 0 && info->regular) {
    /* A sparse object (made with ftruncate alone, or truncated and grown again by a peer) would
     * raise SIGBUS at the first touch of a page when /dev/shm is full: reserve its pages now, so
     * that a full filesystem fails here with ENOSPC instead. */
    if ((uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size) {
      int rc = posix_fallocate(fd, 0, st.st_size);
      if (rc != 0) { *syscall = "posix_fallocate"; close(fd); return -rc; }
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { int e = -errno; *syscall = "mmap"; close(fd); return e; }
    *addr = p;
    *fdout = fd;
    return 0;
  }
  close(fd);
  return 0;
}

int plat_shm_check(int fd, size_t size) {
  struct stat st;
  if (plat_fstat(fd, &st) != 0) return -errno;
  int status = 0;
  if ((uint64_t)st.st_size < (uint64_t)size) {
    /* A peer shrank the object under our mapping: touching the lost pages would raise SIGBUS.
     * Give it its size back (the lost bytes read as zeros), then reserve the pages again. */
    if (ftruncate(fd, (off_t)size) != 0) return -errno;
    status = 1;
  }
  if ((uint64_t)st.st_blocks * 512 < (uint64_t)size || status) {
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc != 0) return -rc;
    if (!status) status = 2;
  }
  return status;
}

int plat_close(int fd) { return close(fd) == 0 ? 0 : -errno; }

int plat_shm_publish(const char *tmp, const char *name, const char **syscall) {
  char from[PATH_MAX], to[PATH_MAX];
  if (shm_path(tmp, from, sizeof from) || shm_path(name, to, sizeof to)) return -ENAMETOOLONG;
  *syscall = "link";
  /* link(2) fails with EEXIST instead of replacing: exactly one creator wins the name, and the
   * name only ever points at a fully initialized object. */
  if (link(from, to) != 0) return -errno;
  unlink(from);
  return 0;
}

int plat_shm_unlink(const char *name) { return shm_unlink(name) == 0 ? 0 : -errno; }

int plat_unmap(void *addr, size_t size) { return munmap(addr, size) == 0 ? 0 : -errno; }

/* Futexes ---------------------------------------------------------------------------------------- */

int64_t plat_monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct timespec to_ts(int64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
  return ts;
}

int plat_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
  struct timespec ts, *pts = NULL;
  if (timeout_ns >= 0) { ts = to_ts(timeout_ns); pts = &ts; }
  /* No FUTEX_PRIVATE_FLAG: the word lives in a MAP_SHARED mapping and other processes wake it. */
  long rc = syscall(SYS_futex, addr, FUTEX_WAIT, expected, pts, NULL, 0);
  return rc == 0 ? 0 : -errno;
}

int plat_futex_wait_private(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
  struct timespec ts, *pts = NULL;
  if (timeout_ns >= 0) { ts = to_ts(timeout_ns); pts = &ts; }
  long rc = syscall(SYS_futex, addr, FUTEX_WAIT | FUTEX_PRIVATE_FLAG, expected, pts, NULL, 0);
  return rc == 0 ? 0 : -errno;
}

int plat_futex_wake(uint32_t *addr, int count) {
  long rc = syscall(SYS_futex, addr, FUTEX_WAKE, count, NULL, NULL, 0);
  return rc >= 0 ? (int)rc : -errno;
}

int plat_futex_wake_private(uint32_t *addr, int count) {
  long rc = syscall(SYS_futex, addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, count, NULL, NULL, 0);
  return rc >= 0 ? (int)rc : -errno;
}

int plat_futex_still(uint32_t *addr, uint32_t expected) {
  /* A zero relative timeout makes the kernel compare the value and return at once. The kernel
   * reads the word, so an unmapped address is -EFAULT, never a crash of this thread. */
  struct timespec zero = {0, 0};
  long rc = syscall(SYS_futex, addr, FUTEX_WAIT, expected, &zero, NULL, 0);
  if (rc == 0) return 1; /* woken in that instant: treat as changed by the caller's re-check */
  if (errno == ETIMEDOUT) return 1;
  if (errno == EAGAIN) return 0;
  if (errno == EINTR) return 1;
  return -errno;
}

struct futex_waitv_k {
  uint64_t val;
  uint64_t uaddr;
  uint32_t flags;
  uint32_t reserved;
};

int plat_futex_waitv(const plat_waitv_entry *entries, int count, int64_t deadline_ns) {
  struct futex_waitv_k vec[PLAT_WAITV_MAX];
  if (count <= 0 || count > PLAT_WAITV_MAX) return -EINVAL;
  for (int i = 0; i < count; i++) {
    vec[i].val = entries[i].expected;
    vec[i].uaddr = (uint64_t)(uintptr_t)entries[i].addr;
    vec[i].flags = FUTEX_32 | (entries[i].is_private ? FUTEX_PRIVATE_FLAG : 0);
    vec[i].reserved = 0;
  }
  struct timespec ts, *pts = NULL;
  if (deadline_ns >= 0) { ts = to_ts(deadline_ns); pts = &ts; }
  long rc = syscall(SYS_futex_waitv, vec, (unsigned)count, 0, pts, CLOCK_MONOTONIC);
  return rc >= 0 ? (int)rc : -errno;
}

int plat_have_futex_waitv(void) {
  static atomic_int known; /* 0 unknown, 1 yes, 2 no */
  int k = atomic_load_explicit(&known, memory_order_relaxed);
  if (k == 0) {
    const char *env = getenv("SHMKIT_NO_FUTEX_WAITV");
    if (env && env[0] == '1') k = 2;
    else {
      /* A word whose value differs from the expected one: EAGAIN at once where futex_waitv exists. */
      uint32_t word = 1;
      plat_waitv_entry e = {&word, 0, 1};
      /* Anything but EAGAIN (ENOSYS on an old kernel, EPERM from a seccomp filter that refuses
       * unknown system calls) means futex_waitv cannot be used here. */
      k = plat_futex_waitv(&e, 1, PLAT_INFINITE) == -EAGAIN ? 1 : 2;
    }
    atomic_store_explicit(&known, k, memory_order_relaxed);
  }
  return k == 1;
}

/* Process identity ------------------------------------------------------------------------------ */

/* Reads state (field 3) and starttime (field 22) from /proc/<pid>/stat. The command name (field 2)
 * may contain spaces and parentheses, so parsing starts after the last ')'. */
static int read_stat(uint32_t pid, char *state, uint64_t *start) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%u/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  int e = errno;
  close(fd);
  if (n <= 0) return n < 0 ? -e : -EIO;
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ') return -EIO;
  p += 2;
  *state = *p;
  /* p is at field 3; skip to field 22. */
  for (int field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (!p) return -EIO;
    p++;
  }
  char *end;
  errno = 0;
  unsigned long long v = strtoull(p, &end, 10);
  if (errno || end == p) return -EIO;
  *start = v;
  return 0;
}

int plat_self_identity(uint32_t *pid, uint64_t *start) {
  char state;
  *pid = (uint32_t)getpid();
  return read_stat(*pid, &state, start);
}

int plat_identity_alive(uint32_t pid, uint64_t start, int start_bits) {
  char state;
  uint64_t actual;
  if (pid == 0) return 0;
  int rc = read_stat(pid, &state, &actual);
  if (rc == -ENOENT || rc == -ESRCH || rc == -EACCES) {
    /* /proc may hide other users' processes (hidepid): ask the kernel directly. EPERM means the
     * process exists but belongs to someone else; without its start time, count it as alive. */
    if (kill((pid_t)pid, 0) == 0 || errno == EPERM) return 1;
    return 0;
  }
  if (rc < 0) return rc;
  if (state == 'Z' || state == 'X' || state == 'x') return 0;
  uint64_t mask = start_bits >= 64 ? ~0ULL : ((1ULL << start_bits) - 1);
  return (actual & mask) == (start & mask) ? 1 : 0;
}

/* Named semaphores ------------------------------------------------------------------------------ */

struct plat_sem { sem_t *sem; };

int plat_sem_open(const char *name, int create, int exclusive, int mode, unsigned value,
                  plat_sem **out, const char **syscall) {
  *syscall = "sem_open";
  int flags = create ? (O_CREAT | (exclusive ? O_EXCL : 0)) : 0;
  sem_t *s = create ? sem_open(name, flags, (mode_t)mode, value) : sem_open(name, 0);
  if (s == SEM_FAILED) return -errno;
  if (create && exclusive) {
    /* sem_open applies the umask; the caller asked for exactly `mode` (glibc: /dev/shm/sem.NAME). */
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "/dev/shm/sem.%s", name[0] == '/' ? name + 1 : name) < (int)sizeof path)
      chmod(path, (mode_t)mode);
  }
  plat_sem *ps = malloc(sizeof *ps);
  if (!ps) { sem_close(s); return -ENOMEM; }
  ps->sem = s;
  *out = ps;
  return 0;
}

int plat_sem_post(plat_sem *s) { return sem_post(s->sem) == 0 ? 0 : -errno; }
int plat_sem_trywait(plat_sem *s) { return sem_trywait(s->sem) == 0 ? 0 : -errno; }

/* sem_clockwait (waits on CLOCK_MONOTONIC, immune to clock changes) exists in glibc 2.30+ and in
 * musl 1.2.5+. It is looked up once at run time, so that one build loads everywhere. */
typedef int (*clockwait_t)(sem_t *, clockid_t, const struct timespec *);
static clockwait_t clockwait_fn(void) {
  static _Atomic(clockwait_t) fn;
  static atomic_int looked;
  if (!atomic_load_explicit(&looked, memory_order_acquire)) {
    atomic_store_explicit(&fn, (clockwait_t)dlsym(RTLD_DEFAULT, "sem_clockwait"), memory_order_relaxed);
    atomic_store_explicit(&looked, 1, memory_order_release);
  }
  return atomic_load_explicit(&fn, memory_order_relaxed);
}

int plat_sem_timedwait(plat_sem *s, int64_t timeout_ns) {
  if (timeout_ns < 0) return sem_wait(s->sem) == 0 ? 0 : -errno;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t at = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + timeout_ns;
  ts = to_ts(at);
  if (clockwait_fn() != NULL) return clockwait_fn()(s->sem, CLOCK_MONOTONIC, &ts) == 0 ? 0 : -errno;
  /* No sem_clockwait (glibc before 2.30): the same deadline on the realtime clock. */
  struct timespec now_mono, now_real;
  clock_gettime(CLOCK_MONOTONIC, &now_mono);
  clock_gettime(CLOCK_REALTIME, &now_real);
  int64_t left = at - ((int64_t)now_mono.tv_sec * 1000000000LL + now_mono.tv_nsec);
  if (left < 0) left = 0;
  ts = to_ts((int64_t)now_real.tv_sec * 1000000000LL + now_real.tv_nsec + left);
  return sem_timedwait(s->sem, &ts) == 0 ? 0 : -errno;
}

int plat_sem_getvalue(plat_sem *s, int *value) { return sem_getvalue(s->sem, value) == 0 ? 0 : -errno; }

int plat_sem_close(plat_sem *s) {
  int rc = sem_close(s->sem) == 0 ? 0 : -errno;
  free(s);
  return rc;
}

int plat_sem_unlink(const char *name) { return sem_unlink(name) == 0 ? 0 : -errno; }

/* Doorbells ------------------------------------------------------------------------------------ */

/* "\0shmkit.bell.xxxxxxxx": an abstract-namespace address (Linux only; nothing on disk). */
static socklen_t bell_addr(uint32_t id, struct sockaddr_un *a) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "shmkit.bell.%08x", id);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

int plat_bell_open(uint32_t *id) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  for (int attempt = 0; attempt < 64; attempt++) {
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint32_t)(plat_monotonic_ns() ^ ((uint64_t)getpid() << 16) ^ (uint32_t)attempt);
    if (r == 0) continue;
    struct sockaddr_un a;
    socklen_t len = bell_addr(r, &a);
    if (bind(fd, (struct sockaddr *)&a, len) == 0) {
      *id = r;
      return fd;
    }
    if (errno != EADDRINUSE) break;
  }
  int err = -errno;
  close(fd);
  return err ? err : -EADDRINUSE;
}

int plat_bell_sender(void) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

int plat_bell_ring(int sender, uint32_t id) {
  struct sockaddr_un a;
  socklen_t len = bell_addr(id, &a);
  const char one = 1;
  for (;;) {
    if (sendto(sender, &one, 1, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&a, len) == 1) return 0;
    if (errno == EINTR) continue;
    /* A full queue means rings are already pending: the owner will wake anyway. */
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return 0;
    return -errno;
  }
}

/* Drains pending rings. recvmmsg takes up to 32 datagrams in one system call, so the common
 * case (one ring) costs one call instead of a recv plus the recv that reports EAGAIN. */
int plat_bell_drain(int fd) {
  enum { N = 32 };
  char bytes[N];
  struct iovec iov[N];
  struct mmsghdr msgs[N];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < N; i++) {
    iov[i].iov_base = &bytes[i];
    iov[i].iov_len = 1;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int total = 0;
  for (;;) {
    int r = recvmmsg(fd, msgs, N, MSG_DONTWAIT, NULL);
    if (r > 0) {
      total += r;
      if (r < N) return total;
      continue;
    }
    if (r == 0) return total;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return total;
    return -errno;
  }
}

void plat_bell_close(int fd) { close(fd); }
