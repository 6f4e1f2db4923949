// api.js - the only code of the Studio that talks to the server: the
// public API under /api/v1 (same origin), the credentials (an access token
// kept in memory only and refreshed before it expires, or an API key) and
// the error envelope turned into ApiError. Must never store a credential
// in localStorage, a cookie or the URL of the page.

const BASE = '/api/v1';
const cred = { access: null, refresh: null, apiKey: null, slug: null, timer: null, inflight: null };
let signedOut = () => {};

// An answer that is not 2xx: the SPEC envelope's fields (error, message,
// status, details) or, if the body was not one, a generic message.
export class ApiError extends Error {
  constructor(status, body) {
    const b = body && typeof body === 'object' ? body : {};
    super(b.message || `The server answered ${status}.`);
    this.status = status;
    this.code = b.error || 'http_' + status;
    this.details = Array.isArray(b.details) ? b.details : [];
  }
}

// Called when the credentials are gone for good (logout, dead refresh).
export function onSignedOut(fn) { signedOut = fn; }
export function slug() { return cred.slug; }
export function signedIn() { return !!(cred.access || cred.apiKey); }
export function usesKey() { return !!cred.apiKey; }
export function orgPath(p) { return `/orgs/${encodeURIComponent(cred.slug)}${p}`; }

function authHeaders() {
  if (cred.apiKey) return { 'X-API-Key': cred.apiKey };
  if (cred.access) return { Authorization: 'Bearer ' + cred.access };
  return {};
}

async function parse(resp) {
  const type = resp.headers.get('Content-Type') || '';
  if (resp.status === 204) return null;
  if (type.includes('json')) return resp.json().catch(() => null);
  return resp.text();
}

// One request, no retry. Returns the fetch Response.
function send(method, path, body, extra) {
  const headers = Object.assign({}, authHeaders(), extra || {});
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return fetch(BASE + path, init);
}

// A request with the session's credentials; a 401 on a token is answered
// by one refresh and one retry, so an expired access token never shows.
// Returns the Response (for streaming callers); throws on network errors.
export async function request(method, path, body, extra) {
  let resp = await send(method, path, body, extra);
  if (resp.status === 401 && cred.refresh && !cred.apiKey) {
    if (await refreshNow()) resp = await send(method, path, body, extra);
  }
  return resp;
}

// The parsed body of a 2xx answer; an ApiError otherwise.
export async function api(method, path, body) {
  const resp = await request(method, path, body);
  const data = await parse(resp);
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

export async function publicConfig() {
  const resp = await fetch(BASE + '/config', { cache: 'no-store' });
  if (!resp.ok) throw new ApiError(resp.status, await parse(resp));
  return resp.json();
}

function takeTokens(t) {
  cred.access = t.access_token;
  cred.refresh = t.refresh_token;
  cred.apiKey = null;
  if (t.org_slug) cred.slug = t.org_slug;
  clearTimeout(cred.timer);
  // refresh at three quarters of the lifetime: well before it expires
  const ms = Math.max(5, Number(t.expires_in) || 900) * 750;
  cred.timer = setTimeout(() => { refreshNow(); }, ms);
}

export async function devLogin(email, name) {
  const resp = await fetch(BASE + '/auth/dev/login', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(name ? { email, name } : { email }) });
  const data = await parse(resp);
  if (!resp.ok) throw new ApiError(resp.status, data);
  takeTokens(data);
}

// Sign in with an org API key: checked by listing the org's agents.
export async function keyLogin(key, orgSlug) {
  cred.access = cred.refresh = null;
  cred.apiKey = key;
  cred.slug = orgSlug;
  try {
    await api('GET', orgPath('/agents'));
  } catch (e) {
    cred.apiKey = cred.slug = null;
    throw e;
  }
}

// Rotate the tokens once (concurrent callers share the one call).
// Returns true if a fresh access token is in hand.
export function refreshNow() {
  if (!cred.refresh) return Promise.resolve(false);
  if (cred.inflight) return cred.inflight;
  const rt = cred.refresh;
  cred.inflight = fetch(BASE + '/auth/refresh', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: rt }) })
    .then(async (resp) => {
      if (!resp.ok) { forget(); signedOut('Your session has ended. Please sign in again.'); return false; }
      takeTokens(await resp.json());
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
      return true;
    })
    .catch(() => false)
    .finally(() => { cred.inflight = null; });
  return cred.inflight;
}

function forget() {
  clearTimeout(cred.timer);
  cred.access = cred.refresh = cred.apiKey = cred.slug = null;
}

export async function logout() {
  if (cred.access) {
    try { await send('POST', '/auth/logout'); } catch (e) { /* signed out here anyway */ }
  }
  forget();
  signedOut('');
}

// The WebSocket URL of an agent's stream, credentials in the query (a
// browser cannot set headers on a WebSocket).
export function streamUrl(name) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const q = cred.apiKey ? 'api_key=' + encodeURIComponent(cred.apiKey)
    : 'token=' + encodeURIComponent(cred.access || '');
  return `${proto}//${location.host}${BASE}${orgPath('/agents/' + encodeURIComponent(name) + '/stream')}?${q}`;
}
