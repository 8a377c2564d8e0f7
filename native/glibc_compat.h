/*
 * glibc_compat.h: binds the addon to the oldest glibc symbol versions, so that one glibc build loads
 * on glibc 2.28 and later (every Linux that Node.js 20+ supports), whatever glibc it was built on.
 *
 * glibc 2.34 moved the POSIX semaphore, shared memory and thread functions from libpthread and librt
 * into libc and gave them new default versions (GLIBC_2.34); 2.32 and 2.33 did the same for
 * pthread_sigmask and fstat64. A build on a current system therefore asks for those versions and
 * fails to load on an older glibc with "version `GLIBC_2.34' not found". The `.symver` directives
 * below ask for the architecture's base version instead, which every glibc still provides (in libc
 * since 2.34, in libpthread or librt before, which the build names as needed libraries). fstat goes
 * through plat_fstat (a plain system call) and sem_clockwait is looked up at run time, because their
 * current symbols do not exist in old glibc at all.
 *
 * Included first by platform.h, so by every translation unit. Nothing changes on musl.
 */
#ifndef SHMKIT_GLIBC_COMPAT_H
#define SHMKIT_GLIBC_COMPAT_H

#include <features.h>

#if defined(__GLIBC__)
#if defined(__x86_64__)
#define SHMKIT_GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define SHMKIT_GLIBC_BASE "GLIBC_2.17"
#endif
#endif

#ifdef SHMKIT_GLIBC_BASE
#define SHMKIT_PIN(sym) __asm__(".symver " #sym "," #sym "@" SHMKIT_GLIBC_BASE)
SHMKIT_PIN(sem_open);
SHMKIT_PIN(sem_close);
SHMKIT_PIN(sem_unlink);
SHMKIT_PIN(sem_post);
SHMKIT_PIN(sem_wait);
SHMKIT_PIN(sem_trywait);
SHMKIT_PIN(sem_timedwait);
SHMKIT_PIN(sem_getvalue);
SHMKIT_PIN(shm_open);
SHMKIT_PIN(shm_unlink);
SHMKIT_PIN(pthread_create);
SHMKIT_PIN(pthread_join);
SHMKIT_PIN(pthread_attr_setstacksize);
SHMKIT_PIN(pthread_sigmask);
SHMKIT_PIN(dlsym);
#endif

#endif
