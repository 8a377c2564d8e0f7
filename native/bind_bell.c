/* bind_bell.c: this environment's doorbell (see platform.h), polled by its own event loop.
 *
 * bellOpen(callback) opens the doorbell once per environment and returns its id (a positive
 * number) or -errno. When the doorbell rings, the loop wakes from its poll, the rings are drained,
 * and `callback()` runs on the JavaScript thread: one thread wake-up from ring to callback, where a
 * futex wait in a helper thread costs two (helper thread, then the loop).
 *
 * The poll handle is unref'd while no asynchronous wait is pending, so an idle doorbell never keeps
 * Node alive; bellRef(true) refs it while waits are pending (see bell.ts).
 *
 * bellRing(id) rings a doorbell of any process: 0, or -errno (-ECONNREFUSED: no such doorbell).
 *
 * Node-API only, plus libuv's uv_poll_t on the loop that napi_get_uv_event_loop returns (libuv's
 * ABI is stable across Node releases, like Node-API's). */
#include <errno.h>
#include <stdlib.h>
#include <uv.h>

#include "binding.h"
#include "platform.h"

typedef struct {
  napi_env env;
  int fd;        /* the doorbell, -1 until opened */
  int sender;    /* socket to ring others from, -1 until needed */
  uint32_t id;
  uv_poll_t *poll;
  napi_ref callback;
  napi_async_context ctx;
  napi_async_cleanup_hook_handle hook;
  int async_hooked; /* the async cleanup hook owns the state (the doorbell was opened) */
  int64_t rings;    /* wake-ups delivered (for tests) */
} bell_state;

/* Until the doorbell is opened, the state is freed by an environment cleanup hook: a runtime
 * whose async cleanup hooks are broken (Deno aborts at exit if one is registered) never opens the
 * doorbell (bell.ts), so it never gets one. Opening swaps in the async hook, which the poll
 * handle's asynchronous close needs. */
static void env_cleanup(void *data) {
  bell_state *b = data;
  if (b->callback) napi_delete_reference(b->env, b->callback);
  if (b->sender >= 0) plat_bell_close(b->sender);
  free(b);
}

static void on_closed(uv_handle_t *h) {
  bell_state *b = h->data;
  free(h);
  napi_async_cleanup_hook_handle hook = b->hook;
  b->poll = NULL;
  if (b->fd >= 0) plat_bell_close(b->fd);
  if (b->sender >= 0) plat_bell_close(b->sender);
  b->fd = b->sender = -1;
  if (hook) napi_remove_async_cleanup_hook(hook);
  free(b);
}

static void cleanup(napi_async_cleanup_hook_handle hook, void *data) {
  bell_state *b = data;
  b->hook = hook;
  if (b->callback) napi_delete_reference(b->env, b->callback);
  if (b->ctx) napi_async_destroy(b->env, b->ctx);
  b->callback = NULL;
  b->ctx = NULL;
  if (b->poll) {
    uv_poll_stop(b->poll);
    uv_close((uv_handle_t *)b->poll, on_closed);
  } else {
    if (b->sender >= 0) plat_bell_close(b->sender);
    b->sender = -1;
    napi_remove_async_cleanup_hook(hook);
    free(b);
  }
}

