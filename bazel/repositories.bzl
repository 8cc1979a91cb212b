"""Herald's third-party repositories: Debian's packages and the Abseil source.

Nothing here downloads. `./bazelw` installs the Debian packages and unpacks
Debian's Abseil source into `.deps/abseil-cpp` before Bazel runs.
"""

def herald_dependencies():
    """Declares every external repository; called first from WORKSPACE."""

    # Declared by hand so that Bazel 4 does not try to download them.
    native.local_repository(
        name = "rules_java",
        path = "/usr/share/bazel/rules/java",
    )
    native.local_repository(
        name = "rules_cc",
        path = "bazel/third_party/rules_cc",
    )
    native.local_repository(
        name = "remote_coverage_tools",
        path = "bazel/third_party/remote_coverage_tools",
    )

    # Abseil needs both; left undeclared, @platforms lacks cpu:wasm32.
    native.local_repository(
        name = "platforms",
        path = "/usr/share/bazel/tools/platforms",
    )
    native.local_repository(
        name = "bazel_skylib",
        path = "/usr/share/bazel/tools/skylib",
    )

    # Built from source so that ThreadSanitizer sees its synchronization.
    native.local_repository(
        name = "com_google_absl",
        path = ".deps/abseil-cpp",
    )

    # ZeroMQ, protobuf, GoogleTest, Google Benchmark, cpp-httplib from /usr.
    native.new_local_repository(
        name = "system",
        path = "/usr",
        build_file = "//bazel/third_party:system.BUILD",
    )
