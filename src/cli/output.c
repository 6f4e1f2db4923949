/*
 * output.c - tables and the text chart of the astromesh client.
 *
 * Owns nothing; prints only to the FILE handed in.
 */
#include <string.h>
#include "cli/output.h"
#include "lib/util.h"

#define CELL_MAX 256

void output_cell(struct json_object *o, const char *k, char *out, size_t cap)
{
    struct json_object *v = NULL;
    if (o == NULL || !json_object_object_get_ex(o, k, &v) || v == NULL) {
        util_strlcpy(out, "-", cap);
        return;
    }
    if (json_object_is_type(v, json_type_string)) {
        util_strlcpy(out, json_object_get_string(v), cap);
    } else if (json_object_is_type(v, json_type_array)) {
        out[0] = '\0';
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            size_t n = strlen(out);
            util_snprintf(out + n, cap - n, "%s%s", i ? "," : "",
                          json_object_get_string(json_object_array_get_idx(v, i)));
        }
    } else {
        util_strlcpy(out, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), cap);
    }
}

/* One cell padded to width w, or the row's last cell and its newline. */
static void cell_out(FILE *f, const char *s, int w, int last)
{
    if (last)
        fprintf(f, "%s\n", s);
    else
        fprintf(f, "%-*s  ", w, s);
}

void output_table(FILE *f, const struct output_col *cols, int ncols, struct json_object *rows)
{
    size_t w[OUTPUT_COLS_MAX];
    char cell[CELL_MAX];
    size_t n = rows ? json_object_array_length(rows) : 0;
    if (ncols > OUTPUT_COLS_MAX)
        ncols = OUTPUT_COLS_MAX;
    for (int c = 0; c < ncols; c++) {
        w[c] = strlen(cols[c].title);
        for (size_t i = 0; i < n; i++) {
            output_cell(json_object_array_get_idx(rows, i), cols[c].key, cell, sizeof(cell));
            if (strlen(cell) > w[c])
                w[c] = strlen(cell);
        }
    }
    for (int c = 0; c < ncols; c++)
        cell_out(f, cols[c].title, (int)w[c], c + 1 == ncols);
    for (size_t i = 0; i < n; i++) {
        for (int c = 0; c < ncols; c++) {
            output_cell(json_object_array_get_idx(rows, i), cols[c].key, cell, sizeof(cell));
            cell_out(f, cell, (int)w[c], c + 1 == ncols);
        }
    }
}

void output_chart(FILE *f, struct json_object *rows, const char *label_key,
                  const char *value_key, int width)
{
    int64_t max = 0;
    char label[CELL_MAX];
    size_t n = rows ? json_object_array_length(rows) : 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *v;
        if (json_object_object_get_ex(json_object_array_get_idx(rows, i), value_key, &v) &&
            json_object_get_int64(v) > max)
            max = json_object_get_int64(v);
    }
    for (size_t i = 0; i < n; i++) {
        struct json_object *row = json_object_array_get_idx(rows, i), *v = NULL;
        int64_t val = json_object_object_get_ex(row, value_key, &v) ? json_object_get_int64(v) : 0;
        int bar = max > 0 ? (int)((val * width + max - 1) / max) : 0;
        output_cell(row, label_key, label, sizeof(label));
        fprintf(f, "%s  ", label);
        for (int b = 0; b < bar; b++)
            fputc('#', f);
        fprintf(f, "%s%lld\n", bar ? " " : "", (long long)val);
    }
}

void output_json(FILE *f, struct json_object *o)
{
    fprintf(f, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
}
