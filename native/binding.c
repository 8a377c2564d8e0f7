/* binding.c: module entry and the helpers declared in binding.h. */
#include "binding.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "platform.h"

napi_value throw_last(napi_env env) {
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    napi_throw_error(env, "ERR_SHMKIT_NATIVE",
                     info && info->error_message ? info->error_message : "Node-API call failed");
  }
  return NULL;
}

napi_value make_int(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

/* { errno: positive number, syscall: string } — TypeScript turns it into a ShmkitError. */
napi_value make_failure(napi_env env, int neg_errno, const char *syscall) {
  napi_value obj, e, s;
  napi_create_object(env, &obj);
  napi_create_int32(env, -neg_errno, &e);
  napi_create_string_utf8(env, syscall ? syscall : "", NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, obj, "errno", e);
  napi_set_named_property(env, obj, "syscall", s);
  return obj;
}

int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  return argc < want ? -1 : 0;
}

void *get_args_data(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &data) != napi_ok || argc < want) return NULL;
  return data;
}

int get_string(napi_env env, napi_value v, char *buf, size_t cap) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) return -1;
  return len + 1 >= cap ? -1 : 0; /* refuse silently truncated names */
}

double get_double(napi_env env, napi_value v) {
  double d = NAN;
  napi_get_value_double(env, v, &d);
  return d;
}

uint32_t *word_address(napi_env env, napi_value array, napi_value index) {
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  bool is_ta = false;
  if (napi_is_typedarray(env, array, &is_ta) != napi_ok || !is_ta) return NULL;
  if (napi_get_typedarray_info(env, array, &type, &length, &data, NULL, NULL) != napi_ok) return NULL;
  if (type != napi_int32_array || data == NULL) return NULL; /* a detached view has no data */
  double i = get_double(env, index);
  if (!(i >= 0) || i >= (double)length || i != floor(i)) return NULL;
  return (uint32_t *)data + (size_t)i;
}

/* JS passes milliseconds; negative or non-finite means no timeout. */
int64_t timeout_ms_to_ns(double ms) {
  if (!(ms >= 0) || !isfinite(ms)) return PLAT_INFINITE;
  if (ms > 9.0e12) return PLAT_INFINITE; /* ~285 years: beyond int64 ns */
  return (int64_t)(ms * 1e6);
}

void register_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

static napi_value init(napi_env env, napi_value exports) {
  init_segment(env, exports);
  init_futex(env, exports);
  init_waiter(env, exports);
  init_identity(env, exports);
  init_namedsem(env, exports);
  init_bell(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
