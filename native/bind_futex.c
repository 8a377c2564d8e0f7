/* bind_futex.c: blocking futex wait and wake on a 32-bit word of a mapped segment. */
#include <errno.h>

#include "binding.h"
#include "platform.h"

/* futexWait(int32array, index, expected, timeoutMs) -> 0 | -EAGAIN | -ETIMEDOUT | -EINTR | -EINVAL */
static napi_value futex_wait(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (get_args(env, info, 4, argv)) return make_int(env, -EINVAL);
  uint32_t *addr = word_address(env, argv[0], argv[1]);
  if (!addr) return make_int(env, -EINVAL);
  int32_t expected = 0;
  napi_get_value_int32(env, argv[2], &expected);
  return make_int(env, plat_futex_wait(addr, (uint32_t)expected, timeout_ms_to_ns(get_double(env, argv[3]))));
}

/* futexWake(int32array, index, count) -> woken | -errno */
static napi_value futex_wake(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (get_args(env, info, 3, argv)) return make_int(env, -EINVAL);
  uint32_t *addr = word_address(env, argv[0], argv[1]);
  if (!addr) return make_int(env, -EINVAL);
  int32_t count = 0;
  napi_get_value_int32(env, argv[2], &count);
  if (count <= 0) count = 0x7fffffff;
  return make_int(env, plat_futex_wake(addr, count));
}

/* futexWaitMany(int32arrays[], indices[], expected[], timeoutMs) -> index of a woken word (>= 0)
 * | -EAGAIN (some word no longer held its expected value) | -ETIMEDOUT | -EINTR | -ENOSYS (no
 * futex_waitv: the caller polls) | -EINVAL. Blocks the calling thread on up to PLAT_WAITV_MAX
 * shared words at once (WaitSet.waitSync). */
static napi_value futex_wait_many(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (get_args(env, info, 4, argv)) return make_int(env, -EINVAL);
  if (!plat_have_futex_waitv()) return make_int(env, -ENOSYS);
  uint32_t n = 0;
  if (napi_get_array_length(env, argv[0], &n) != napi_ok || n == 0 || n > PLAT_WAITV_MAX) return make_int(env, -EINVAL);
  plat_waitv_entry vec[PLAT_WAITV_MAX];
  for (uint32_t i = 0; i < n; i++) {
    napi_value arr, idx, exp;
    if (napi_get_element(env, argv[0], i, &arr) != napi_ok || napi_get_element(env, argv[1], i, &idx) != napi_ok ||
        napi_get_element(env, argv[2], i, &exp) != napi_ok) return make_int(env, -EINVAL);
    uint32_t *addr = word_address(env, arr, idx);
    if (!addr) return make_int(env, -EINVAL);
    int32_t e = 0;
    napi_get_value_int32(env, exp, &e);
    vec[i].addr = addr;
    vec[i].expected = (uint32_t)e;
    vec[i].is_private = 0;
  }
  int64_t timeout = timeout_ms_to_ns(get_double(env, argv[3]));
  int64_t deadline = timeout == PLAT_INFINITE ? PLAT_INFINITE : plat_monotonic_ns() + timeout;
  return make_int(env, plat_futex_waitv(vec, (int)n, deadline));
}

void init_futex(napi_env env, napi_value exports) {
  register_fn(env, exports, "futexWaitMany", futex_wait_many);
  register_fn(env, exports, "futexWait", futex_wait);
  register_fn(env, exports, "futexWake", futex_wake);
}
