#!/bin/sh
# yaml5.sh - write astromesh-cloud.yaml(5) to stdout.
#
#   yaml5.sh KEYS YAML TEMPLATE VERSION
#
# KEYS is `astromesh-cloudd -K` (path, type, default, range, flags; one key
# a line, tab-separated): the daemon's own key table, so every key it reads
# is in the page with its real default and range. YAML is the shipped
# etc/astromesh-cloud.yaml: the comment block above each key (or above its
# commented-out line) is its description, without its Default:/Range:
# lines. TEMPLATE is the page around the keys: @VERSION@ is replaced, and
# the line @KEYS@ becomes the key list.
#
# Fails (exit 1, naming it) on a key of KEYS that the YAML file does not
# document, so a new row in the table cannot ship undocumented.
set -eu
[ $# -eq 4 ] || { echo "usage: yaml5.sh KEYS YAML TEMPLATE VERSION" >&2; exit 2; }
keys=$1 yaml=$2 template=$3 version=$4

sed -n '1,/^@KEYS@$/p' "$template" | sed -e '$d' -e "s|@VERSION@|$version|g"
awk -v yamlfile="$yaml" '
# roff: a backslash is \e, a line may not start with . or a quote
function roff(s) {
    gsub(/\\/, "\\e", s)
    if (s ~ /^[.\047]/) s = "\\&" s
    return s
}
function clean(block,    n, i, out, line) {
    n = split(block, ls, "\n"); out = ""
    for (i = 1; i <= n; i++) {
        line = ls[i]
        if (line ~ /^(Default|Range):/ || line == "") continue
        out = out (out == "" ? "" : "\n") roff(line)
    }
    return out
}
# a key line: record the comment block above it as the description of its
# dotted path (depth from the indent; commented: the line is "# key: ...")
function keyline(line, commented,    text, indent, name, depth, d, full) {
    text = line; sub(/^ */, "", text); sub(/^# /, "", text)
    indent = length(line) - length(text) - (commented ? 2 : 0)
    name = text; sub(/:.*/, "", name)
    depth = int(indent / 2); path[depth] = name; full = path[0]
    for (d = 1; d <= depth; d++) full = full "." path[d]
    if (!(full in desc) || desc[full] == "") desc[full] = clean(block)
    seen[full] = 1; block = ""
}
function addprose(line,    text) {
    text = line; sub(/^ *# ?/, "", text)
    block = block (block == "" ? "" : "\n") text
}
BEGIN {
    FS = "\t"; block = ""; pending = ""
    # "  # key: value" is a commented-out key only as the last line of its
    # comment block; before another comment line it is prose ("# tool: ...")
    while ((getline line < yamlfile) > 0) {
        if (pending != "") {
            if (line ~ /^ *#/ && line !~ /^#+( +[A-Z][A-Z ]* +#+)?$/) addprose(pending)
            else keyline(pending, 1)
            pending = ""
        }
        if (line ~ /^[ \t]*$/) { block = ""; continue }
        if (line ~ /^#+( +[A-Z][A-Z ]* +#+)?$/) { block = ""; continue }
        if (line ~ /^ +# [a-z_]+: /) { pending = line; continue }
        if (line ~ /^ *[a-z_]+:( |$)/) { keyline(line, 0); continue }
        if (line ~ /^ *#/) addprose(line)
    }
    if (pending != "") keyline(pending, 1)
    bad = 0; section = ""
}
{
    key = $1; split(key, part, ".")
    if (!(key in seen)) { print "yaml5.sh: " key ": not in " yamlfile > "/dev/stderr"; bad = 1; next }
    if (desc[key] == "" && part[3] == "") {
        print "yaml5.sh: " key ": no comment describes it in " yamlfile > "/dev/stderr"; bad = 1; next
    }
    if (part[1] != section) {
        section = part[1]
        print ".SS " section
        if (desc[section] != "") { print desc[section]; print ".PP" }
    }
    print ".TP"
    print ".B " key
    printf "%s; default \\fB%s\\fR; %s %s%s.\n", $2, roff($3),
        ($2 == "boolean" || $2 == "loglevel") ? "one of" : "range", $4,
        $5 == "secret" ? "; a secret, never echoed in a message" : ""
    if (desc[key] != "") { print ".br"; print desc[key] }
}
END { exit bad }
' "$keys"
sed -n '/^@KEYS@$/,$p' "$template" | sed -e '1d' -e "s|@VERSION@|$version|g"
