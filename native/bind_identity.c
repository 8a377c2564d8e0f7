/* bind_identity.c: who this process is, and whether another one still lives. */
#include <errno.h>
#include <stdatomic.h>

#include "binding.h"
#include "platform.h"

static atomic_uint next_thread_slot = 0;

/* selfIdentity() -> [pid, start, threadSlot] | { errno, syscall }. threadSlot tells apart the
 * Node environments (main thread, workers) of one process. */
static napi_value self_identity(napi_env env, napi_callback_info info) {
  (void)info;
  uint32_t pid;
  uint64_t start;
  int rc = plat_self_identity(&pid, &start);
  if (rc < 0) return make_failure(env, rc, "read /proc/self/stat");
  napi_value arr;
  napi_create_array_with_length(env, 3, &arr);
  napi_set_element(env, arr, 0, make_int(env, pid));
  napi_set_element(env, arr, 1, make_int(env, (int64_t)(start & 0x1fffffffffffffULL)));
  napi_set_element(env, arr, 2, make_int(env, atomic_fetch_add(&next_thread_slot, 1)));
  return arr;
}

/* processAlive(pid, start, startBits) -> 1 | 0 | -errno */
static napi_value process_alive(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (get_args(env, info, 3, argv)) return make_int(env, -EINVAL);
  double pid = get_double(env, argv[0]), start = get_double(env, argv[1]), bits = get_double(env, argv[2]);
  if (!(pid >= 0 && pid <= 4294967295.0) || !(start >= 0) || !(bits >= 1 && bits <= 64))
    return make_int(env, -EINVAL);
  return make_int(env, plat_identity_alive((uint32_t)pid, (uint64_t)start, (int)bits));
}

void init_identity(napi_env env, napi_value exports) {
  register_fn(env, exports, "selfIdentity", self_identity);
  register_fn(env, exports, "processAlive", process_alive);
}
