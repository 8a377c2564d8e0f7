/* waiter.c: asynchronous futex waits that block neither the event loop nor the libuv threadpool.
 *
 * Dedicated waiter threads each sleep in one futex_waitv call on up to 127 user words plus a
 * private control word (entry 0). Adding or cancelling a wait bumps the control word and wakes the
 * thread, which rebuilds its set. Results go back to JavaScript through one threadsafe function
 * that drains a completion queue. The waiter threads never read user memory themselves: only the
 * kernel does (futex_waitv, and a zero-timeout FUTEX_WAIT to test a value), so a segment unmapped
 * under a pending wait yields EFAULT, never a crash.
 *
 * Liveness: the threadsafe function is ref'd while at least one ref'd wait is pending and unref'd
 * when none is, so a pending wait keeps Node alive (unless its caller unref'd it: asyncRef) and an
 * idle shmkit never does.
 *
 * Kernels before Linux 5.16 have no futex_waitv. There each waiter thread holds one wait and sleeps
 * in a plain FUTEX_WAIT on its word, in slices of SLICE_NS so that it notices new orders even if a
 * wake-up is lost; a cancel or a stop wakes the word itself (a spurious wake-up for other waiters on
 * it, which every waiter tolerates). Up to MAX_THREADS waits are then pending at once.
 *
 * Status delivered to JS: 0 woken or value changed (the caller re-checks), 1 timed out,
 * 2 cancelled, negative: -errno. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "platform.h"

#define PER_THREAD_WAITV (PLAT_WAITV_MAX - 1)
#define MAX_THREADS 256
#define SLICE_NS (50LL * 1000 * 1000)
/* Waits one thread holds: up to 127 with futex_waitv, 1 without. */
static int per_thread(void) { return plat_have_futex_waitv() ? PER_THREAD_WAITV : 1; }
/* A waiter thread with nothing to wait for exits after this long: idle costs no thread. */
#define IDLE_EXIT_NS (1000LL * 1000 * 1000)
#define ST_WOKEN 0
#define ST_TIMEDOUT 1
#define ST_CANCELLED 2

typedef struct req {
  uint32_t id;
  uint32_t *addr;
  uint32_t expected;
  int64_t deadline; /* monotonic ns, or INT64_MAX */
  int cancelled;
  int refd;  /* counts in st->pending; changed only under st->lock */
  struct req *next;
} req;

struct state;

typedef struct wthread_ {
  struct state *st;
  pthread_t th;
  _Atomic uint32_t ctl;
  req *active[PER_THREAD_WAITV]; /* changed only by the thread, under st->lock */
  int nactive;
  req *incoming;           /* under st->lock */
  int assigned;            /* incoming + active, under st->lock */
  int stop;                /* under st->lock */
  struct wthread_ *next_exited; /* under st->lock: threads that left, to be joined */
} wthread;

typedef struct { uint32_t id; int32_t status; int refd; } done_t;

typedef struct state {
  pthread_mutex_t lock;
  wthread *threads[MAX_THREADS];
  int nthreads;
  wthread *exited; /* threads that left st->threads after idling; joined by reap() */
  done_t *done;
  size_t ndone, capdone;
  int signalled;
  /* main thread only */
  napi_threadsafe_function tsfn;
  uint32_t next_id;
  int64_t pending;
  int refd;
} state;

static void hold_alive(napi_env env, state *st);

/* Called with st->lock held. */
static void complete(state *st, wthread *w, int index, int32_t status) {
  req *r = w->active[index];
  /* A cancelled wait may have been picked by a futex_wake meant for someone else before we noticed
   * the cancellation: pass one wake on (every waiter tolerates spurious wake-ups). The kernel reads
   * the address, so an unmapped one is just EFAULT. */
  if (r->cancelled) plat_futex_wake(r->addr, 1);
  w->active[index] = w->active[--w->nactive];
  w->assigned--;
  if (st->ndone == st->capdone) {
    size_t cap = st->capdone ? st->capdone * 2 : 64;
    done_t *d = realloc(st->done, cap * sizeof *d);
    if (!d) abort(); /* out of memory in a waiter thread: nothing sane to do */
    st->done = d;
    st->capdone = cap;
  }
  st->done[st->ndone].id = r->id;
  st->done[st->ndone].status = status;
  st->done[st->ndone].refd = r->refd;
  st->ndone++;
  free(r);
}

static void signal_js(state *st) {
  if (st->ndone > 0 && !st->signalled) {
    st->signalled = 1;
    napi_call_threadsafe_function(st->tsfn, NULL, napi_tsfn_nonblocking);
  }
}

