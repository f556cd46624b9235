// Home (owner) energy: today and this month by device, ranked, in the home's local days.
// A whole-home meter (config.whole_home) measures the other devices too: where the API
// counted meters in a bucket's total ("total_of": "whole_home"), the headline counts only
// them there (it summed every device: the appliances twice); a bucket without a meter's
// energy (a device in another zone than the meter's: its own local-day bucket) adds its
// devices, and the note under the headline names them. Production (solar_w, an inverter's
// output) is listed apart, never added to consumption.
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
// (`metered`); `added`: the other devices counted in it, from buckets without a meter's
// energy (the note says so: "the other devices are part of it" was wrong for them).
function Ranked({ title, totals, total, metered, added = new Set(), meters, names, testid, production = false }) {
  const rows = Object.entries(totals).sort((a, b) => b[1] - a[1]);
  const max = rows.length ? Math.max(...rows.map((r) => r[1]), 1e-9) : 1;
  const one = meters.size === 1;
  const addedNames = [...added].map((d) => names.get(d) || d).sort();
  return html`<div class=${'card' + (production ? ' production' : '')} data-testid=${testid}>
    <div class="card-head"><h2>${title}</h2><span class="big-sm" data-testid="energy-total">${fmt.energy(total)}</span></div>
    ${production && html`<p class="muted small" data-testid="energy-production-note">Produced (solar): not counted in the consumption above.</p>`}
    ${metered && addedNames.length === 0 && html`<p class="muted small" data-testid="energy-total-note">Total: the whole-home meter${one ? '' : 's'}; the other devices are part of ${one ? 'it' : 'them'}.</p>`}
    ${metered && addedNames.length > 0 && html`<p class="muted small" data-testid="energy-total-note">Total: the whole-home meter${one ? '' : 's'} plus <span data-testid="energy-total-added">${addedNames.join(', ')}</span> (no meter reading in ${addedNames.length === 1 ? 'its' : 'their'} local day); the other devices are part of the meter${one ? '' : 's'}.</p>`}
    ${rows.length === 0 ? html`<p class="muted">${production ? 'Nothing produced.' : 'No energy recorded.'}</p>` : html`<ol class="ranked">
      ${rows.map(([dev, wh]) => html`<li>
        <span class="who"><a href=${'#/device/' + enc(dev)}>${names.get(dev) || dev}</a>${meters.has(dev) && !production && html` <span class="badge" data-testid="whole-home-meter" title="whole-home meter: measures the other devices too">meter</span>`}</span>
        <span class="bar"><span style=${{ width: Math.max(0, (wh / max) * 100) + '%' }}></span></span>
        <span class="num">${fmt.energy(wh)}</span>
      </li>`)}
    </ol>`}
  </div>`;
}

const REFRESH_MS = 60000;
const PRODUCTION_METRIC = 'solar_w';

export function HomePage({ owner }) {
  const load = useLoad(async (signal) => {
    // Every device of the owner, page by page: their names and time zones label the cards
    // (found by a black-box test: an owner's devices past the first 1,000 were shown by id,
    // and their energy missed "Today" in their time zone).
    const devices = await listAllDevices(signal, owner);
    const to = new Date();
    const from = new Date(to.getTime() - 32 * 86400e3);
    // A device's energy is its power_w's, or its energy_wh counter's where it sends no power
    // (a utility meter reporting only its register).
    const range = { from: from.toISOString(), to: to.toISOString(), resolution: '1d' };
    // Production is asked apart (solar_w, an inverter's output power): in the same list it
    // would count as consumption. A device sending only solar_w was on neither card.
    const [energy, solar] = await Promise.all([
      api(`/v1/owners/${enc(owner)}/energy` + qs({ ...range, metric: 'power_w,energy_wh' }), { signal }),
      api(`/v1/owners/${enc(owner)}/energy` + qs({ ...range, metric: PRODUCTION_METRIC }), { signal }),
    ]);
    return { devices, energy, solar, now: to.getTime() };
  }, [owner], { keepOnError: true });
  // Today's figures grow while the devices consume: reload every minute (visible tabs).
  useEffect(() => {
    const timer = setInterval(() => document.visibilityState !== 'hidden' && load.reload(), REFRESH_MS);
    return () => clearInterval(timer);
  }, [owner]);
  const view = useMemo(() => {
    if (!load.data) return null;
    const { devices, energy, solar, now } = load.data;
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
    const meters = new Set(energy.whole_home || []);
    // Per card (day, month): each device's energy, the headline total, whether a meter's
    // bucket counted in it, and the other devices a bucket without a meter added.
    const sums = (answer, useMeters) => {
      const out = { day: {}, mon: {}, total: { day: 0, mon: 0, dayMetered: false, monMetered: false, dayAdded: new Set(), monAdded: new Set() } };
      for (const b of answer.data || []) {
        const metered = useMeters && b.total_of === 'whole_home';
        for (const [dev, wh] of Object.entries(b.devices || {})) {
          const date = b.local_date || fmt.localDate(new Date(b.window_start).getTime(), zoneOf.get(dev) || fallback);
          const t = today(dev);
          // In a bucket whose total is its meters', a device behind them is not added again.
          const counted = !metered || meters.has(dev);
          const add = (k) => {
            out[k][dev] = (out[k][dev] || 0) + wh;
            if (counted) out.total[k] += wh;
            if (metered) out.total[k + 'Metered'] = true;
            if (counted && !metered && !meters.has(dev) && wh !== 0) out.total[k + 'Added'].add(dev);
          };
          if (date === t) add('day');
          if (date.slice(0, 7) === t.slice(0, 7)) add('mon');
        }
      }
      return out;
    };
    const used = sums(energy, true);
    const made = sums(solar || {}, false);
    const { day, mon, total } = used;
    for (const d of devices) today(d.device_id);
    const zones = [...new Set(devices.map((d) => d.timezone || 'UTC'))].sort();
    const tz = zones[0] || fallback;
    const dates = [...new Set(zones.map((z) => fmt.localDate(now, z)))].sort();
    const months = [...new Set(dates.map((d) => d.slice(0, 7)))];
    const names = new Map(devices.map((d) => [d.device_id, d.name || d.device_id]));
    const label = zones.length > 1 ? 'local days in each device\'s zone (' + zones.join(', ') + ')' : 'local days in ' + tz;
    const producing = Object.keys(made.mon).length > 0;
    return { label, today: dates.join(' / ') || fmt.localDate(now, tz), month: months.join(' / ') || fmt.localDate(now, tz).slice(0, 7), day, mon, total, made, producing, meters, names, empty: devices.length === 0 && !(energy.data || []).length && !(solar?.data || []).length };
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
      <${Ranked} title=${'Today (' + view.today + ')'} totals=${view.day} total=${view.total.day} metered=${view.total.dayMetered} added=${view.total.dayAdded} meters=${view.meters} names=${view.names} testid="energy-today" />
      <${Ranked} title=${'This month (' + view.month + ')'} totals=${view.mon} total=${view.total.mon} metered=${view.total.monMetered} added=${view.total.monAdded} meters=${view.meters} names=${view.names} testid="energy-month" />
      ${view.producing && html`
      <${Ranked} title=${'Produced today (' + view.today + ')'} totals=${view.made.day} total=${view.made.total.day} meters=${view.meters} names=${view.names} testid="production-today" production />
      <${Ranked} title=${'Produced this month (' + view.month + ')'} totals=${view.made.mon} total=${view.made.total.mon} meters=${view.meters} names=${view.names} testid="production-month" production />`}
    </div>`}
  </section>`;
}
