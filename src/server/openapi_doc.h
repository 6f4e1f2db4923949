/*
 * openapi_doc.h - docs/openapi.json, built into the daemon: make writes
 * openapi_doc.c from that file (od and sed, Makefile.am), so the document
 * served at GET /api/v1/openapi.json is always the one of this binary.
 *
 * Must never: be edited by hand on the .c side (it is regenerated from
 * docs/openapi.json at every change of that file).
 */
#ifndef AM_SERVER_OPENAPI_DOC_H
#define AM_SERVER_OPENAPI_DOC_H

#include <stddef.h>

/* The bytes of docs/openapi.json, NUL-terminated (the NUL is not counted). */
extern const unsigned char openapi_doc_json[];
/* Their count. */
extern const size_t openapi_doc_json_len;
/* A strong ETag of them, quotes included: "<cksum>-<length>". */
extern const char openapi_doc_etag[];

#endif
