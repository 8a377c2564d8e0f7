/* bind_segment.c: segments as external ArrayBuffers.
 *
 * Ownership: a mapping is referenced by two JS objects, the ArrayBuffer (whose finalizer may run
 * late, on another thread) and an opaque handle kept by the TypeScript Segment. Whoever comes
 * first unmaps, decided by an atomic flag; the record is freed when both are gone. close()
 * detaches the ArrayBuffer before unmapping, so every view left behind becomes empty: a stale view
 * reads as length 0 and can never touch unmapped memory. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "binding.h"
#include "platform.h"

typedef struct {
  void *addr;
  size_t size;
  int fd; /* kept for shmCheck; closed with the mapping */
  atomic_int unmapped;
  atomic_int refs;
} mapping;

static void release(mapping *m) {
  if (atomic_fetch_sub(&m->refs, 1) == 1) free(m);
}

static void unmap_once(mapping *m) {
  if (atomic_exchange(&m->unmapped, 1) == 0) {
    plat_unmap(m->addr, m->size);
    if (m->fd >= 0) plat_close(m->fd);
  }
}

static void buffer_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)data;
  mapping *m = hint;
  unmap_once(m);
  release(m);
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  release((mapping *)data);
}

/* Wraps a fresh mapping as { buffer, handle, size }. */
static napi_value wrap(napi_env env, void *addr, size_t size, int fd) {
  napi_value obj, buffer, handle, sz;
  mapping *m = malloc(sizeof *m);
  if (!m) { plat_unmap(addr, size); if (fd >= 0) plat_close(fd); return make_failure(env, -ENOMEM, "malloc"); }
  m->addr = addr;
  m->size = size;
  m->fd = fd;
  atomic_init(&m->unmapped, 0);
  atomic_init(&m->refs, 2);
  napi_status st = napi_create_external_arraybuffer(env, addr, size, buffer_finalize, m, &buffer);
  if (st != napi_ok) {
    /* Electron's V8 memory cage refuses external buffers (napi_no_external_buffers_allowed). */
    plat_unmap(addr, size);
    if (fd >= 0) plat_close(fd);
    free(m);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) { napi_value ignored; napi_get_and_clear_last_exception(env, &ignored); }
    return make_failure(env, -ENOTSUP, "napi_create_external_arraybuffer");
  }
  if (napi_create_external(env, m, handle_finalize, NULL, &handle) != napi_ok) {
    /* The buffer's finalizer still owns one reference and will unmap. */
    release(m);
    return throw_last(env);
  }
  napi_create_object(env, &obj);
  napi_create_double(env, (double)size, &sz);
  napi_set_named_property(env, obj, "buffer", buffer);
  napi_set_named_property(env, obj, "handle", handle);
  napi_set_named_property(env, obj, "size", sz);
  return obj;
}

/* shmCreate(name, size, mode) -> { buffer, handle, size } | { errno, syscall } */
static napi_value shm_create(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char name[256];
  if (get_args(env, info, 3, argv) || get_string(env, argv[0], name, sizeof name))
    return make_failure(env, -EINVAL, "shmCreate");
  double size = get_double(env, argv[1]);
  double mode = get_double(env, argv[2]);
  if (!(size > 0) || size > (double)SIZE_MAX) return make_failure(env, -EINVAL, "shmCreate");
  void *addr = NULL;
  int fd = -1;
  const char *sc = NULL;
  int rc = plat_shm_create(name, (size_t)size, (int)mode, &addr, &fd, &sc);
  if (rc < 0) return make_failure(env, rc, sc);
  return wrap(env, addr, (size_t)size, fd);
}

static void set_u32(napi_env env, napi_value obj, const char *key, uint32_t v) {
  napi_value x;
  napi_create_uint32(env, v, &x);
  napi_set_named_property(env, obj, key, x);
}

/* shmOpen(name) -> { buffer, handle, size, uid, gid, mode } | { buffer: null, size, uid, gid, mode }
 * | { errno, syscall }. buffer is null for an empty object or one that is not a regular file. */
