// Home (owner) energy: today and this month by device, ranked, in the home's local days.
// A whole-home meter (config.whole_home) measures the other devices too: where the API
// counted meters in a bucket's total ("total_of": "whole_home"), the headline counts only
// them there (it summed every device: the appliances twice).
import { html } from 'htm/preact';
import { useEffect, useMemo } from 'preact/hooks';
import { api, listAllDevices, qs } from '../api.js';
import * as fmt from '../format.js';
import { ErrorBox, Loading, useLoad } from '../ui.js';

const enc = encodeURIComponent;

export function HomesPage() {
  const devices = useLoad((signal) => listAllDevices(signal), []);
  if (devices.loading) return html`<${Loading} what="Loading homes" />`;
  if (devices.error) return html`<${ErrorBox} error=${devices.error} retry=${devices.reload} />`;
  const owners = new Map();
  for (const d of devices.data) owners.set(d.owner_id, (owners.get(d.owner_id) || 0) + 1);
  const list = [...owners.entries()].sort((a, b) => a[0].localeCompare(b[0]));
  if (list.length === 1) location.replace('#/home/' + enc(list[0][0]));
  return html`<section>
    <div class="page-head"><h1>Energy by home</h1></div>
    ${list.length === 0 ? html`<p class="state">No devices yet.</p>` : html`<ul class="homes">
      ${list.map(([o, n]) => html`<li><a href=${'#/home/' + enc(o)}>${o}</a> <span class="muted">${n} device${n === 1 ? '' : 's'}</span></li>`)}
    </ul>`}
  </section>`;
}

// `total` is the home's: the devices' sum, or the meters' where they measured the rest
// (`metered`).
function Ranked({ title, totals, total, metered, meters, names, testid }) {
  const rows = Object.entries(totals).sort((a, b) => b[1] - a[1]);
  const max = rows.length ? Math.max(...rows.map((r) => r[1]), 1e-9) : 1;
  return html`<div class="card" data-testid=${testid}>
    <div class="card-head"><h2>${title}</h2><span class="big-sm" data-testid="energy-total">${fmt.energy(total)}</span></div>
    ${metered && html`<p class="muted small" data-testid="energy-total-note">Total: the whole-home meter${meters.size === 1 ? '' : 's'}; the other devices are part of ${meters.size === 1 ? 'it' : 'them'}.</p>`}
    ${rows.length === 0 ? html`<p class="muted">No energy recorded.</p>` : html`<ol class="ranked">
      ${rows.map(([dev, wh]) => html`<li>
        <span class="who"><a href=${'#/device/' + enc(dev)}>${names.get(dev) || dev}</a>${meters.has(dev) && html` <span class="badge" data-testid="whole-home-meter" title="whole-home meter: measures the other devices too">meter</span>`}</span>
        <span class="bar"><span style=${{ width: Math.max(0, (wh / max) * 100) + '%' }}></span></span>
        <span class="num">${fmt.energy(wh)}</span>
      </li>`)}
    </ol>`}
  </div>`;
}

const REFRESH_MS = 60000;

