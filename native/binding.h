/* binding.h: helpers shared by the Node-API binding files. JavaScript validates every argument
 * before calling in; these helpers only refuse what would be unsafe in C (wrong types, a word
 * outside its array), returning -EINVAL instead of touching memory. */
#ifndef SHMKIT_BINDING_H
#define SHMKIT_BINDING_H

#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>

#define CALL(env, expr)                                                         \
  do {                                                                          \
    if ((expr) != napi_ok) { return throw_last(env); }                          \
  } while (0)

napi_value throw_last(napi_env env);
napi_value make_int(napi_env env, int64_t v);
napi_value make_failure(napi_env env, int neg_errno, const char *syscall);
int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
/* Like get_args, returning the function's data pointer (its per-environment state), or NULL. */
void *get_args_data(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
int get_string(napi_env env, napi_value v, char *buf, size_t cap);
double get_double(napi_env env, napi_value v);
/* Resolves (Int32Array, index) to the address of that 32-bit word, or NULL. */
uint32_t *word_address(napi_env env, napi_value array, napi_value index);
int64_t timeout_ms_to_ns(double ms);

void register_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);

void init_segment(napi_env env, napi_value exports);
void init_futex(napi_env env, napi_value exports);
void init_waiter(napi_env env, napi_value exports);
void init_identity(napi_env env, napi_value exports);
void init_namedsem(napi_env env, napi_value exports);
void init_bell(napi_env env, napi_value exports);

#endif
