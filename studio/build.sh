#!/bin/sh
# build.sh - make the Studio's served tree from its sources:
#   studio/build.sh SRCDIR OUTDIR
# Every file but index.html gets the name stem.<hash>.ext, <hash> being the
# first 12 hex digits of the SHA-256 of all the sources together (one change
# anywhere renames them all, so a cached old file is never mixed with a new
# one); index.html and the JavaScript imports are rewritten to those names.
# The front server caches the hashed files for a year and index.html not at
# all (etc/lighttpd/astromesh-cloud-studio.conf, etc/apache2/).
set -eu
src=$1
out=$2
files="style.css js/api.js js/ui.js js/app.js js/wizard.js js/console.js js/usage.js js/org.js"
# shellcheck disable=SC2086  # $files is a list of words
hash=$( (cd "$src" && cat index.html $files) | sha256sum | cut -c1-12)
tmp=$out.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp/js"
# ./x.js -> ./x.HASH.js in imports; style.css and js/app.js in index.html
rewrite() {
    sed -e "s#\(['\"]\)\./\([a-z_]*\)\.js\(['\"]\)#\1./\2.$hash.js\3#g" \
        -e "s#href=\"style\.css\"#href=\"style.$hash.css\"#" \
        -e "s#src=\"js/app\.js\"#src=\"js/app.$hash.js\"#" "$1"
}
for f in $files; do
    stem=${f%.*}
    ext=${f##*.}
    rewrite "$src/$f" >"$tmp/$stem.$hash.$ext"
done
rewrite "$src/index.html" >"$tmp/index.html"
rm -rf "$out"
mv "$tmp" "$out"