static void on_readable(uv_poll_t *h, int status, int events) {
  bell_state *b = h->data;
  plat_bell_drain(b->fd);
  if (!b->callback) return;
  b->rings++;
  napi_env env = b->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv;
  if (napi_get_reference_value(env, b->callback, &fn) == napi_ok && fn && napi_get_global(env, &recv) == napi_ok) {
    napi_value result;
    /* make_callback: runs the microtask queue afterwards, so promise reactions settle now. Its
     * receiver must be an object (it is converted with ToObject). */
    if (napi_make_callback(env, b->ctx, recv, fn, 0, NULL, &result) != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

/* bellOpen(callback) -> id (> 0) | -errno. Idempotent: later calls return the same id. */
static napi_value bell_open(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bell_state *b = get_args_data(env, info, 1, argv);
  if (!b) return make_int(env, -EINVAL);
  if (b->fd >= 0) return make_int(env, b->id);
  napi_valuetype t;
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function) return make_int(env, -EINVAL);
  uv_loop_t *loop = NULL;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) return make_int(env, -ENOSYS);
  uint32_t id = 0;
  int fd = plat_bell_open(&id);
  if (fd < 0) return make_int(env, fd);
  uv_poll_t *p = calloc(1, sizeof *p);
  if (!p) { plat_bell_close(fd); return make_int(env, -ENOMEM); }
  int rc = uv_poll_init(loop, p, fd);
  if (rc != 0) { free(p); plat_bell_close(fd); return make_int(env, rc); }
  p->data = b;
  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "shmkit.bell", NAPI_AUTO_LENGTH, &name);
  if (napi_async_init(env, resource, name, &b->ctx) != napi_ok ||
      napi_create_reference(env, argv[0], 1, &b->callback) != napi_ok) {
    uv_close((uv_handle_t *)p, (uv_close_cb)free);
    plat_bell_close(fd);
    return throw_last(env);
  }
  rc = uv_poll_start(p, UV_READABLE, on_readable);
  if (rc != 0) {
    uv_close((uv_handle_t *)p, (uv_close_cb)free);
    plat_bell_close(fd);
    return make_int(env, rc);
  }
  uv_unref((uv_handle_t *)p);
  b->fd = fd;
  b->id = id;
  b->poll = p;
  if (!b->async_hooked) {
    napi_remove_env_cleanup_hook(env, env_cleanup, b);
    napi_add_async_cleanup_hook(env, cleanup, b, NULL);
    b->async_hooked = 1;
  }
  return make_int(env, id);
}

/* bellRing(id) -> 0 | -errno */
static napi_value bell_ring(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bell_state *b = get_args_data(env, info, 1, argv);
  if (!b) return make_int(env, -EINVAL);
  double d = get_double(env, argv[0]);
  if (!(d >= 1 && d <= 4294967295.0)) return make_int(env, -EINVAL);
  if (b->sender < 0) {
    b->sender = plat_bell_sender();
    if (b->sender < 0) { int err = b->sender; b->sender = -1; return make_int(env, err); }
  }
  return make_int(env, plat_bell_ring(b->sender, (uint32_t)d));
}

/* bellRef(on) -> 0 | -errno. Refs the doorbell's poll handle while async waits are pending, so
 * that they keep Node alive without a timer each (a timer per wait cost ~1.5 µs per wait here). */
static napi_value bell_ref(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bell_state *b = get_args_data(env, info, 1, argv);
  if (!b || !b->poll) return make_int(env, -EINVAL);
  bool on = false;
  if (napi_get_value_bool(env, argv[0], &on) != napi_ok) return make_int(env, -EINVAL);
  if (on) uv_ref((uv_handle_t *)b->poll);
  else uv_unref((uv_handle_t *)b->poll);
  return make_int(env, 0);
}

/* bellStats() -> [id (0: not open), wake-ups delivered] */
static napi_value bell_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bell_state *b = get_args_data(env, info, 0, argv);
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, make_int(env, b && b->fd >= 0 ? b->id : 0));
  napi_set_element(env, arr, 1, make_int(env, b ? b->rings : 0));
  return arr;
}

void init_bell(napi_env env, napi_value exports) {
  bell_state *b = calloc(1, sizeof *b);
  if (!b) return;
  b->env = env;
  b->fd = b->sender = -1;
  /* The state lives as long as the environment (see env_cleanup and cleanup). */
  napi_add_env_cleanup_hook(env, env_cleanup, b);
  const char *names[] = {"bellOpen", "bellRing", "bellRef", "bellStats"};
  napi_callback cbs[] = {bell_open, bell_ring, bell_ref, bell_stats};
  for (int i = 0; i < 4; i++) {
    napi_value fn;
    napi_create_function(env, names[i], NAPI_AUTO_LENGTH, cbs[i], b, &fn);
    napi_set_named_property(env, exports, names[i], fn);
  }
}
