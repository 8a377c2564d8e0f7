/* bind_identity.c: who this process is, and whether another one still lives. */
#include <errno.h>

#include "binding.h"
#include "platform.h"

#include <pthread.h>

/* Thread slots tell apart the Node environments (main thread, workers) of one process; a slot is a
 * 10-bit part of the owner token. They come from a bitmap, handed out round-robin so that a freed
 * slot is reused as late as possible, and are freed when the environment is torn down. */
#define SLOTS 1024
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t slot_used[SLOTS];
static unsigned slot_next = 0;

static void free_slot(void *arg) {
  unsigned slot = (unsigned)(uintptr_t)arg;
  pthread_mutex_lock(&slot_lock);
  slot_used[slot] = 0;
  pthread_mutex_unlock(&slot_lock);
}

static int take_slot(void) {
  pthread_mutex_lock(&slot_lock);
  for (unsigned k = 0; k < SLOTS; k++) {
    unsigned i = (slot_next + k) % SLOTS;
    if (!slot_used[i]) {
      slot_used[i] = 1;
      slot_next = (i + 1) % SLOTS;
      pthread_mutex_unlock(&slot_lock);
      return (int)i;
    }
  }
  pthread_mutex_unlock(&slot_lock);
  return -1;
}

/* slotLive(slot) -> 1 if an environment of this process holds the slot. */
static napi_value slot_live(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return make_int(env, -EINVAL);
  double d = get_double(env, argv[0]);
  if (!(d >= 0 && d < SLOTS)) return make_int(env, -EINVAL);
  pthread_mutex_lock(&slot_lock);
  int live = slot_used[(unsigned)d];
  pthread_mutex_unlock(&slot_lock);
  return make_int(env, live);
}

/* selfIdentity() -> [pid, start, threadSlot] | { errno, syscall }. threadSlot tells apart the
 * Node environments (main thread, workers) of one process. */
static napi_value self_identity(napi_env env, napi_callback_info info) {
  (void)info;
  uint32_t pid;
  uint64_t start;
  int rc = plat_self_identity(&pid, &start);
  if (rc < 0) return make_failure(env, rc, "read /proc/self/stat");
  int slot = take_slot();
  if (slot < 0) return make_failure(env, -EMFILE, "thread slot (1024 Node environments in one process)");
  napi_add_env_cleanup_hook(env, free_slot, (void *)(uintptr_t)slot);
  napi_value arr;
  napi_create_array_with_length(env, 3, &arr);
  napi_set_element(env, arr, 0, make_int(env, pid));
  napi_set_element(env, arr, 1, make_int(env, (int64_t)(start & 0x1fffffffffffffULL)));
  napi_set_element(env, arr, 2, make_int(env, slot));
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
  register_fn(env, exports, "slotLive", slot_live);
}
