// The dashboard's only door to Joule: the public HTTP API of CONTRACT §3.
// The token (owner key or admin token) lives in sessionStorage; with auth.mode="disabled"
// requests go without one.

const TOKEN_KEY = 'joule.token';

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
  // True when the server does not have this route at all (an older or partial build).
  get routeMissing() {
    return (
      (this.status === 404 && /^no route/.test(this.message || '')) || this.status === 405
    );
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// A 401 to a request made with the stored key: the key was revoked or is no longer valid
// (SECURITY.md: revocation is immediate). The app listens and asks to sign in again, instead
// of every page showing its own error (or a fleet of "offline · never" devices).
const keyRejectedListeners = new Set();
export function onKeyRejected(fn) {
  keyRejectedListeners.add(fn);
  return () => keyRejectedListeners.delete(fn);
}
function keyRejected() {
  for (const fn of [...keyRejectedListeners]) fn();
}

export async function api(path, { method = 'GET', body, signal, token } = {}) {
  const headers = { Accept: 'application/json' };
  const t = token === undefined ? getToken() : token;
  if (t) headers.Authorization = 'Bearer ' + t;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'Cannot reach Joule (' + e.message + ')');
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    // (A token passed explicitly is being tried, e.g. at sign-in: its 401 is the caller's.)
    if (res.status === 401 && token === undefined) keyRejected();
    const err = (json && json.error) || {};
    throw new ApiError(res.status, err.code || 'http_' + res.status, err.message || res.statusText || 'HTTP ' + res.status, json);
  }
  return json;
}

export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  }
  const s = p.toString();
  return s ? '?' + s : '';
}

// Every device the caller may see (pages of up to 1,000), or every device of `ownerId`.
export async function listAllDevices(signal, ownerId) {
  const out = [];
  let cursor = '';
  for (let page = 0; page < 100; page++) {
    const r = await api('/v1/devices' + qs({ owner_id: ownerId, limit: 1000, cursor }), { signal });
    out.push(...(r.devices || []));
    if (!r.next_cursor) break;
    cursor = r.next_cursor;
  }
  return out;
}

// Server-Sent Events over fetch(), so the Authorization header can be sent (EventSource
// cannot). Reconnects with backoff; returns a function that closes the stream.
//
// Each stream holds one HTTP/1.1 connection, and a browser opens at most 6 per host (Joule
// serves HTTP/1.1): six tabs with a stream would leave every further request of this
// origin, in any tab, waiting. So the stream is closed while the tab is hidden (Page
// Visibility API; status "paused") and reopened when it is visible again. onStatus('live')
// is reported on every (re)connect after the first too: events sent while the stream was
// down or paused are not replayed, so the caller re-fetches what it shows (`resync`).
export function openStream(query, { onEvent, onStatus } = {}) {
  let stopped = false;
  let ctrl = null;  // the current connection's
  let wake = null;  // ends the current wait (backoff, or paused while hidden)
  let delay = 1000;
  let connected = 0;
  const status = (s, detail) => onStatus && onStatus(s, detail, connected);
  const hidden = () => document.visibilityState === 'hidden';
  const onVisibility = () => {
    if (hidden() && ctrl) ctrl.abort();
    if (!hidden()) delay = 1000;
    if (wake) wake();
  };
  document.addEventListener('visibilitychange', onVisibility);
  const wait = (ms) =>
    new Promise((r) => {
      const t = ms === undefined ? null : setTimeout(r, ms);
      wake = () => {
        clearTimeout(t);
        r();
      };
    }).then(() => {
      wake = null;
    });
  (async () => {
    while (!stopped) {
      if (hidden()) {
        status('paused');
        await wait();
        continue;
      }
      ctrl = new AbortController();
      try {
        const headers = { Accept: 'text/event-stream' };
        const t = getToken();
        if (t) headers.Authorization = 'Bearer ' + t;
        const res = await fetch('/v1/stream' + qs(query), {
          headers,
          signal: ctrl.signal,
          cache: 'no-store',
        });
        if (!res.ok) {
          status('error', 'HTTP ' + res.status);
          if (res.status === 401) keyRejected();
          if (res.status === 401 || res.status === 403 || res.status === 404) return;
          throw new Error('HTTP ' + res.status);
        }
        connected++;
        status('live');
        delay = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf = (buf + value).replace(/\r\n?/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let event = 'message';
            const data = [];
            for (const line of block.split('\n')) {
              if (!line || line[0] === ':') continue;
              const colon = line.indexOf(':');
              const field = colon < 0 ? line : line.slice(0, colon);
              let v = colon < 0 ? '' : line.slice(colon + 1);
              if (v[0] === ' ') v = v.slice(1);
              if (field === 'event') event = v;
              else if (field === 'data') data.push(v);
            }
            if (data.length && onEvent) {
              let parsed;
              try {
                parsed = JSON.parse(data.join('\n'));
              } catch {
                continue;
              }
              onEvent(event, parsed);
            }
          }
        }
        if (stopped) return;
        status('reconnecting');
      } catch (e) {
        if (stopped) return;
        if (e.name === 'AbortError' && hidden()) continue;  // paused: closed on purpose
        status('reconnecting', e.message);
      }
      await wait(delay);
      delay = Math.min(delay * 2, 15000);
    }
  })().finally(() => document.removeEventListener('visibilitychange', onVisibility));
  return () => {
    stopped = true;
    if (ctrl) ctrl.abort();
    if (wake) wake();
  };
}

// Runs `fn` over `items` with at most `limit` in flight.
export async function mapLimit(items, limit, fn) {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  });
  await Promise.all(workers);
}
