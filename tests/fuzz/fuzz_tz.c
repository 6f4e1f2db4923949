/*
 * fuzz_tz - libFuzzer target: the datetime tool's tz reader. The input is
 * read as a TZif file (datetime_tz_parse) and, when it loads, asked for
 * the local time of a few instants (transitions, the POSIX footer rule);
 * its text up to the first NUL is also read as a POSIX TZ rule
 * (datetime_tz_rule_parse) and evaluated. Pure: no zoneinfo files.
 */
#include "runtime/tools/datetime.h"
#include "fuzz.h"

static const int64_t AT[] = { INT64_MIN / 4, -2208988800LL, 0, 1700000000, 4102444800LL,
                              INT64_MAX / 4 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tz_info *z = xcalloc(1, sizeof(*z));
    struct tz_rule r;
    struct tz_type t;
    char *text = fuzz_cstr(data, size), off[16];
    size_t i;

    if (datetime_tz_parse(data, size, z) == 0) {
        for (i = 0; i < sizeof(AT) / sizeof(AT[0]); i++) {
            datetime_tz_at(z, AT[i], &t);
            datetime_offset_str(t.utoff, off, sizeof(off));
        }
    }
    datetime_tz_free(z);
    memset(&r, 0, sizeof(r));
    if (datetime_tz_rule_parse(text, &r) == 0)
        for (i = 0; i < sizeof(AT) / sizeof(AT[0]); i++)
            datetime_tz_rule_at(&r, AT[i], &t);
    free(text);
    return 0;
}