export function HomePage({ owner }) {
  const load = useLoad(async (signal) => {
    const devices = (await api('/v1/devices' + qs({ owner_id: owner, limit: 1000 }), { signal })).devices || [];
    const to = new Date();
    const from = new Date(to.getTime() - 32 * 86400e3);
    // A device's energy is its power_w's, or its energy_wh counter's where it sends no power
    // (a utility meter reporting only its register).
    const energy = await api(`/v1/owners/${enc(owner)}/energy` + qs({ from: from.toISOString(), to: to.toISOString(), resolution: '1d', metric: 'power_w,energy_wh' }), { signal });
    return { devices, energy, now: to.getTime() };
  }, [owner], { keepOnError: true });
  // Today's figures grow while the devices consume: reload every minute (visible tabs).
  useEffect(() => {
    const timer = setInterval(() => document.visibilityState !== 'hidden' && load.reload(), REFRESH_MS);
    return () => clearInterval(timer);
  }, [owner]);
  const view = useMemo(() => {
    if (!load.data) return null;
    const { devices, energy, now } = load.data;
    const fallback = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    const zoneOf = new Map(devices.map((d) => [d.device_id, d.timezone || 'UTC']));
    // Each device's "today" is its own local date (CONTRACT §2: 1d = the device's local
    // calendar day), and its "this month" that date's month: in a home whose devices are in
    // several zones these differ (Kiritimati is a day ahead of Pago Pago).
    const todayOf = new Map();
    const today = (dev) => {
      const tz = zoneOf.get(dev) || fallback;
      if (!todayOf.has(tz)) todayOf.set(tz, fmt.localDate(now, tz));
      return todayOf.get(tz);
    };
    const day = {};
    const mon = {};
    const meters = new Set(energy.whole_home || []);
    const total = { day: 0, mon: 0, dayMetered: false, monMetered: false };
    for (const b of energy.data || []) {
      const metered = b.total_of === 'whole_home';
      for (const [dev, wh] of Object.entries(b.devices || {})) {
        const date = b.local_date || fmt.localDate(new Date(b.window_start).getTime(), zoneOf.get(dev) || fallback);
        const t = today(dev);
        // In a bucket whose total is its meters', a device behind them is not added again.
        const counted = !metered || meters.has(dev);
        if (date === t) {
          day[dev] = (day[dev] || 0) + wh;
          if (counted) total.day += wh;
          if (metered) total.dayMetered = true;
        }
        if (date.slice(0, 7) === t.slice(0, 7)) {
          mon[dev] = (mon[dev] || 0) + wh;
          if (counted) total.mon += wh;
          if (metered) total.monMetered = true;
        }
      }
    }
    for (const d of devices) today(d.device_id);
    const zones = [...new Set(devices.map((d) => d.timezone || 'UTC'))].sort();
    const tz = zones[0] || fallback;
    const dates = [...new Set(zones.map((z) => fmt.localDate(now, z)))].sort();
    const months = [...new Set(dates.map((d) => d.slice(0, 7)))];
    const names = new Map(devices.map((d) => [d.device_id, d.name || d.device_id]));
    const label = zones.length > 1 ? 'local days in each device\'s zone (' + zones.join(', ') + ')' : 'local days in ' + tz;
    return { label, today: dates.join(' / ') || fmt.localDate(now, tz), month: months.join(' / ') || fmt.localDate(now, tz).slice(0, 7), day, mon, total, meters, names, empty: devices.length === 0 && !(energy.data || []).length };
  }, [load.data]);
  if (load.loading && !load.data) return html`<${Loading} what="Loading energy" />`;
  if (load.error && !load.data) return html`<p><a href="#/homes">‹ Homes</a></p><${ErrorBox} error=${load.error} retry=${load.reload} />`;
  return html`<section class="home">
    <p class="crumbs"><a href="#/homes">Homes</a> › ${owner}</p>
    <div class="page-head"><h1>Energy of ${owner}</h1><span class="muted" data-testid="energy-zones">${view.label}</span></div>
    ${load.error && html`<${ErrorBox} error=${load.error} retry=${load.reload} />`}
    ${view.empty
      ? html`<p class="state" data-testid="energy-no-devices">No devices for owner <strong>${owner}</strong>.</p>`
      : html`<div class="grid two">
      <${Ranked} title=${'Today (' + view.today + ')'} totals=${view.day} total=${view.total.day} metered=${view.total.dayMetered} meters=${view.meters} names=${view.names} testid="energy-today" />
      <${Ranked} title=${'This month (' + view.month + ')'} totals=${view.mon} total=${view.total.mon} metered=${view.total.monMetered} meters=${view.meters} names=${view.names} testid="energy-month" />
    </div>`}
  </section>`;
}
