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

void init_futex(napi_env env, napi_value exports) {
  register_fn(env, exports, "futexWait", futex_wait);
  register_fn(env, exports, "futexWake", futex_wake);
}
