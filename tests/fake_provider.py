#!/usr/bin/env python3
"""fake_provider.py - a scriptable stand-in for the model providers, for tests.

Speaks the real wire format of each protocol the daemon's clients use, on its
real path, so the real client code runs end to end:

  OpenAI-compatible  POST <prefix>/chat/completions  (base_url http://127.0.0.1:PORT/v1)
  Anthropic          POST <prefix>/messages          (base_url http://127.0.0.1:PORT/v1)
  Cohere v2          POST <prefix>/chat              (base_url http://127.0.0.1:PORT/v2)
  Ollama             POST /api/chat                  (base_url http://127.0.0.1:PORT)

Answers carry tool calls and usage fields in each protocol's own shape. With
"stream": true in the request, OpenAI answers as SSE chunks ending in
"data: [DONE]", Anthropic as SSE events (message_start, content_block_start,
content_block_delta, content_block_stop, message_delta, message_stop), Cohere
as SSE events (message-start ... message-end) and Ollama as NDJSON lines.

Auth: OpenAI-compatible and Cohere need "Authorization: Bearer <key>",
Anthropic needs "x-api-key" and "anthropic-version"; a missing header (or,
with --expect-key K, a different key) gets the protocol's real 401 answer.
Ollama takes no auth.

Usage:
  python3 tests/fake_provider.py --port 0 [--port-file P] [--control-file P]
                                 [--expect-key K] [--verbose]
The first line on stdout is the port it listens on (127.0.0.1 only). With
--port-file the port is also written to that file (atomically, once
listening). The process exits on SIGTERM/SIGINT, and by itself when the
process that started it goes away.

Control API (JSON):
  POST /_control    set the behaviour. The body replaces the whole previous
                    setting (absent keys take their defaults):
      "mode":       "ok" (default) | "fail" | "hang" | "slow" | "malformed" |
                    "truncated" | "unauthorized"
                    fail: HTTP "status" (default 500) with the protocol's error
                    body; hang: never answers (until the client gives up);
                    slow: answers after delay_ms (default 1000); malformed: a
                    200 whose body is not JSON; truncated: a 200 whose JSON is
                    cut in half (with a matching Content-Length);
                    unauthorized: the protocol's 401.
      "delay_ms":   wait this long before answering (any mode)
      "status":     the HTTP status of "fail" (e.g. 429, 503)
      "count":      apply mode to the next N requests only, then back to "ok"
      "reply":      the answer text (default "fake answer to: <last user
                    message>", plus "; tool said: <result>" right after a
                    tool result)
      "tool_call":  {"name", "arguments"} (arguments an object or JSON text):
                    the next answer asks for this tool once, later ones answer
                    normally (so a tool loop sees the tool result come back)
      "error_message": the message inside a "fail" answer
      "chunk_delay_ms": pause between streamed chunks
      "pad_bytes":  add this many bytes of padding to each answer (a
                    "fake_padding" field), for size-limit tests
      "per_model":  {"model-name": {same keys}}: overrides for requests naming
                    that model (its tool_call and count are its own)
  Triggers in the text (the last user message), whatever the setting:
      "FAKE_STATUS=NNN"       answer HTTP NNN (400..599) with the
                              protocol's error body
      "FAKE_RETRY_AFTER=S"    with FAKE_STATUS: a Retry-After: S header
      "FAKE_DELAY_MS=N"       wait N ms (at most 60000) before answering
  GET /_control     the current setting
  GET /_requests    every request received, oldest first: {"method", "path",
                    "protocol", "headers" (Authorization and x-api-key values
                    replaced by "<present>"), "key_sha256" (hex SHA-256 of
                    the key presented: the Bearer token or x-api-key, or
                    null; a test can tell which key arrived without the
                    fake keeping it), "body" (parsed JSON or null),
                    "raw" (the text, only when it was not JSON), "peer_port"
                    (the client's TCP port: one per connection), and for a
                    streamed answer "stream_end": "complete" or
                    "client_gone" (the client closed the connection
                    mid-stream; seen between chunks, within 50 ms); for a
                    "hang" answer "hang_end": "client_gone" once the
                    client hangs up, with "hang_end_at" (time.time())}
  DELETE /_requests forget them
  GET /_health      {"ok": true}

--control-file PATH: a JSON file with the same content as POST /_control,
loaded at start and again whenever its modification time changes (checked
on every request); for tests that would rather write a file than POST.

Token counts: prompt = words (runs of non-blanks) in the text of all
messages (system included), completion = words of the reply (of the
arguments' JSON text for a tool call).

Python 3 standard library only.
"""
import argparse
import copy
import hashlib
import json
import re
import os
import select
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("ok", "fail", "hang", "slow", "malformed", "truncated", "unauthorized")
KEYS = ("mode", "delay_ms", "status", "count", "reply", "tool_call",
        "error_message", "chunk_delay_ms", "pad_bytes")