static napi_value shm_open_(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char name[256];
  if (get_args(env, info, 1, argv) || get_string(env, argv[0], name, sizeof name))
    return make_failure(env, -EINVAL, "shmOpen");
  void *addr = NULL;
  int fd = -1;
  plat_shm_info si = {0};
  const char *sc = NULL;
  int rc = plat_shm_open(name, &addr, &si, &fd, &sc);
  if (rc < 0) return make_failure(env, rc, sc);
  napi_value obj;
  if (addr == NULL) {
    napi_value sz, nul;
    napi_create_object(env, &obj);
    napi_get_null(env, &nul);
    napi_create_double(env, (double)si.size, &sz);
    napi_set_named_property(env, obj, "buffer", nul);
    napi_set_named_property(env, obj, "size", sz);
  } else {
    obj = wrap(env, addr, si.size, fd);
    bool is_failure = false;
    napi_has_named_property(env, obj, "errno", &is_failure);
    if (is_failure) return obj;
  }
  set_u32(env, obj, "uid", si.uid);
  set_u32(env, obj, "gid", si.gid);
  set_u32(env, obj, "mode", si.mode);
  return obj;
}

/* shmCheck(handle) -> 0 intact | 1 had shrunk, restored | 2 pages re-reserved | -errno */
static napi_value shm_check(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return make_int(env, -EINVAL);
  mapping *m = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&m) != napi_ok || !m) return make_int(env, -EINVAL);
  if (atomic_load(&m->unmapped) || m->fd < 0) return make_int(env, -EBADF);
  return make_int(env, plat_shm_check(m->fd, m->size));
}

/* shmPublish(tmp, name) -> 0 | { errno, syscall } */
static napi_value shm_publish(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char tmp[256], name[256];
  if (get_args(env, info, 2, argv) || get_string(env, argv[0], tmp, sizeof tmp) ||
      get_string(env, argv[1], name, sizeof name))
    return make_failure(env, -EINVAL, "shmPublish");
  const char *sc = NULL;
  int rc = plat_shm_publish(tmp, name, &sc);
  return rc < 0 ? make_failure(env, rc, sc) : make_int(env, 0);
}

/* shmUnlink(name) -> 0 | -errno */
static napi_value shm_unlink_(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char name[256];
  if (get_args(env, info, 1, argv) || get_string(env, argv[0], name, sizeof name))
    return make_int(env, -EINVAL);
  return make_int(env, plat_shm_unlink(name));
}

/* unmap(handle, buffer) -> 0 | -errno. Detaches first: views become empty, then unmaps. */
static napi_value unmap(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv)) return make_int(env, -EINVAL);
  mapping *m = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&m) != napi_ok || !m) return make_int(env, -EINVAL);
  void *data = NULL;
  size_t len = 0;
  bool is_ab = false;
  if (napi_is_arraybuffer(env, argv[1], &is_ab) != napi_ok || !is_ab) return make_int(env, -EINVAL);
  napi_get_arraybuffer_info(env, argv[1], &data, &len);
  if (data == NULL) {
    /* Already detached: either closed before, or moved away with ArrayBuffer.prototype.transfer(),
     * in which case the new buffer owns the memory and its finalizer unmaps it. Never unmap here. */
    return make_int(env, 0);
  }
  if (data != m->addr) return make_int(env, -EINVAL); /* not this mapping's buffer */
  if (napi_detach_arraybuffer(env, argv[1]) != napi_ok) return make_int(env, -EBUSY);
  unmap_once(m);
  return make_int(env, 0);
}

void init_segment(napi_env env, napi_value exports) {
  register_fn(env, exports, "shmCreate", shm_create);
  register_fn(env, exports, "shmOpen", shm_open_);
  register_fn(env, exports, "shmCheck", shm_check);
  register_fn(env, exports, "shmPublish", shm_publish);
  register_fn(env, exports, "shmUnlink", shm_unlink_);
  register_fn(env, exports, "unmap", unmap);
}
