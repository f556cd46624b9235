// Alerts: filter by state and device; acknowledge and snooze (CONTRACT §4). The default
// filter is "open": pending + firing (acked and snoozed alerts included — those are flags,
// not states), the same count the fleet page shows. #/alerts/<device> pre-filters a device.
// The list refreshes every 15 s (as the fleet page does), keeping what it shows while
// Joule cannot be reached.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, qs } from '../api.js';
import * as fmt from '../format.js';
import { ErrorBox, Loading, NotAvailable, useLoad } from '../ui.js';

const enc = encodeURIComponent;
const STATES = ['open', 'pending', 'firing', 'resolved', ''];
const REFRESH_MS = 15000;

// The alert's value and its condition, with units: "5.00 kW (> 1.00 kW)". A resolved
// alert's value is its last one, which no longer breaches: "last 50.0 W · peak 150.0 W
// (rule > 100.0 W)" — "50.0 W (> 100.0 W)" read as if 50 W breached (black-box test).
function valueText(a) {
  if (a.kind === 'absence') return a.absent_for_s ? 'silent ≥ ' + fmt.seconds(a.absent_for_s) : '—';
  const name = a.kind === 'energy_budget' ? 'energy_wh' : a.metric || '';
  const f = (v) => fmt.metric(v, name, a.aggregate);
  if (typeof a.value !== 'number') return '—';
  const resolved = a.state === 'resolved';
  if (a.kind === 'energy_budget') return (resolved ? 'day total ' : '') + f(a.value) + ' (budget ' + f(a.budget_wh) + ')';
  if (a.threshold === undefined) return (resolved ? 'last ' : '') + f(a.value);
  const rule = a.op + ' ' + f(a.threshold) + (a.kind === 'rate_of_change' ? ' change' : '');
  if (!resolved) return f(a.value) + ' (' + rule + ')';
  // The peak is the episode's largest value: the breach for ">" rules only.
  const peak = typeof a.peak === 'number' && /^>/.test(a.op || '') ? ' · peak ' + f(a.peak) : '';
  return 'last ' + f(a.value) + peak + ' (rule ' + rule + ')';
}

// Every alert of a state, following next_cursor (pages of 1,000), up to MAX_ALERTS; past
// that the list says it shows the first MAX_ALERTS (`more`).
const MAX_ALERTS = 5000;
async function loadState(state, device_id, signal) {
  const alerts = [];
  let cursor = '';
  for (;;) {
    const r = await api('/v1/alerts' + qs({ state, device_id, limit: 1000, cursor }), { signal });
    alerts.push(...((r && (r.alerts || r.data)) || []));
    if (!r || !r.next_cursor) return { alerts, more: false };
    if (alerts.length >= MAX_ALERTS) return { alerts, more: true };
    cursor = r.next_cursor;
  }
}

async function loadAlerts(state, device_id, signal) {
  const parts = await Promise.all((state === 'open' ? ['pending', 'firing'] : [state]).map((s) => loadState(s, device_id, signal)));
  const alerts = parts.flatMap((p) => p.alerts);
  alerts.sort((a, b) => String(b.opened_at || '').localeCompare(String(a.opened_at || '')));
  return { alerts, more: parts.some((p) => p.more) };
}

