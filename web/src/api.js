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

// Every device the caller may see (pages of up to 1,000).
export async function listAllDevices(signal) {
  const out = [];
  let cursor = '';
  for (let page = 0; page < 100; page++) {
    const r = await api('/v1/devices' + qs({ limit: 1000, cursor }), { signal });
    out.push(...(r.devices || []));
    if (!r.next_cursor) break;
    cursor = r.next_cursor;
  }
  return out;
}

// Server-Sent Events over fetch(), so the Authorization header can be sent (EventSource
// cannot). Reconnects with backoff; returns a function that closes the stream.
export function openStream(query, { onEvent, onStatus } = {}) {
  const ctrl = new AbortController();
  let stopped = false;
  let delay = 1000;
  const status = (s, detail) => onStatus && onStatus(s, detail);
  (async () => {
    while (!stopped) {
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
          if (res.status === 401 || res.status === 403 || res.status === 404) return;
          throw new Error('HTTP ' + res.status);
        }
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
        if (stopped || e.name === 'AbortError') return;
        status('reconnecting', e.message);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  })();
  return () => {
    stopped = true;
    ctrl.abort();
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
