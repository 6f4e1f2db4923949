/*
 * fuzz_config - libFuzzer target: the configuration loader (config_load:
 * libyaml events, the key table, every value's conversion and range, the
 * cross-key rules). The input is the file: a memfd read through
 * /proc/self/fd, so no file is written. Seeds: tests/corpus/config/.
 */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include "state/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config cfg;
    struct am_error err;
    char path[64];
    int fd = memfd_create("fuzz_config", MFD_CLOEXEC);

    if (fd < 0)
        __builtin_trap();
    if (size > 0 && write(fd, data, size) != (ssize_t)size)
        __builtin_trap();
    (void)util_snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    (void)config_load(&cfg, path, &err);
    close(fd);
    return 0;
}