static void *thread_main(void *arg) {
  wthread *w = arg;
  state *st = w->st;
  plat_waitv_entry vec[PLAT_WAITV_MAX];
  int64_t idle_since = 0;
  pthread_mutex_lock(&st->lock);
  while (!w->stop) {
    while (w->incoming && w->nactive < per_thread()) {
      req *r = w->incoming;
      w->incoming = r->next;
      w->active[w->nactive++] = r;
    }
    int64_t now = plat_monotonic_ns();
    int64_t deadline = INT64_MAX;
    for (int i = w->nactive - 1; i >= 0; i--) {
      req *r = w->active[i];
      if (r->cancelled) complete(st, w, i, ST_CANCELLED);
      else if (r->deadline <= now) complete(st, w, i, ST_TIMEDOUT);
      else if (r->deadline < deadline) deadline = r->deadline;
    }
    signal_js(st);
    int idle = w->nactive == 0 && w->incoming == NULL;
    if (idle) {
      if (idle_since == 0) idle_since = now;
      else if (now - idle_since >= IDLE_EXIT_NS && w->assigned == 0) {
        /* Leave: nobody can reach this thread once it is off the list (wakers hold st->lock). */
        for (int i = 0; i < st->nthreads; i++)
          if (st->threads[i] == w) { st->threads[i] = st->threads[--st->nthreads]; break; }
        w->next_exited = st->exited;
        st->exited = w;
        break;
      }
      deadline = idle_since + IDLE_EXIT_NS;
    } else idle_since = 0;
    uint32_t c = atomic_load(&w->ctl);
    vec[0].addr = (uint32_t *)&w->ctl;
    vec[0].expected = c;
    vec[0].is_private = 1;
    int n = 1;
    for (int i = 0; i < w->nactive; i++, n++) {
      vec[n].addr = w->active[i]->addr;
      vec[n].expected = w->active[i]->expected;
      vec[n].is_private = 0;
    }
    pthread_mutex_unlock(&st->lock);
    int rc;
    if (plat_have_futex_waitv()) {
      rc = plat_futex_waitv(vec, n, deadline == INT64_MAX ? PLAT_INFINITE : deadline);
    } else {
      /* One word at a time (n is 1 or 2): the user word if there is one, else the control word,
       * for at most a slice. Woken (0) means entry n - 1, as futex_waitv would say. */
      int64_t now2 = plat_monotonic_ns();
      int64_t until = n == 2 && deadline - now2 > SLICE_NS ? now2 + SLICE_NS : deadline;
      int64_t left = until == INT64_MAX ? PLAT_INFINITE : (until > now2 ? until - now2 : 0);
      rc = n == 2 ? plat_futex_wait(vec[1].addr, vec[1].expected, left)
                  : plat_futex_wait_private(vec[0].addr, vec[0].expected, left);
      if (rc == 0) rc = n - 1;
      pthread_mutex_lock(&st->lock);
      if (rc == 1 && atomic_load(&w->ctl) != c) continue; /* new orders (a cancel): rebuild first */
      pthread_mutex_unlock(&st->lock);
      if (rc == 0) rc = -EAGAIN; /* the control word moved */
    }
    pthread_mutex_lock(&st->lock);
    if (rc >= 1 && rc < n) {
      /* active[] is unchanged while we slept: only this thread edits it. */
      complete(st, w, rc - 1, ST_WOKEN);
    } else if (rc == -EAGAIN || rc == -EFAULT) {
      if (rc == -EAGAIN && atomic_load(&w->ctl) != c) continue; /* new work; rebuild */
      /* Some word already differs, or is unmapped: find which, one at a time, in the kernel. */
      for (int i = w->nactive - 1; i >= 0; i--) {
        int still = plat_futex_still(w->active[i]->addr, w->active[i]->expected);
        if (still == 0) complete(st, w, i, ST_WOKEN);
        else if (still < 0) complete(st, w, i, still);
      }
    } else if (rc < 0 && rc != -ETIMEDOUT && rc != -EINTR) {
      /* e.g. -ENOSYS on a kernel older than 5.16: fail every wait rather than spin. */
      for (int i = w->nactive - 1; i >= 0; i--) complete(st, w, i, rc);
    }
  }
  pthread_mutex_unlock(&st->lock);
  return NULL;
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  (void)data;
  state *st = context;
  if (env == NULL) return;
  pthread_mutex_lock(&st->lock);
  done_t *items = st->done;
  size_t n = st->ndone;
  st->done = NULL;
  st->ndone = st->capdone = 0;
  st->signalled = 0;
  pthread_mutex_unlock(&st->lock);
  napi_value undef;
  napi_get_undefined(env, &undef);
  for (size_t i = 0; i < n; i++) {
    if (items[i].refd) st->pending--;
    napi_value args[2];
    napi_create_uint32(env, items[i].id, &args[0]);
    napi_create_int32(env, items[i].status, &args[1]);
    if (napi_call_function(env, undef, cb, 2, args, NULL) != napi_ok) {
      /* Report it as uncaught, clear it, and keep delivering the rest of the batch. */
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }
  free(items);
  hold_alive(env, st);
}

/* Joins the threads that exited after idling (they are past their last use of st->lock). */
static void reap(state *st) {
  pthread_mutex_lock(&st->lock);
  wthread *list = st->exited;
  st->exited = NULL;
  pthread_mutex_unlock(&st->lock);
  while (list) {
    wthread *w = list;
    list = w->next_exited;
    pthread_join(w->th, NULL);
    free(w);
  }
}

static void cleanup(void *arg) {
  state *st = arg;
  reap(st);
  pthread_mutex_lock(&st->lock);
  for (int i = 0; i < st->nthreads; i++) {
    wthread *w = st->threads[i];
    w->stop = 1;
    atomic_fetch_add(&w->ctl, 1);
    plat_futex_wake_private((uint32_t *)&w->ctl, 1);
    /* Without futex_waitv the thread sleeps on its user word: wake that too. */
    if (!plat_have_futex_waitv() && w->nactive > 0) plat_futex_wake(w->active[0]->addr, INT32_MAX);
  }
  pthread_mutex_unlock(&st->lock);
  for (int i = 0; i < st->nthreads; i++) {
    wthread *w = st->threads[i];
    pthread_join(w->th, NULL);
    for (int j = 0; j < w->nactive; j++) free(w->active[j]);
    while (w->incoming) { req *r = w->incoming; w->incoming = r->next; free(r); }
    free(w);
  }
  st->nthreads = 0;
  reap(st);
  free(st->done);
  st->done = NULL;
  st->ndone = st->capdone = 0;
}

/* asyncInit(callback(id, status)) — once per environment. */
static napi_value async_init(napi_env env, napi_callback_info info) {
  napi_value argv[1], name;
  state *st = get_args_data(env, info, 1, argv);
  if (!st || st->tsfn) return make_int(env, -EINVAL);
  napi_create_string_utf8(env, "shmkit.wait", NAPI_AUTO_LENGTH, &name);
  CALL(env, napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, st, call_js, &st->tsfn));
  CALL(env, napi_unref_threadsafe_function(env, st->tsfn));
  /* Registered after the threadsafe function, so it runs before that function is torn down. */
  napi_add_env_cleanup_hook(env, cleanup, st);
  return make_int(env, 0);
}