MAX_BODY = 16 * 1024 * 1024
STOP = threading.Event()


def words(text):
    return len(text.split()) if isinstance(text, str) else 0


def default_setting():
    return {"mode": "ok", "delay_ms": 0, "status": None, "count": None,
            "reply": None, "tool_call": None, "error_message": None,
            "chunk_delay_ms": 0, "pad_bytes": 0}


def check_setting(d, where):
    """Validate one level of a control body; returns a cleaned dict."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object")
    out = {}
    for k, v in d.items():
        if k == "per_model" and where == "control":
            continue
        if k not in KEYS:
            raise ValueError(f"{where}: unknown key {k!r}")
        out[k] = v
    if "mode" in out and out["mode"] not in MODES:
        raise ValueError(f"{where}: mode must be one of {', '.join(MODES)}")
    for k in ("delay_ms", "count", "chunk_delay_ms", "pad_bytes", "status"):
        if out.get(k) is not None and (not isinstance(out[k], int) or out[k] < 0):
            raise ValueError(f"{where}: {k} must be a non-negative integer")
    tc = out.get("tool_call")
    if tc is not None and (not isinstance(tc, dict) or not isinstance(tc.get("name"), str)):
        raise ValueError(f"{where}: tool_call must be {{\"name\", \"arguments\"}}")
    return out


class State:
    """The scripted behaviour and the request log, shared by all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.control_file = None
        self.control_mtime = None
        self.serial = 0
        self.set({})

    def set(self, body):
        top = check_setting(body, "control")
        per = body.get("per_model") or {}
        if not isinstance(per, dict):
            raise ValueError("control: per_model must be an object")
        per = {m: check_setting(v, f"per_model.{m}") for m, v in per.items()}
        with self.lock:
            self.top = dict(default_setting(), **top)
            self.per_model = per

    def get(self):
        with self.lock:
            d = copy.deepcopy(self.top)
            d["per_model"] = copy.deepcopy(self.per_model)
            return d

    def reload_control_file(self):
        path = self.control_file
        if not path:
            return
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return
        if mtime == self.control_mtime:
            return
        self.control_mtime = mtime
        try:
            with open(path, encoding="utf-8") as f:
                self.set(json.load(f))
        except (OSError, ValueError) as e:
            print(f"fake_provider: control file {path}: {e}", file=sys.stderr)

    def plan(self, model):
        """The setting for one request, consuming one-shot parts."""
        with self.lock:
            self.serial += 1
            eff = dict(self.top)
            own = self.per_model.get(model) if isinstance(model, str) else None
            if own is not None:
                eff.update(own)

            def holder(key):
                return own if own is not None and key in own else self.top
            h = holder("tool_call")
            eff["tool_call"] = h.get("tool_call")
            h["tool_call"] = None
            h = holder("count")
            if h.get("count") is not None and eff.get("mode", "ok") != "ok":
                h["count"] -= 1
                if h["count"] <= 0:
                    holder("mode")["mode"] = "ok"
                    h["count"] = None
            eff["serial"] = self.serial
            return eff

    def record(self, entry):
        with self.lock:
            self.requests.append(entry)

    def dump(self):
        with self.lock:
            return list(self.requests)

    def clear(self):
        with self.lock:
            self.requests.clear()


STATE = State()
EXPECT_KEY = None
VERBOSE = False

# ---------------------------------------------------------------------------
# Reading requests: the text of messages, per protocol


