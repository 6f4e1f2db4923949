/*
 * output.h - what the astromesh client prints for people: aligned tables
 * and a text bar chart. Scripts use --json (the server's JSON) instead.
 *
 * Writes only to the FILE it is given.
 */
#ifndef AM_CLI_OUTPUT_H
#define AM_CLI_OUTPUT_H

#include <stdio.h>
#include <json-c/json.h>

#define OUTPUT_COLS_MAX 8

struct output_col {
    const char *title;   /* "NAME" */
    const char *key;     /* the member of each row object shown ("name") */
};

/* Print rows (a JSON array of objects) as a table of ncols columns, each
 * as wide as its widest cell; a missing or null member prints "-".
 * Numbers and booleans print as JSON. */
void output_table(FILE *f, const struct output_col *cols, int ncols, struct json_object *rows);

/* Print one bar per row: label_key, a bar of '#' scaled to the largest
 * value_key (width chars at most), and the value. */
void output_chart(FILE *f, struct json_object *rows, const char *label_key,
                  const char *value_key, int width);

/* Print o (any JSON) pretty, with a newline. */
void output_json(FILE *f, struct json_object *o);

/* The text of member k of o for a cell into out (cap bytes): strings as
 * they are, "-" when absent or null, arrays joined with ",", other JSON as
 * JSON. */
void output_cell(struct json_object *o, const char *k, char *out, size_t cap);

#endif
