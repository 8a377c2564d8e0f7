/* bind_namedsem.c: POSIX named semaphores (sem_open and family), for interop with C and Python. */
#include <errno.h>
#include <stdlib.h>

#include "binding.h"
#include "platform.h"

typedef struct { plat_sem *sem; } holder;

static void finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  holder *h = data;
  if (h->sem) plat_sem_close(h->sem);
  free(h);
}

static plat_sem *get_sem(napi_env env, napi_value v) {
  holder *h = NULL;
  if (napi_get_value_external(env, v, (void **)&h) != napi_ok || !h) return NULL;
  return h->sem;
}

/* semOpen(name, create, exclusive, mode, value) -> handle | { errno, syscall } */
static napi_value sem_open_(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char name[256];
  if (get_args(env, info, 5, argv) || get_string(env, argv[0], name, sizeof name))
    return make_failure(env, -EINVAL, "sem_open");
  bool create = false, excl = false;
  napi_get_value_bool(env, argv[1], &create);
  napi_get_value_bool(env, argv[2], &excl);
  double mode = get_double(env, argv[3]), value = get_double(env, argv[4]);
  plat_sem *s = NULL;
  const char *sc = NULL;
  int rc = plat_sem_open(name, create, excl, (int)mode, (unsigned)value, &s, &sc);
  if (rc < 0) return make_failure(env, rc, sc);
  holder *h = malloc(sizeof *h);
  if (!h) { plat_sem_close(s); return make_failure(env, -ENOMEM, "malloc"); }
  h->sem = s;
  napi_value ext;
  if (napi_create_external(env, h, finalize, NULL, &ext) != napi_ok) {
    plat_sem_close(s);
    free(h);
    return throw_last(env);
  }
  return ext;
}

#define SEM_OP(fname, call)                                          \
  static napi_value fname(napi_env env, napi_callback_info info) {   \
    napi_value argv[1];                                              \
    if (get_args(env, info, 1, argv)) return make_int(env, -EINVAL); \
    plat_sem *s = get_sem(env, argv[0]);                             \
    if (!s) return make_int(env, -EBADF);                            \
    return make_int(env, call);                                      \
  }
SEM_OP(sem_post_, plat_sem_post(s))
SEM_OP(sem_trywait_, plat_sem_trywait(s))

/* semTimedWait(handle, timeoutMs) -> 0 | -ETIMEDOUT | -EINTR | -errno. Blocks this thread. */
static napi_value sem_timedwait_(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv)) return make_int(env, -EINVAL);
  plat_sem *s = get_sem(env, argv[0]);
  if (!s) return make_int(env, -EBADF);
  return make_int(env, plat_sem_timedwait(s, timeout_ms_to_ns(get_double(env, argv[1]))));
}

/* semGetValue(handle) -> value (>= 0) | -errno */
static napi_value sem_getvalue_(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return make_int(env, -EINVAL);
  plat_sem *s = get_sem(env, argv[0]);
  if (!s) return make_int(env, -EBADF);
  int v = 0;
  int rc = plat_sem_getvalue(s, &v);
  return make_int(env, rc < 0 ? rc : (v < 0 ? 0 : v));
}

/* semClose(handle) -> 0 | -errno. Later calls on the handle get -EBADF. */
static napi_value sem_close_(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return make_int(env, -EINVAL);
  holder *h = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&h) != napi_ok || !h) return make_int(env, -EINVAL);
  if (!h->sem) return make_int(env, -EBADF);
  int rc = plat_sem_close(h->sem);
  h->sem = NULL;
  return make_int(env, rc);
}

static napi_value sem_unlink_(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char name[256];
  if (get_args(env, info, 1, argv) || get_string(env, argv[0], name, sizeof name)) return make_int(env, -EINVAL);
  return make_int(env, plat_sem_unlink(name));
}

void init_namedsem(napi_env env, napi_value exports) {
  register_fn(env, exports, "semOpen", sem_open_);
  register_fn(env, exports, "semPost", sem_post_);
  register_fn(env, exports, "semTryWait", sem_trywait_);
  register_fn(env, exports, "semTimedWait", sem_timedwait_);
  register_fn(env, exports, "semGetValue", sem_getvalue_);
  register_fn(env, exports, "semClose", sem_close_);
  register_fn(env, exports, "semUnlink", sem_unlink_);
}