export function AlertsPage({ device: initialDevice = '' }) {
  const [state, setState] = useState('open');
  const [device, setDevice] = useState(initialDevice);
  const [deviceFilter, setDeviceFilter] = useState(initialDevice);
  const [snoozeFor, setSnoozeFor] = useState('1h');
  const [actionError, setActionError] = useState(null);
  const [busy, setBusy] = useState('');
  const alerts = useLoad((signal) => loadAlerts(state, deviceFilter, signal), [state, deviceFilter], { keepOnError: true });
  useEffect(() => {
    const timer = setInterval(() => alerts.reload(), REFRESH_MS);
    return () => clearInterval(timer);
  }, [state, deviceFilter]);

  const act = async (a, action) => {
    setBusy(a.id + action);
    setActionError(null);
    try {
      await api(`/v1/alerts/${enc(a.id)}/${action}`, { method: 'POST', body: action === 'snooze' ? { for: snoozeFor } : {} });
      alerts.reload();
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy('');
    }
  };

  let body;
  if (alerts.error && alerts.error.routeMissing) body = html`<${NotAvailable} what="Alerts" />`;
  else if (alerts.error && !alerts.data) body = html`<${ErrorBox} error=${alerts.error} retry=${alerts.reload} />`;
  else if (alerts.loading && !alerts.data) body = html`<${Loading} what="Loading alerts" />`;
  else {
    const list = (alerts.data && alerts.data.alerts) || [];
    const count = html`<p class="muted small" data-testid="alerts-count">${alerts.data.more
      ? `Showing the first ${fmt.count(list.length)} alerts; there are more (narrow the filter to see the rest).`
      : `${fmt.count(list.length)} alert${list.length === 1 ? '' : 's'}.`}</p>`;
    body = list.length === 0
      ? html`<p class="state" data-testid="alerts-empty">No alerts match.</p>`
      : html`<table class="alerts" data-testid="alerts-table">
          <thead><tr><th>Severity</th><th>Device</th><th>Rule</th><th>State</th><th>Opened</th><th class="num">Value</th><th></th></tr></thead>
          <tbody>${list.map((a) => html`<tr key=${a.id} data-alert-id=${a.id} data-state=${a.state}>
            <td data-label="Severity"><span class=${'badge ' + (a.severity === 'critical' ? 'bad' : 'warn')}>${a.severity || 'warning'}</span></td>
            <td data-label="Device"><a href=${'#/device/' + enc(a.device_id)}>${a.device_id}</a></td>
            <td data-label="Rule">${a.rule_name || a.rule_id}</td>
            <td data-label="State">${a.state}${a.acked ? ' · acked' : ''}${a.snoozed_until && new Date(a.snoozed_until).getTime() > Date.now() ? ' · snoozed until ' + fmt.time(a.snoozed_until) : ''}</td>
            <td data-label="Opened">${fmt.time(a.opened_at || a.window_start || a.created_at)}</td>
            <td data-label="Value" class="num">${valueText(a)}</td>
            <td class="actions">${a.state === 'resolved'
              ? html`<span class="muted small" data-testid="alert-no-actions" title="ack and snooze silence an open alert's notifications">resolved</span>`
              : html`<button disabled=${a.acked || busy === a.id + 'ack'} onClick=${() => act(a, 'ack')}>Ack</button>
              <button disabled=${busy === a.id + 'snooze'} onClick=${() => act(a, 'snooze')}>Snooze ${snoozeFor}</button>`}
            </td></tr>`)}</tbody>
        </table>${count}`;
  }
  return html`<section>
    <div class="page-head"><h1>Alerts</h1></div>
    <form class="filters" onSubmit=${(e) => { e.preventDefault(); setDeviceFilter(device.trim()); }}>
      <label class="filter">State
        <select value=${state} onChange=${(e) => setState(e.currentTarget.value)}>
          ${STATES.map((s) => html`<option value=${s}>${s === 'open' ? 'open (pending + firing)' : s || 'any'}</option>`)}
        </select></label>
      <label class="filter grow">Device
        <input type="search" placeholder="device id" value=${device} onInput=${(e) => setDevice(e.currentTarget.value)} onBlur=${() => setDeviceFilter(device.trim())} /></label>
      <label class="filter">Snooze for
        <select value=${snoozeFor} onChange=${(e) => setSnoozeFor(e.currentTarget.value)}>
          ${['15m', '1h', '8h', '1d'].map((s) => html`<option value=${s}>${s}</option>`)}
        </select></label>
    </form>
    <${ErrorBox} error=${actionError} />
    ${alerts.error && alerts.data && html`<div data-testid="alerts-outage"><${ErrorBox} error=${alerts.error} retry=${alerts.reload} />
      <p class="muted small">Showing the last list loaded; retrying every ${REFRESH_MS / 1000} s.</p></div>`}
    ${body}
  </section>`;
}
