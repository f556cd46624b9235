// Joule dashboard: sign-in, hash routing and the page shell.
import { html } from 'htm/preact';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, getToken, onKeyRejected, setToken } from './api.js';
import { Loading, ErrorBox } from './ui.js';
import { FleetPage } from './pages/fleet.js';
import { DevicePage } from './pages/device.js';
import { HomesPage, HomePage } from './pages/home.js';
import { AlertsPage } from './pages/alerts.js';
import { RulesPage } from './pages/rules.js';
import './style.css';

function parseRoute(hash) {
  let parts;
  try {
    parts = hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  } catch {
    return { page: 'notfound', hash };  // a malformed %-escape: no page has that address
  }
  switch (parts[0]) {
    case 'device':
      return { page: 'device', id: parts[1] || '' };
    case 'homes':
    case 'energy':  // the nav calls it "Energy"
      return { page: 'homes' };
    case 'home':
      return { page: 'home', owner: parts[1] || '' };
    case 'alerts':
      return { page: 'alerts', device: parts[1] || '' };
    case 'rules':
      return { page: 'rules' };
    default:
      return { page: 'fleet' };
  }
}

function useRoute() {
  const [route, setRoute] = useState(parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

// Does `token` ('' = none) open the API? true; why not, as { status, message } (401; 403:
// a device token, which may only ingest); or throws (server trouble).
async function accepted(token) {
  try {
    await api('/v1/devices?limit=1', { token });
    return true;
  } catch (e) {
    if (e.status === 401) return { status: 401, message: 'This key was not accepted.' };
    if (e.status === 403) {
      return { status: 403, message: 'This is a device token: devices may only send data. Sign in with an owner key or the admin token.' };
    }
    if (e.status && e.status !== 0) return true;  // e.g. 503 metadata: the token itself is fine
    throw e;
  }
}

// auth.mode from the public /healthz ("required" | "disabled"), so a fresh load needs no
// request that gets a 401; null from a server that does not say (then: probe).
async function authMode() {
  const h = await api('/healthz', { token: '' });
  return h && (h.auth === 'required' || h.auth === 'disabled') ? h.auth : null;
}

function SignIn({ onSignedIn, reason }) {
  const [token, setTok] = useState('');
  const [error, setError] = useState(reason ? { message: reason } : null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) return setError({ message: 'Paste an owner key or the admin token.' });
    setBusy(true);
    setError(null);
    try {
      const ok = await accepted(t);
      if (ok === true) {
        setToken(t);
        onSignedIn('token');
      } else {
        setError(ok);
      }
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin">
    <form class="card" onSubmit=${submit}>
      <h1><span class="logo">⚡</span> Joule</h1>
      <p>Sign in with an owner key (your home's devices) or the admin token (the whole fleet).
        The key stays in this browser tab only.</p>
      <label for="token">Key or token</label>
      <input id="token" name="token" type="password" autocomplete="off" value=${token}
        onInput=${(e) => setTok(e.currentTarget.value)} autofocus />
      <button type="submit" class="primary" disabled=${busy}>${busy ? 'Checking…' : 'Sign in'}</button>
      <${ErrorBox} error=${error} />
    </form>
  </main>`;
}

function Nav({ route, mode, onSignOut }) {
  const link = (page, href, label) =>
    html`<a href=${href} class=${route.page === page || (page === 'homes' && route.page === 'home') || (page === 'fleet' && route.page === 'device') ? 'active' : ''}>${label}</a>`;
  return html`<header class="top">
    <a class="brand" href="#/"><span class="logo">⚡</span> Joule</a>
    <nav>
      ${link('fleet', '#/', 'Fleet')} ${link('homes', '#/homes', 'Energy')}
      ${link('alerts', '#/alerts', 'Alerts')} ${link('rules', '#/rules', 'Rules')}
    </nav>
    ${mode === 'disabled'
      ? html`<span class="badge warn" title="auth.mode = disabled">no auth</span>`
      : html`<button class="link signout" onClick=${onSignOut}>Sign out</button>`}
  </header>`;
}

function App() {
  const route = useRoute();
  const [auth, setAuth] = useState({ state: 'checking' });
  const check = async () => {
    setAuth({ state: 'checking' });
    try {
      const mode = await authMode();
      if (mode === 'disabled') return setAuth({ state: 'in', mode: 'disabled' });
      const stored = getToken();
      if (stored && (await accepted(stored)) === true) return setAuth({ state: 'in', mode: 'token' });
      if (stored) setToken('');
      if (mode === null && (await accepted('')) === true) return setAuth({ state: 'in', mode: 'disabled' });
      setAuth({ state: 'out' });
    } catch (error) {
      setAuth({ state: 'error', error });
    }
  };
  useEffect(() => {
    check();
  }, []);
  // A 401 with the stored key mid-session: revoked (or the server's keys changed). Forget
  // the key and ask for a new one, saying why (not every device shown "offline · never").
  useEffect(
    () =>
      onKeyRejected(() => {
        setToken('');
        setAuth({ state: 'out', reason: 'Your key is no longer accepted (revoked or not valid on this server). Sign in again.' });
      }),
    [],
  );
  if (auth.state === 'checking') return html`<main><${Loading} what="Connecting to Joule" /></main>`;
  if (auth.state === 'error') return html`<main><${ErrorBox} error=${auth.error} retry=${check} /></main>`;
  if (auth.state === 'out') return html`<${SignIn} reason=${auth.reason} onSignedIn=${(mode) => setAuth({ state: 'in', mode })} />`;
  const signOut = () => {
    setToken('');
    setAuth({ state: 'out' });
    location.hash = '#/';  // the next key may not see this page
  };
  let page;
  switch (route.page) {
    case 'device':
      page = html`<${DevicePage} key=${route.id} id=${route.id} />`;
      break;
    case 'homes':
      page = html`<${HomesPage} />`;
      break;
    case 'home':
      page = html`<${HomePage} key=${route.owner} owner=${route.owner} />`;
      break;
    case 'alerts':
      page = html`<${AlertsPage} key=${route.device} device=${route.device} />`;
      break;
    case 'rules':
      page = html`<${RulesPage} />`;
      break;
    case 'notfound':
      page = html`<p><a href="#/">‹ Fleet</a></p><div class="state error" role="alert" data-testid="not-found"><strong>Not found</strong>: no page has the address <code>${route.hash}</code>.</div>`;
      break;
    default:
      page = html`<${FleetPage} mode=${auth.mode} />`;
  }
  return html`<${Nav} route=${route} mode=${auth.mode} onSignOut=${signOut} /><main>${page}</main>`;
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