def text_of(content):
    """Text of a message content: a string, or a list of text parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for b in content:
            if isinstance(b, dict):
                if isinstance(b.get("text"), str):
                    parts.append(b["text"])
                elif b.get("type") == "tool_result":
                    parts.append(text_of(b.get("content")))
        return " ".join(p for p in parts if p)
    return ""


def user_text(content):
    """Like text_of, but without tool results (the user's own words)."""
    if isinstance(content, list):
        return " ".join(b["text"] for b in content
                        if isinstance(b, dict) and isinstance(b.get("text"), str))
    return text_of(content)


def conversation(proto, body):
    """(prompt_words, last_user_text, tool_result_or_None) of a request."""
    msgs = body.get("messages") if isinstance(body.get("messages"), list) else []
    msgs = [m for m in msgs if isinstance(m, dict)]
    prompt = sum(words(text_of(m.get("content"))) for m in msgs)
    if proto == "anthropic":
        prompt += words(text_of(body.get("system")))
    last_user = ""
    for m in reversed(msgs):
        if m.get("role") == "user" and user_text(m.get("content")):
            last_user = user_text(m.get("content"))
            break
    tool_result = None
    if msgs:
        last = msgs[-1]
        if last.get("role") == "tool":
            tool_result = text_of(last.get("content"))
        elif proto == "anthropic" and last.get("role") == "user" and \
                isinstance(last.get("content"), list):
            res = [b for b in last["content"] if isinstance(b, dict) and
                   b.get("type") == "tool_result"]
            if res:
                tool_result = text_of(res[-1].get("content"))
    return prompt, last_user, tool_result


def arguments_of(tc):
    """(object, json_text) of a scripted tool call's arguments."""
    a = tc.get("arguments", {})
    if isinstance(a, str):
        try:
            obj = json.loads(a)
        except ValueError:
            obj = {"input": a}
        if not isinstance(obj, dict):
            obj = {"input": a}
        return obj, a
    if not isinstance(a, dict):
        a = {"input": a}
    return a, json.dumps(a)


# ---------------------------------------------------------------------------
# Writing answers, per protocol


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def answer_body(proto, model, n, text, call, prompt, completion):
    """The non-streaming answer; call is (name, args_obj, args_text) or None."""
    if proto == "openai":
        msg = {"role": "assistant", "content": None if call else text, "refusal": None}
        if call:
            msg["tool_calls"] = [{"id": f"call_fake_{n}", "type": "function",
                                  "function": {"name": call[0], "arguments": call[2]}}]
        return {"id": f"chatcmpl-fake-{n}", "object": "chat.completion",
                "created": int(time.time()), "model": model, "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "message": msg, "logprobs": None,
                             "finish_reason": "tool_calls" if call else "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}
    if proto == "anthropic":
        content = ([{"type": "tool_use", "id": f"toolu_fake_{n}", "name": call[0],
                     "input": call[1]}] if call else [{"type": "text", "text": text}])
        return {"id": f"msg_fake_{n}", "type": "message", "role": "assistant",
                "model": model, "content": content,
                "stop_reason": "tool_use" if call else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion}}
    if proto == "cohere":
        if call:
            msg = {"role": "assistant", "tool_plan": f"I will use {call[0]}.",
                   "tool_calls": [{"id": f"call_fake_{n}", "type": "function",
                                   "function": {"name": call[0], "arguments": call[2]}}]}
        else:
            msg = {"role": "assistant", "content": [{"type": "text", "text": text}]}
        counts = {"input_tokens": prompt, "output_tokens": completion}
        return {"id": f"fake-{n}", "finish_reason": "TOOL_CALL" if call else "COMPLETE",
                "message": msg, "usage": {"billed_units": dict(counts), "tokens": counts}}
    msg = {"role": "assistant", "content": "" if call else text}
    if call:
        msg["tool_calls"] = [{"function": {"name": call[0], "arguments": call[1]}}]
    return {"model": model, "created_at": now_iso(), "message": msg, "done_reason": "stop",
            "done": True, "total_duration": 1000, "load_duration": 10,
            "prompt_eval_count": prompt, "prompt_eval_duration": 100,
            "eval_count": completion, "eval_duration": 100}


def error_body(proto, status, message):
    if proto == "openai":
        kind = {401: "invalid_request_error", 429: "requests"}.get(status, "server_error")
        code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    if proto == "anthropic":
        kind = {400: "invalid_request_error", 401: "authentication_error",
                429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if proto == "cohere":
        return {"id": "fake-error", "message": message}
    return {"error": message}


def stream_events(proto, model, n, text, call, prompt, completion, include_usage):
    """The streamed answer as a list of (event_name_or_None, json_obj) or
    raw strings; the writer frames them per protocol."""
    pieces = [w + " " for w in text.split(" ")] if text else []
    if pieces:
        pieces[-1] = pieces[-1][:-1]
    created = int(time.time())
    out = []
    if proto == "openai":
        def chunk(delta, finish=None):
            return {"id": f"chatcmpl-fake-{n}", "object": "chat.completion.chunk",
                    "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]}
        out.append(chunk({"role": "assistant", "content": ""}))
        if call:
            out.append(chunk({"tool_calls": [{"index": 0, "id": f"call_fake_{n}",
                                              "type": "function",
                                              "function": {"name": call[0], "arguments": ""}}]}))
            half = len(call[2]) // 2
            for part in (call[2][:half], call[2][half:]):
                out.append(chunk({"tool_calls": [{"index": 0,
                                                  "function": {"arguments": part}}]}))
        for p in pieces:
            out.append(chunk({"content": p}))
        out.append(chunk({}, "tool_calls" if call else "stop"))
        if include_usage:
            out.append({"id": f"chatcmpl-fake-{n}", "object": "chat.completion.chunk",
                        "created": created, "model": model, "choices": [],
                        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                  "total_tokens": prompt + completion}})
        out.append("[DONE]")
        return out
    if proto == "anthropic":
        out.append(("message_start", {"type": "message_start", "message": {
            "id": f"msg_fake_{n}", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1}}}))
        if call:
            out.append(("content_block_start", {"type": "content_block_start", "index": 0,
                        "content_block": {"type": "tool_use", "id": f"toolu_fake_{n}",
                                          "name": call[0], "input": {}}}))
            out.append(("ping", {"type": "ping"}))
            half = len(call[2]) // 2
            for part in (call[2][:half], call[2][half:]):
                out.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                            "delta": {"type": "input_json_delta", "partial_json": part}}))
        else:
            out.append(("content_block_start", {"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}))
            out.append(("ping", {"type": "ping"}))
            for p in pieces:
                out.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": p}}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        out.append(("message_delta", {"type": "message_delta",
                    "delta": {"stop_reason": "tool_use" if call else "end_turn",
                              "stop_sequence": None},
                    "usage": {"output_tokens": completion}}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out
    if proto == "cohere":
        out.append(("message-start", {"id": f"fake-{n}", "type": "message-start",
                    "delta": {"message": {"role": "assistant", "content": [],
                                          "tool_plan": "", "tool_calls": [],
                                          "citations": []}}}))
        if call:
            out.append(("tool-call-start", {"type": "tool-call-start", "index": 0,
                        "delta": {"message": {"tool_calls": {
                            "id": f"call_fake_{n}", "type": "function",
                            "function": {"name": call[0], "arguments": ""}}}}}))
            out.append(("tool-call-delta", {"type": "tool-call-delta", "index": 0,
                        "delta": {"message": {"tool_calls": {
                            "function": {"arguments": call[2]}}}}}))
            out.append(("tool-call-end", {"type": "tool-call-end", "index": 0}))
        else:
            out.append(("content-start", {"type": "content-start", "index": 0,
                        "delta": {"message": {"content": {"type": "text", "text": ""}}}}))
            for p in pieces:
                out.append(("content-delta", {"type": "content-delta", "index": 0,
                            "delta": {"message": {"content": {"text": p}}}}))
            out.append(("content-end", {"type": "content-end", "index": 0}))
        counts = {"input_tokens": prompt, "output_tokens": completion}
        out.append(("message-end", {"type": "message-end", "delta": {
            "finish_reason": "TOOL_CALL" if call else "COMPLETE",
            "usage": {"billed_units": dict(counts), "tokens": counts}}}))
        return out
    # ollama NDJSON
    for p in pieces:
        out.append({"model": model, "created_at": now_iso(),
                    "message": {"role": "assistant", "content": p}, "done": False})
    if call:
        out.append({"model": model, "created_at": now_iso(),
                    "message": {"role": "assistant", "content": "",
                                "tool_calls": [{"function": {"name": call[0],
                                                             "arguments": call[1]}}]},
                    "done": False})
    out.append({"model": model, "created_at": now_iso(),
                "message": {"role": "assistant", "content": ""}, "done_reason": "stop",
                "done": True, "total_duration": 1000, "prompt_eval_count": prompt,
                "eval_count": completion})
    return out


def protocol_of(path):
    path = path.split("?", 1)[0]
    if path.endswith("/api/chat"):
        return "ollama"
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/messages"):
        return "anthropic"
    if path.endswith("/chat"):
        return "cohere"
    return None


# ---------------------------------------------------------------------------
# The HTTP handler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-provider/1"
    # The headers and the body go out in separate writes: with Nagle on, a
    # kept-alive client (libcurl reuses its connection) would wait for a
    # delayed ACK, 40 ms, before the body of every answer.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        if VERBOSE:
            sys.stderr.write("fake_provider: " + (fmt % args) + "\n")

    # -- plumbing --------------------------------------------------------

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def send_bytes(self, status, data, ctype="application/json", length=None, extra=None):
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_json(self, status, obj):
        self.send_bytes(status, json.dumps(obj).encode())

    def start_chunked(self, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def client_gone(self):
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if r:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        return False

    def hang(self):
        """Answer nothing until the client hangs up (or 10 minutes)."""
        self.close_connection = True
        deadline = time.monotonic() + 600
        while not STOP.is_set() and time.monotonic() < deadline:
            if self.client_gone():
                self.entry["hang_end"] = "client_gone"
                self.entry["hang_end_at"] = time.time()
                return
            time.sleep(0.05)

    def sleep_ms(self, ms):
        end = time.monotonic() + ms / 1000.0
        while time.monotonic() < end and not STOP.is_set():
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    # -- control API -----------------------------------------------------

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/_requests":
            return self.send_json(200, STATE.dump())
        if path == "/_control":
            return self.send_json(200, STATE.get())
        if path == "/_health":
            return self.send_json(200, {"ok": True})
        self.send_json(404, {"error": "not found"})

    def do_DELETE(self):
        if self.path.split("?", 1)[0] == "/_requests":
            STATE.clear()
            return self.send_json(200, {"ok": True})
        self.send_json(404, {"error": "not found"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        try:
            raw = self.read_body()
        except ValueError as e:
            self.close_connection = True
            return self.send_json(413, {"error": str(e)})
        if path == "/_control":
            try:
                STATE.set(json.loads(raw or b"{}"))
            except (ValueError, AttributeError) as e:
                return self.send_json(400, {"error": str(e)})
            return self.send_json(200, {"ok": True, "control": STATE.get()})
        proto = protocol_of(path)
        body = None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            pass
        entry = {"method": "POST", "path": path, "protocol": proto,
                 "headers": self.recorded_headers(), "key_sha256": self.key_digest(),
                 "body": body, "peer_port": self.client_address[1]}
        if body is None and raw:
            entry["raw"] = raw.decode("utf-8", "replace")
        STATE.record(entry)
        self.entry = entry
        if proto is None:
            return self.send_json(404, {"error": f"no such endpoint {path}"})
        STATE.reload_control_file()
        self.provider(proto, body)

    def key_digest(self):
        h = self.headers.get("Authorization") or ""
        key = h[7:].strip() if h.startswith("Bearer ") else (self.headers.get("x-api-key") or "")
        return hashlib.sha256(key.encode("utf-8")).hexdigest() if key else None

    def recorded_headers(self):
        out = {}
        for k, v in self.headers.items():
            out[k] = "<present>" if k.lower() in ("authorization", "x-api-key") else v
        return out

    # -- the providers ---------------------------------------------------

    def auth_problem(self, proto):
        """The 401 message for a request without the right key, else None."""
        if proto in ("openai", "cohere"):
            h = self.headers.get("Authorization") or ""
            if not h.startswith("Bearer ") or not h[7:].strip():
                return "You didn't provide an API key." if proto == "openai" \
                    else "no api key supplied"
            key = h[7:].strip()
        elif proto == "anthropic":
            key = self.headers.get("x-api-key") or ""
            if not key:
                return "x-api-key header is required"
        else:
            return None
        if EXPECT_KEY is not None and key != EXPECT_KEY:
            # Real providers quote (part of) the wrong key back; quote it
            # whole, so the client's scrubbing is what keeps it out of logs.
            return f"Incorrect API key provided: {key}"
        return None

    def provider(self, proto, body):
        if not isinstance(body, dict):
            return self.send_json(400, error_body(proto, 400, "request body is not a JSON object"))
        problem = self.auth_problem(proto)
        if problem:
            return self.send_json(401, error_body(proto, 401, problem))
        if proto == "anthropic" and not self.headers.get("anthropic-version"):
            return self.send_json(400, error_body(proto, 400,
                                                  "anthropic-version header is required"))
        model = body.get("model") if isinstance(body.get("model"), str) else ""
        if self.text_trigger(proto, body):
            return None
        plan = STATE.plan(model)
        mode = plan["mode"]
        delay = plan.get("delay_ms") or (1000 if mode == "slow" else 0)
        if delay:
            self.sleep_ms(delay)
        if mode == "hang":
            return self.hang()
        if mode == "unauthorized":
            return self.send_json(401, error_body(proto, 401, "invalid x-api-key"
                                                  if proto == "anthropic" else
                                                  "Incorrect API key provided."))
        if mode == "fail":
            status = plan.get("status") or 500
            msg = plan.get("error_message") or f"the fake provider was told to fail ({status})"
            return self.send_json(status, error_body(proto, status, msg))
        if mode == "malformed":
            return self.send_bytes(200, b"<html>this is not JSON {\"choices\": [")
        self.answer(proto, body, model, plan)

    def text_trigger(self, proto, body):
        """FAKE_DELAY_MS / FAKE_STATUS / FAKE_RETRY_AFTER in the last user
        message: wait, then answer the status. True if it answered."""
        _, last_user, _ = conversation(proto, body)
        m = re.search(r"FAKE_DELAY_MS=(\d+)", last_user)
        if m:
            self.sleep_ms(min(int(m.group(1)), 60000))
        m = re.search(r"FAKE_STATUS=(\d{3})", last_user)
        if not m or not 400 <= int(m.group(1)) <= 599:
            return False
        status = int(m.group(1))
        ra = re.search(r"FAKE_RETRY_AFTER=(\d+)", last_user)
        extra = {"Retry-After": ra.group(1)} if ra else None
        data = json.dumps(error_body(proto, status, f"the text asked for {status}")).encode()
        self.send_bytes(status, data, extra=extra)
        return True

    def answer(self, proto, body, model, plan):
        prompt, last_user, tool_result = conversation(proto, body)
        tc = plan.get("tool_call")
        call = None
        if tc:
            obj, text = arguments_of(tc)
            call = (tc["name"], obj, text)
            completion = words(text)
            reply = ""
        else:
            reply = plan.get("reply")
            if reply is None:
                reply = f"fake answer to: {last_user}"
                if tool_result is not None:
                    reply += f"; tool said: {tool_result}"
            completion = words(reply)
        n = plan["serial"]
        if body.get("stream") is True:
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
            return self.stream(proto, stream_events(proto, model, n, reply, call, prompt,
                                                    completion, include_usage), plan)
        obj = answer_body(proto, model, n, reply, call, prompt, completion)
        if plan.get("pad_bytes"):
            obj["fake_padding"] = "x" * plan["pad_bytes"]
        data = json.dumps(obj).encode()
        if plan["mode"] == "truncated":
            data = data[:len(data) // 2]
        self.send_bytes(200, data)

    def stream(self, proto, events, plan):
        ctype = "application/x-ndjson" if proto == "ollama" else "text/event-stream"
        self.start_chunked(ctype)
        pause = plan.get("chunk_delay_ms") or 0
        try:
            for i, ev in enumerate(events):
                if plan["mode"] == "truncated" and i >= len(events) // 2:
                    break
                if proto == "ollama":
                    frame = json.dumps(ev) + "\n"
                elif isinstance(ev, tuple):
                    frame = f"event: {ev[0]}\ndata: {json.dumps(ev[1])}\n\n"
                elif isinstance(ev, str):
                    frame = f"data: {ev}\n\n"
                else:
                    frame = f"data: {json.dumps(ev)}\n\n"
                self.write_chunk(frame.encode())
                end = time.monotonic() + pause / 1000.0
                while True:
                    if self.client_gone():
                        raise ConnectionResetError()
                    left = end - time.monotonic()
                    if left <= 0 or STOP.is_set():
                        break
                    time.sleep(min(0.05, left))
            self.write_chunk(b"")
            self.entry["stream_end"] = "complete"
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self.entry["stream_end"] = "client_gone"


# ---------------------------------------------------------------------------


def watch_parent(ppid):
    """Exit when the process that started us is gone (a crashed test)."""
    while not STOP.is_set():
        if os.getppid() != ppid:
            os._exit(0)
        time.sleep(0.5)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client that hangs up (a timeout, a size limit) is routine here.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)) and not VERBOSE:
            return
        super().handle_error(request, client_address)


def main():
    global EXPECT_KEY, VERBOSE
    ap = argparse.ArgumentParser(description="scriptable fake model provider")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--control-file")
    ap.add_argument("--expect-key")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    EXPECT_KEY = args.expect_key
    VERBOSE = args.verbose
    STATE.control_file = args.control_file
    STATE.reload_control_file()

    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]

    def stop(signum, frame):
        STOP.set()
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    ppid = os.getppid()
    if ppid != 1:
        threading.Thread(target=watch_parent, args=(ppid,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except SystemExit:
        pass
    finally:
        STOP.set()
        server.server_close()


if __name__ == "__main__":
    main()