static int start_thread(state *st) {
  wthread *w = calloc(1, sizeof *w);
  if (!w) return -ENOMEM;
  w->st = st;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread inherits a mask that takes no signals */
  int rc = pthread_create(&w->th, &attr, thread_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) { free(w); return -rc; }
  st->threads[st->nthreads++] = w;
  return 0;
}

/* Main thread: the threadsafe function is ref'd exactly while a ref'd wait is pending. */
static void hold_alive(napi_env env, state *st) {
  if (st->pending > 0 && !st->refd) {
    napi_ref_threadsafe_function(env, st->tsfn);
    st->refd = 1;
  } else if (st->pending <= 0 && st->refd) {
    st->pending = 0;
    napi_unref_threadsafe_function(env, st->tsfn);
    st->refd = 0;
  }
}

/* asyncWait(int32array, index, expected, timeoutMs, ref = true) -> id (>0) | -errno */
static napi_value async_wait(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  state *st = get_args_data(env, info, 5, argv);
  if (!st || !st->tsfn) return make_int(env, -EINVAL);
  uint32_t *addr = word_address(env, argv[0], argv[1]);
  if (!addr) return make_int(env, -EINVAL);
  int32_t expected = 0;
  napi_get_value_int32(env, argv[2], &expected);
  int64_t timeout = timeout_ms_to_ns(get_double(env, argv[3]));
  req *r = calloc(1, sizeof *r);
  if (!r) return make_int(env, -ENOMEM);
  if (++st->next_id == 0) st->next_id = 1;
  const uint32_t id = st->next_id; /* r belongs to the waiter thread once published */
  r->id = id;
  r->addr = addr;
  r->expected = (uint32_t)expected;
  r->deadline = timeout == PLAT_INFINITE ? INT64_MAX : plat_monotonic_ns() + timeout;
  napi_valuetype t5 = napi_undefined;
  napi_typeof(env, argv[4], &t5);
  bool ref = true;
  if (t5 == napi_boolean) napi_get_value_bool(env, argv[4], &ref);
  r->refd = ref ? 1 : 0;

  pthread_mutex_lock(&st->lock);
  wthread *w = NULL;
  for (int i = 0; i < st->nthreads; i++)
    if (st->threads[i]->assigned < per_thread()) { w = st->threads[i]; break; }
  if (!w) {
    int rc = st->nthreads < MAX_THREADS ? start_thread(st) : -EAGAIN;
    if (rc < 0) { pthread_mutex_unlock(&st->lock); free(r); return make_int(env, rc); }
    w = st->threads[st->nthreads - 1];
  }
  r->next = w->incoming;
  w->incoming = r;
  w->assigned++;
  /* Woken under the lock: an idle thread leaves only under it, so w cannot be freed meanwhile. */
  atomic_fetch_add(&w->ctl, 1);
  plat_futex_wake_private((uint32_t *)&w->ctl, 1);
  int reaping = st->exited != NULL;
  pthread_mutex_unlock(&st->lock);
  if (reaping) reap(st);

  if (ref) st->pending++;
  hold_alive(env, st);
  return make_int(env, id);
}

