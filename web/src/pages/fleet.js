// Fleet overview: every device the key may see, with live power, online/offline, last seen
// and open alerts; search and filters. The list is paginated (50 rows) so 1,000+ devices
// stay fast: only the visible rows ask for their live state, and refresh every 15 s (the
// open alerts too). When Joule cannot be reached, rows keep their last known values and a
// banner says so (with Retry); the next refresh that succeeds clears it. The device list
// itself is reloaded every minute (one request per 1,000 devices), and at once when a
// visible row's device answers 404 (deleted meanwhile): a deleted device stayed listed
// "offline · never" and a new one never appeared until a reload.
import { html } from 'htm/preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, listAllDevices, mapLimit, qs } from '../api.js';
import * as fmt from '../format.js';
import { ErrorBox, Loading, useLoad } from '../ui.js';

const PAGE = 50;
const REFRESH_MS = 15000;
const LIST_REFRESH_MS = 60000;

// Open alerts = pending + firing (not resolved), per device. An acked or snoozed alert is
// still open: ack and snooze only silence notifications, the condition still holds
// (CONTRACT §4: they are flags, not states). Pages through every open alert. A server
// without the alerts API (or a key that may not list them): not available; a network
// failure or a server error throws (the caller keeps the counts it had).
async function loadOpenAlerts(signal) {
  try {
    const counts = {};
    for (const state of ['pending', 'firing']) {
      let cursor = '';
      for (let page = 0; page < 100; page++) {
        const r = await api('/v1/alerts' + qs({ state, limit: 1000, cursor }), { signal });
        for (const a of r.alerts || []) {
          const c = (counts[a.device_id] ||= { open: 0, firing: 0, pending: 0, acked: 0 });
          c.open++;
          c[state]++;
          if (a.acked) c.acked++;
        }
        if (!r.next_cursor) break;
        cursor = r.next_cursor;
      }
    }
    return { available: true, counts };
  } catch (e) {
    if (e.name === 'AbortError' || !e.status || e.status >= 500) throw e;
    return { available: false, counts: {} };
  }
}

function alertCell(info, deviceId) {
  if (info.loading) return html`<span class="muted">…</span>`;
  if (!info.available) return html`<span class="muted" title="alerts API not available">—</span>`;
  const c = info.counts[deviceId];
  if (!c) return '0';
  const title = `${c.firing} firing, ${c.pending} pending` + (c.acked ? `, ${c.acked} acked` : '');
  return html`<a class=${'badge ' + (c.firing > c.acked ? 'bad' : 'warn')} href=${'#/alerts/' + encodeURIComponent(deviceId)} title=${title}>${c.open}</a>`;
}

function liveOf(rt) {
  const latest = rt.latest || {};
  const rec = (rt.data || [])[0];
  const metric = fmt.powerMetric(rt.data) || 'power_w';  // a solar inverter's solar_w
  // An energy counter's reading is not a power: the average of its newest final window is
  // (the open window, first in the list, holds only part of its minute's increments).
  const counter = fmt.isEnergyCounter(metric);
  const reading = counter ? undefined : latest.metrics && latest.metrics[metric];
  const shown = counter ? (rt.data || []).find((r) => r.final) || rec : rec;
  const p = typeof reading === 'number' ? reading : fmt.recordPower(shown, metric);
  return { power: p, seen: latest.received_at || (rec && rec.window_end) || null };
}

