/*
 * platform.h: the one interface between shmkit's Node-API bindings and the operating system.
 *
 * Every function returns 0 (or a non-negative result) on success and -errno on failure. Where a
 * failure can come from several system calls, `*syscall` names the one that failed. Nothing here
 * knows about JavaScript. platform_linux.c implements it today; macOS (os_sync_wait_on_address,
 * shm_open without a filesystem) and Windows (CreateFileMappingW, named events) implement the same
 * declarations later.
 */
#ifndef SHMKIT_PLATFORM_H
#define SHMKIT_PLATFORM_H

#include "glibc_compat.h"

#include <stddef.h>
#include <stdint.h>

#define PLAT_INFINITE (-1LL)

/* Shared memory segments ------------------------------------------------------------------- */

/* Creates a new object `name` (exclusive), sets its mode exactly, reserves `size` bytes of backing
 * store (so a full filesystem fails here, not with SIGBUS later) and maps it read/write. The
 * descriptor stays open (`*fd`) for plat_shm_check; plat_close closes it with the mapping. */
int plat_shm_create(const char *name, size_t size, int mode, void **addr, int *fd, const char **syscall);

typedef struct {
  size_t size;
  uint32_t uid, gid, mode;
  int regular;
} plat_shm_info;

/* Opens an existing object (never through a symbolic link). `info` comes from fstat. A zero size,
 * or an object that is not a regular file, is returned without mapping (`*addr` NULL, `*fd` -1).
 * Missing backing pages are reserved before mapping. */
int plat_shm_open(const char *name, void **addr, plat_shm_info *info, int *fd, const char **syscall);

/* Checks that the object behind `fd` still has `size` bytes with every page reserved, and repairs
 * it if a peer truncated it: 0 intact, 1 it had shrunk (size restored, lost bytes now zero),
 * 2 pages had been discarded (reserved again), or -errno (e.g. -ENOSPC). */
int plat_shm_check(int fd, size_t size);
int plat_close(int fd);

/* Atomically gives the fully initialized object `tmp` its final `name`; fails with -EEXIST if the
 * name is taken. On success `tmp` no longer exists. */
int plat_shm_publish(const char *tmp, const char *name, const char **syscall);

int plat_shm_unlink(const char *name);
int plat_unmap(void *addr, size_t size);

/* Futexes shared between processes ---------------------------------------------------------- */

/* Sleeps while *addr == expected, at most timeout_ns (PLAT_INFINITE: forever).
 * 0: woken (maybe spuriously); -EAGAIN: value differed; -ETIMEDOUT; -EINTR. */
int plat_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns);
/* The same on a word private to this process (FUTEX_PRIVATE_FLAG; woken by plat_futex_wake_private). */
int plat_futex_wait_private(uint32_t *addr, uint32_t expected, int64_t timeout_ns);
/* 1 when the kernel has futex_waitv (Linux 5.16+), 0 when not. Probed once; SHMKIT_NO_FUTEX_WAITV=1 in
 * the environment answers 0, to test the fallback on any kernel. */
int plat_have_futex_waitv(void);
/* Wakes up to `count` sleepers; returns how many were woken. */
int plat_futex_wake(uint32_t *addr, int count);

/* Waits on several words at once (Linux futex_waitv). Entry 0 is a private control word. Returns
 * the index of a woken entry, -EAGAIN if some value already differed, -ETIMEDOUT, -EINTR. */
#define PLAT_WAITV_MAX 128
typedef struct {
  uint32_t *addr;
  uint32_t expected;
  int is_private;
} plat_waitv_entry;
int plat_futex_waitv(const plat_waitv_entry *entries, int count, int64_t deadline_ns);
/* Tells, without sleeping, whether a shared word still holds `expected`: 1 yes, 0 no, -EFAULT. */
int plat_futex_still(uint32_t *addr, uint32_t expected);
int plat_futex_wake_private(uint32_t *addr, int count);
int64_t plat_monotonic_ns(void);

/* Process identity ---------------------------------------------------------------------------- */

/* The calling process: its pid and its start time (opaque units, stable for its lifetime). */
int plat_self_identity(uint32_t *pid, uint64_t *start);
/* 1: a live process with this pid and start time exists; 0: it is gone (or a zombie). Only the
 * low `start_bits` bits of the start time are compared. */
int plat_identity_alive(uint32_t pid, uint64_t start, int start_bits);

/* Doorbells ------------------------------------------------------------------------------------
 * A doorbell is a wake-up that an event loop can poll like any file descriptor, and that any
 * process on the machine can ring knowing only a 32-bit id (kept in shared memory). It lets an
 * asynchronous waiter sleep in the event loop itself instead of in a helper thread: one thread
 * wake-up per wake instead of two. Linux: a datagram socket in the abstract namespace (no file to
 * clean up; the kernel drops the name when the process dies). */

/* Opens a doorbell: returns its pollable fd (non-blocking) or -errno; `*id` is never 0. */
int plat_bell_open(uint32_t *id);
/* Opens a socket to ring doorbells from: fd or -errno. */
int plat_bell_sender(void);
/* Rings doorbell `id`. 0 (also when the bell already has rings pending), -ECONNREFUSED when no
 * such doorbell exists any more (its process is gone), other -errno. */
int plat_bell_ring(int sender, uint32_t id);
/* Consumes every pending ring; returns how many or -errno. */
int plat_bell_drain(int fd);
void plat_bell_close(int fd);

/* POSIX named semaphores ---------------------------------------------------------------------- */
typedef struct plat_sem plat_sem;
int plat_sem_open(const char *name, int create, int exclusive, int mode, unsigned value,
                  plat_sem **out, const char **syscall);
int plat_sem_post(plat_sem *sem);
int plat_sem_trywait(plat_sem *sem);                      /* 0 or -EAGAIN */
int plat_sem_timedwait(plat_sem *sem, int64_t timeout_ns); /* 0, -ETIMEDOUT or -EINTR */
int plat_sem_getvalue(plat_sem *sem, int *value);
int plat_sem_close(plat_sem *sem);
int plat_sem_unlink(const char *name);

#endif
