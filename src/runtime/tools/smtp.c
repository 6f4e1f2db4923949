/*
 * smtp.c - the email_sender tool: build a plain-text RFC 5322 message and
 * hand it to the server's smtp_url through libcurl.
 *
 * Owns nothing beyond one call (the message, the recipient list and the
 * curl handle are freed before it returns). Must not let a recipient,
 * subject or sender carry CR or LF into a header (header injection), must
 * not send to a domain outside the agent's allowed_domains when that is
 * set, must not use a proxy, and must not log.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "runtime/tools/smtp.h"
#include "runtime/tools/tool_common.h"
#include "lib/buf.h"
#include "lib/util.h"

#define MAIL_MAX_RCPT 10
#define MAIL_BODY_MAX (256u * 1024)
#define MAIL_SUBJECT_MAX 900

/* addr-spec without comments or quoting: local@domain, printable ASCII. */
static bool mail_addr_ok(const char *a, size_t n)
{
    const char *at = memchr(a, '@', n), *c;

    if (n == 0 || n > 254 || at == NULL || at == a || at == a + n - 1 || at - a > 64)
        return false;
    for (c = a; c < at; c++)
        if (*c <= ' ' || *c >= 0x7f || strchr("<>()[]\\,;:@\"", *c))
            return false;
    for (c = at + 1; c < a + n; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.')
            return false;
    return at[1] != '.' && a[n - 1] != '.' && memmem(at, (size_t)(a + n - at), "..", 2) == NULL;
}

/* Split "to" (a string, comma-separated, or an array of strings) into
 * addresses, each checked and, when allowed_domains is set, in it. */
static struct json_object *mail_recipients(struct json_object *args, const struct tools_ctx *ctx,
                                           char rcpt[][256], int *nrcpt)
{
    struct json_object *to = NULL, *allowed = tool_cfg_get(ctx, "allowed_domains", json_type_array);
    const char *parts[MAIL_MAX_RCPT + 1];
    size_t plen[MAIL_MAX_RCPT + 1];
    int i, np = 0, nr = 0;

    if (!json_object_object_get_ex(args, "to", &to) || to == NULL)
        return tool_reply_error("missing required argument 'to'");
    if (json_object_is_type(to, json_type_array)) {
        size_t k, n = json_object_array_length(to);

        for (k = 0; k < n && np <= MAIL_MAX_RCPT; k++) {
            struct json_object *e = json_object_array_get_idx(to, k);

            if (!json_object_is_type(e, json_type_string))
                return tool_reply_error("argument 'to' must hold strings");
            parts[np] = json_object_get_string(e);
            plen[np++] = (size_t)json_object_get_string_len(e);
        }
    } else if (json_object_is_type(to, json_type_string)) {
        const char *s = json_object_get_string(to), *end = s + json_object_get_string_len(to);

        while (s < end && np <= MAIL_MAX_RCPT) {
            const char *comma = memchr(s, ',', (size_t)(end - s));
            size_t n = comma ? (size_t)(comma - s) : (size_t)(end - s);

            parts[np] = s;
            plen[np++] = n;
            s += n + (comma != NULL);
        }
    } else {
        return tool_reply_error("argument 'to' must be a string or a list of strings");
    }
    if (np == 0)
        return tool_reply_error("argument 'to' names no recipient");
    if (np > MAIL_MAX_RCPT)
        return tool_reply_error("too many recipients (limit %d)", MAIL_MAX_RCPT);
    for (i = 0; i < np; i++) {
        const char *a = parts[i];
        size_t n = plen[i];

        while (n > 0 && (*a == ' ' || *a == '\t'))
            a++, n--;
        while (n > 0 && (a[n - 1] == ' ' || a[n - 1] == '\t'))
            n--;
        if (n == 0 && np > 1)
            continue;                          /* "a@x, b@y," */
        if (memchr(a, '\r', n) || memchr(a, '\n', n) || memchr(a, '\0', n))
            return tool_reply_error("recipient contains CR, LF or NUL (header injection refused)");
        if (!mail_addr_ok(a, n))
            return tool_reply_error("invalid recipient address '%.*s'", (int)(n > 254 ? 254 : n), a);
        memcpy(rcpt[nr], a, n);
        rcpt[nr][n] = '\0';
        if (allowed && !tool_list_matches(allowed, strchr(rcpt[nr], '@') + 1))
            return tool_reply_error("recipient domain '%s' is not in this agent's allowed_domains",
                               strchr(rcpt[nr], '@') + 1);
        nr++;
    }
    *nrcpt = nr;
    return NULL;
}

/* Append the base64 of s[0..n) to b. */
static void b64_put(struct buf *b, const unsigned char *s, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;

    for (i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        char quad[4] = { tbl[v >> 18 & 63], tbl[v >> 12 & 63], i + 1 < n ? tbl[v >> 6 & 63] : '=',
                         i + 2 < n ? tbl[v & 63] : '=' };

        buf_put(b, quad, 4);
    }
}

char *smtp_subject(const char *s)
{
    struct buf out = { 0 };
    size_t n = strlen(s), i = 0, k;

    for (k = 0; k < n && (unsigned char)s[k] < 0x80; k++)
        ;
    if (k == n)
        return xstrdup(s);
    while (i < n) {
        size_t take = 0, q;

        while (i + take < n && (q = tool_utf8_seq((const unsigned char *)s + i + take, n - i - take)) &&
               take + q <= 45)
            take += q;
        if (take == 0)
            take = 1;                          /* cannot happen for valid UTF-8 */
        buf_puts(&out, i ? "\r\n =?UTF-8?B?" : "=?UTF-8?B?");
        b64_put(&out, (const unsigned char *)s + i, take);
        buf_puts(&out, "?=");
        i += take;
    }
    return buf_take(&out);
}

char *smtp_body(const char *s, size_t n)
{
    struct buf out;
    size_t i, col = 0;

    buf_init(&out, n + n / 990 * 2 + 3);
    for (i = 0; i < n; i++) {
        if (s[i] == '\r' || s[i] == '\n') {
            if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
                i++;
            buf_puts(&out, "\r\n");
            col = 0;
            continue;
        }
        if (col >= 990 && ((unsigned char)s[i] & 0xc0) != 0x80) {
            buf_puts(&out, "\r\n");
            col = 0;
        }
        buf_put(&out, s + i, 1);
        col++;
    }
    if (out.n < 2 || out.z[out.n - 1] != '\n')
        buf_puts(&out, "\r\n");
    return buf_take(&out);
}

/* The full RFC 5322 message. malloc'd; *msgid gets the Message-ID. */
static char *mail_message(const char *from, const char *from_addr, char rcpt[][256], int nrcpt,
                          const char *subject, const char *body, size_t body_len, char *msgid,
                          size_t idcap)
{
    static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char *const mons[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    char date[64], *subj = smtp_subject(subject), *text = smtp_body(body, body_len);
    unsigned char rnd[12];
    time_t now = (time_t)util_now();
    struct buf msg;
    struct tm tm;
    size_t n, i;

    gmtime_r(&now, &tm);
    snprintf(date, sizeof(date), "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
             tm.tm_mday, mons[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        for (i = 0; i < sizeof(rnd); i++)
            rnd[i] = (unsigned char)(util_monotonic_ms() >> (i % 8 * 8)) ^ (unsigned char)i;
    n = (size_t)snprintf(msgid, idcap, "<%lld.", (long long)now);
    for (i = 0; i < sizeof(rnd) && n + 3 < idcap; i++, n += 2)
        snprintf(msgid + n, idcap - n, "%02x", rnd[i]);
    snprintf(msgid + n, idcap - n, "@%s>", strchr(from_addr, '@') + 1);
    buf_init(&msg, strlen(subj) + strlen(text) + 1024);
    buf_puts(&msg, "Date: ");
    buf_puts(&msg, date);
    buf_puts(&msg, "\r\nFrom: ");
    buf_puts(&msg, from);
    buf_puts(&msg, "\r\nTo: ");
    for (i = 0; i < (size_t)nrcpt; i++) {
        if (i)
            buf_puts(&msg, ", ");
        buf_puts(&msg, rcpt[i]);
    }
    buf_puts(&msg, "\r\nSubject: ");
    buf_puts(&msg, subj);
    buf_puts(&msg, "\r\nMessage-ID: ");
    buf_puts(&msg, msgid);
    buf_puts(&msg, "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                   "Content-Transfer-Encoding: 8bit\r\nX-Mailer: astromesh-cloud\r\n\r\n");
    buf_puts(&msg, text);
    free(subj);
    free(text);
    return buf_take(&msg);
}

struct mail_src {
    const char *data;
    size_t len, off;
};

static size_t mail_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct mail_src *m = ud;
    size_t n = size * nitems;

    if (n > m->len - m->off)
        n = m->len - m->off;
    memcpy(buf, m->data + m->off, n);
    m->off += n;
    return n;
}

/* The sender: tool_config "from" or the server's smtp_from, either a bare
 * address or "Name <address>". Fills addr with the bare address. */
static struct json_object *mail_sender(const struct tools_ctx *ctx, const char **from, char *addr,
                                       size_t cap)
{
    const char *lt, *gt;

    *from = tool_cfg_str(ctx, "from");
    if (*from == NULL)
        *from = ctx->settings->smtp_from;
    if (*from == NULL || **from == '\0')
        return tool_reply_error("email has no sender address configured on this server");
    if (strpbrk(*from, "\r\n"))
        return tool_reply_error("the sender address contains CR or LF");
    lt = strrchr(*from, '<');
    gt = lt ? strchr(lt, '>') : NULL;
    if (lt && gt && (size_t)(gt - lt - 1) < cap) {
        memcpy(addr, lt + 1, (size_t)(gt - lt - 1));
        addr[gt - lt - 1] = '\0';
    } else {
        util_strlcpy(addr, *from, cap);
    }
    if (!mail_addr_ok(addr, strlen(addr)))
        return tool_reply_error("the configured sender address is invalid");
    return NULL;
}

static struct json_object *mail_send(const struct tools_ctx *ctx, const char *from_addr,
                                     char rcpt[][256], int nrcpt, const char *msg)
{
    struct mail_src src = { msg, strlen(msg), 0 };
    struct curl_slist *to = NULL;
    char errbuf[CURL_ERROR_SIZE] = "", buf[260];
    long timeout_ms = tool_timeout_ms(ctx);
    long code = 0;
    CURLcode rc;
    CURL *h = curl_easy_init();
    int i;

    if (h == NULL)
        return tool_reply_error("sending failed: out of resources");
    for (i = 0; i < nrcpt; i++) {
        snprintf(buf, sizeof(buf), "<%.254s>", rcpt[i]);
        to = curl_slist_append(to, buf);
    }
    snprintf(buf, sizeof(buf), "<%.254s>", from_addr);
    curl_easy_setopt(h, CURLOPT_URL, ctx->settings->smtp_url);
    tool_curl_protocols(h, "smtp,smtps", CURLPROTO_SMTP | CURLPROTO_SMTPS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, buf);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, to);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, mail_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &src);
    rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    curl_slist_free_all(to);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return tool_reply_error("sending failed: the mail server did not answer within %ld ms", timeout_ms);
    if (rc != CURLE_OK)
        return tool_reply_error("sending failed: %s (SMTP %ld)", errbuf[0] ? errbuf : curl_easy_strerror(rc),
                           code);
    return NULL;
}

struct json_object *smtp_email_sender(struct json_object *args, const struct tools_ctx *ctx)
{
    struct json_object *err = NULL, *o, *lst;
    char rcpt[MAIL_MAX_RCPT][256], from_addr[256], msgid[320], *msg;
    const char *subject, *body, *from;
    size_t body_len;
    int nrcpt = 0, i;

    if (ctx->settings->smtp_url == NULL || ctx->settings->smtp_url[0] == '\0')
        return tool_reply_error("email is not configured on this server");
    if ((subject = tool_arg_str(args, "subject", true, MAIL_SUBJECT_MAX, NULL, &err)) == NULL ||
        (body = tool_arg_str(args, "body", true, MAIL_BODY_MAX, &body_len, &err)) == NULL)
        return err;
    if (strpbrk(subject, "\r\n"))
        return tool_reply_error("subject contains CR or LF (header injection refused)");
    if ((err = mail_recipients(args, ctx, rcpt, &nrcpt)) != NULL ||
        (err = mail_sender(ctx, &from, from_addr, sizeof(from_addr))) != NULL)
        return err;
    msg = mail_message(from, from_addr, rcpt, nrcpt, subject, body, body_len, msgid, sizeof(msgid));
    err = mail_send(ctx, from_addr, rcpt, nrcpt, msg);
    free(msg);
    if (err)
        return err;
    o = json_object_new_object();
    json_object_object_add(o, "sent", json_object_new_boolean(1));
    lst = json_object_new_array();
    for (i = 0; i < nrcpt; i++)
        json_object_array_add(lst, json_object_new_string(rcpt[i]));
    json_object_object_add(o, "to", lst);
    json_object_object_add(o, "message_id", json_object_new_string(msgid));
    return tool_reply_result(o);
}