/* asyncRef(id, on) -> 0 | -ENOENT (already completed: nothing to change). Whether a pending wait
 * keeps the process alive. */
static napi_value async_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  state *st = get_args_data(env, info, 2, argv);
  if (!st || !st->tsfn) return make_int(env, -EINVAL);
  uint32_t id = (uint32_t)get_double(env, argv[0]);
  bool on = true;
  napi_get_value_bool(env, argv[1], &on);
  int found = 0, delta = 0;
  pthread_mutex_lock(&st->lock);
  for (int i = 0; i < st->nthreads && !found; i++) {
    wthread *w = st->threads[i];
    req *r = NULL;
    for (int j = 0; j < w->nactive && !r; j++)
      if (w->active[j]->id == id) r = w->active[j];
    for (req *q = w->incoming; q && !r; q = q->next)
      if (q->id == id) r = q;
    if (r) {
      found = 1;
      if (r->refd != (on ? 1 : 0)) { r->refd = on ? 1 : 0; delta = on ? 1 : -1; }
    }
  }
  pthread_mutex_unlock(&st->lock);
  if (!found) return make_int(env, -ENOENT);
  st->pending += delta;
  hold_alive(env, st);
  return make_int(env, 0);
}

/* asyncCancel(id) -> 0 | -ENOENT. The wait completes later with status 2 (cancelled). */
static napi_value async_cancel(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  state *st = get_args_data(env, info, 1, argv);
  if (!st) return make_int(env, -EINVAL);
  uint32_t id = (uint32_t)get_double(env, argv[0]);
  pthread_mutex_lock(&st->lock);
  for (int i = 0; i < st->nthreads; i++) {
    wthread *w = st->threads[i];
    req *found = NULL;
    for (int j = 0; j < w->nactive && !found; j++)
      if (w->active[j]->id == id) found = w->active[j];
    for (req *r = w->incoming; r && !found; r = r->next)
      if (r->id == id) found = r;
    if (found) {
      found->cancelled = 1;
      atomic_fetch_add(&w->ctl, 1);
      plat_futex_wake_private((uint32_t *)&w->ctl, 1);
      if (!plat_have_futex_waitv()) plat_futex_wake(found->addr, INT32_MAX);
      pthread_mutex_unlock(&st->lock);
      return make_int(env, 0);
    }
  }
  pthread_mutex_unlock(&st->lock);
  return make_int(env, -ENOENT);
}

/* asyncStats() -> [threads, pending] (for tests and the CLI) */
static napi_value async_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  state *st = get_args_data(env, info, 0, argv);
  if (st) reap(st);
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, make_int(env, st ? st->nthreads : 0));
  napi_set_element(env, arr, 1, make_int(env, st ? st->pending : 0));
  return arr;
}

void init_waiter(napi_env env, napi_value exports) {
  state *st = calloc(1, sizeof *st);
  if (!st) return;
  pthread_mutex_init(&st->lock, NULL);
  const char *names[] = {"asyncInit", "asyncWait", "asyncCancel", "asyncStats", "asyncRef"};
  napi_callback cbs[] = {async_init, async_wait, async_cancel, async_stats, async_ref};
  for (int i = 0; i < 5; i++) {
    napi_value fn;
    napi_create_function(env, names[i], NAPI_AUTO_LENGTH, cbs[i], st, &fn);
    napi_set_named_property(env, exports, names[i], fn);
  }
}