export function FleetPage({ mode } = {}) {
  const devices = useLoad((signal) => listAllDevices(signal), [], { keepOnError: true });
  // The list, reloaded every minute while the tab is visible (`reloadList` is called from
  // the intervals below, so it must not be a stale closure).
  const reloadList = useRef(devices.reload);
  reloadList.current = devices.reload;
  useEffect(() => {
    const timer = setInterval(() => document.visibilityState !== 'hidden' && reloadList.current(), LIST_REFRESH_MS);
    return () => clearInterval(timer);
  }, []);
  const [alertInfo, setAlertInfo] = useState(null);
  const [q, setQ] = useState('');
  const [owner, setOwner] = useState('');
  const [model, setModel] = useState('');
  const [loc, setLoc] = useState('');
  const [page, setPage] = useState(0);
  const [live, setLive] = useState({});
  const [now, setNow] = useState(Date.now());
  // The last refresh's failure (Joule unreachable or erroring): shown as a banner, the
  // rows keep their last known values.
  const [outage, setOutage] = useState(null);
  const [retryTick, setRetryTick] = useState(0);

  const all = devices.data || [];
  const options = useMemo(() => {
    const set = (k) => [...new Set(all.map((d) => d[k]).filter(Boolean))].sort();
    return { owner: set('owner_id'), model: set('model'), location: set('location') };
  }, [all]);
  const filtered = useMemo(() => {
    const needle = q.trim().toLowerCase();
    return all.filter(
      (d) =>
        (!owner || d.owner_id === owner) &&
        (!model || d.model === model) &&
        (!loc || d.location === loc) &&
        (!needle || (d.device_id + ' ' + (d.name || '')).toLowerCase().includes(needle)),
    );
  }, [all, q, owner, model, loc]);
  const pages = Math.max(1, Math.ceil(filtered.length / PAGE));
  const current = Math.min(page, pages - 1);
  const rows = filtered.slice(current * PAGE, current * PAGE + PAGE);
  const rowKey = rows.map((d) => d.device_id).join(',');

  useEffect(() => setPage(0), [q, owner, model, loc]);

  // Open alerts: loaded with the page and refreshed with the rows.
  useEffect(() => {
    if (!devices.data) return;
    const ctrl = new AbortController();
    const refresh = async () => {
      try {
        const info = await loadOpenAlerts(ctrl.signal);
        if (!ctrl.signal.aborted) setAlertInfo(info);
      } catch (e) {
        if (e.name === 'AbortError' || ctrl.signal.aborted) return;
        setAlertInfo((old) => old || { available: false, counts: {} });
        setOutage(e);
      }
    };
    refresh();
    const timer = setInterval(refresh, REFRESH_MS);
    return () => {
      clearInterval(timer);
      ctrl.abort();
    };
  }, [!!devices.data, retryTick]);

  useEffect(() => {
    if (!rows.length) return;
    const ctrl = new AbortController();
    const refresh = async () => {
      let failed = null;
      let gone = false;
      await mapLimit(rows, 4, async (d) => {
        if (ctrl.signal.aborted || failed) return;  // unreachable: stop asking, keep the rest
        try {
          const url = `/v1/devices/${encodeURIComponent(d.device_id)}/metrics/realtime?windows=`;
          let rt = await api(url + '1', { signal: ctrl.signal });
          // An energy meter's power comes from a final window; one window is the open one.
          if (fmt.isEnergyCounter(fmt.powerMetric(rt.data)) && !(rt.data || []).some((r) => r.final)) {
            rt = await api(url + '3', { signal: ctrl.signal });
          }
          const v = liveOf(rt);
          setLive((m) => ({ ...m, [d.device_id]: v }));
          setNow(Date.now());
        } catch (e) {
          if (e.name === 'AbortError') return;
          if (!e.status || e.status >= 500) {
            failed = e;  // Joule down or failing: keep the last known values
            setLive((m) => (m[d.device_id] ? { ...m, [d.device_id]: { ...m[d.device_id], stale: true } } : m));
          } else {
            if (e.status === 404) gone = true;  // deleted (or moved away) since the list
            setLive((m) => ({ ...m, [d.device_id]: { power: null, seen: null, error: e.message } }));
          }
        }
      });
      if (ctrl.signal.aborted) return;
      if (gone) reloadList.current();
      setOutage(failed);
      if (failed) setLive((m) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, { ...v, stale: true }])));
    };
    refresh();
    const timer = setInterval(refresh, REFRESH_MS);
    return () => {
      clearInterval(timer);
      ctrl.abort();
    };
  }, [rowKey, retryTick]);

  if (devices.loading && !devices.data) return html`<${Loading} what="Loading devices" />`;
  if (devices.error && !devices.data) return html`<${ErrorBox} error=${devices.error} retry=${devices.reload} />`;

  const select = (label, value, set, opts) => html`<label class="filter">${label}
    <select value=${value} onChange=${(e) => set(e.currentTarget.value)}>
      <option value="">All</option>
      ${opts.map((o) => html`<option value=${o}>${o}</option>`)}
    </select></label>`;
  const alerts = alertInfo || { available: true, counts: {}, loading: true };
  const retry = () => setRetryTick((t) => t + 1);

  return html`<section class="fleet">
    <div class="page-head">
      <h1>Fleet</h1>
      <span class="muted" data-testid="fleet-count">${filtered.length} of ${all.length} devices</span>
      ${outage && html`<span class="badge warn" data-testid="fleet-state">reconnecting</span>`}
    </div>
    ${outage && html`<div data-testid="fleet-outage"><${ErrorBox} error=${outage} retry=${retry} autoRetry=${false} />
      <p class="muted small">Showing the last known values; retrying every ${REFRESH_MS / 1000} s.</p></div>`}
    <div class="filters">
      <label class="filter grow">Search
        <input type="search" placeholder="Device id or name" value=${q} onInput=${(e) => setQ(e.currentTarget.value)} /></label>
      ${select('Owner', owner, setOwner, options.owner)}
      ${select('Model', model, setModel, options.model)}
      ${select('Location', loc, setLoc, options.location)}
    </div>
    ${all.length === 0
      ? html`<p class="state" data-testid="fleet-empty">No devices yet. ${mode === 'disabled'
          ? html`Register one with <code>POST /v1/devices</code>.`
          : html`An administrator registers devices (<code>POST /v1/devices</code>, admin token): with an owner key, ask your administrator to register yours.`}</p>`
      : html`<table class="devices" data-testid="fleet-table">
          <thead><tr><th>Device</th><th>Owner</th><th>Model</th><th>Location</th>
            <th class="num">Power</th><th>Status</th><th>Last seen</th><th class="num" title="pending + firing alerts (acked included)">Open alerts</th></tr></thead>
          <tbody>
            ${rows.map((d) => {
              const v = live[d.device_id];
              const seenMs = v && v.seen ? new Date(v.seen).getTime() : 0;
              const online = v ? seenMs && now - seenMs < fmt.ONLINE_WITHIN_MS : null;
              return html`<tr key=${d.device_id} data-device=${d.device_id} class=${v && v.stale ? 'stale' : ''} title=${v && v.stale ? 'last known values: Joule cannot be reached' : undefined}>
                <td data-label="Device"><span class="cell-id"><a class="ellip" href=${'#/device/' + encodeURIComponent(d.device_id)} title=${d.name ? d.name + ' (' + d.device_id + ')' : d.device_id}>${d.name || d.device_id}</a>
                  ${d.name && html`<div class="muted small ellip" title=${d.device_id}>${d.device_id}</div>`}</span></td>
                <td data-label="Owner"><a class="ellip" href=${'#/home/' + encodeURIComponent(d.owner_id)} title=${d.owner_id}>${d.owner_id}</a></td>
                <td data-label="Model"><span class="ellip" title=${d.model || undefined}>${d.model || '—'}</span></td>
                <td data-label="Location"><span class="ellip" title=${d.location || undefined}>${d.location || '—'}</span></td>
                <td data-label="Power" class="num nowrap">${v ? fmt.power(v.power) : '…'}</td>
                <td data-label="Status" class="nowrap">${online === null ? html`<span class="muted">…</span>` : online
                  ? html`<span><span class="dot on"></span>online</span>` : html`<span><span class="dot off"></span>offline</span>`}</td>
                <td data-label="Last seen" class="nowrap" title=${v && v.seen ? fmt.time(v.seen) : ''}>${v ? fmt.ago(v.seen, now) : '…'}</td>
                <td data-label="Open alerts" class="num" title="pending + firing, acked included">${alertCell(alerts, d.device_id)}</td>
              </tr>`;
            })}
          </tbody>
        </table>
        <div class="pager">
          <button disabled=${current === 0} onClick=${() => setPage(current - 1)}>‹ Prev</button>
          <span>Page ${current + 1} of ${pages}</span>
          <button disabled=${current >= pages - 1} onClick=${() => setPage(current + 1)}>Next ›</button>
        </div>`}
  </section>`;
}
