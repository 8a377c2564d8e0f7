{
  "targets": [
    {
      "target_name": "shmkit",
      "sources": [
        "native/binding.c",
        "native/bind_segment.c",
        "native/bind_futex.c",
        "native/waiter.c",
        "native/bind_identity.c",
        "native/bind_namedsem.c",
        "native/bind_bell.c"
      ],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [
        ["OS=='linux'", {
          "sources": ["native/platform_linux.c"],
          "libraries": ["-lpthread", "-lrt", "-ldl"]
        }]
      ]
    }
  ]
}
