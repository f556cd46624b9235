// Numbers with units and times in the viewer's locale and zone.

const nf = (digits) =>
  new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
const n0 = nf(0);
const n1 = nf(1);
const n2 = nf(2);

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

// A value with an SI prefix (k, M, G, T, P, E), so that any value the API accepts (|v| ≤
// 1e100) stays a short string: past 1e21 it is written 1.23e+99.
const PREFIXES = ['', 'k', 'M', 'G', 'T', 'P', 'E'];
export function scaled(v, unit, digits = 2) {
  if (!isNum(v)) return '—';
  const a = Math.abs(v);
  if (a >= 1e21) return v.toExponential(2) + ' ' + unit;
  let i = 0;
  while (i < PREFIXES.length - 1 && a >= 1000 ** (i + 1)) i++;
  return (i === 0 ? n1 : digits === 2 ? n2 : n1).format(v / 1000 ** i) + ' ' + PREFIXES[i] + unit;
}

export function power(w) {
  return scaled(w, 'W');
}

export function energy(wh) {
  return scaled(wh, 'Wh');
}

export function volts(v) {
  return scaled(v, 'V', 1);
}

// A metric's value with the unit its name implies (CONTRACT §1 naming: power_w, energy_wh,
// voltage_v, current_a, …); `count` aggregates are plain numbers.
export function metric(v, name = '', aggregate = '') {
  if (!isNum(v)) return '—';
  if (aggregate === 'count') return n0.format(v);
  if (/_wh$|energy/.test(name)) return energy(v);
  if (/_w$/.test(name)) return power(v);
  if (/_v$/.test(name)) return volts(v);
  const unit = (name.match(/_(a|hz|c|pct|s)$/) || [])[1];
  const label = { a: ' A', hz: ' Hz', c: ' °C', pct: ' %', s: ' s' }[unit] || '';
  return (Math.abs(v) >= 1e15 ? v.toExponential(2) : n2.format(v)) + label;
}

export function count(v) {
  return isNum(v) ? n0.format(v) : '—';
}

export function seconds(s) {
  if (!isNum(s)) return '—';
  const a = Math.abs(s);
  if (a < 1) return n2.format(s) + ' s';
  if (a < 120) return n1.format(s) + ' s';
  if (a < 7200) return n1.format(s / 60) + ' min';
  if (a < 172800) return n1.format(s / 3600) + ' h';
  return n1.format(s / 86400) + ' d';
}

// Times name their zone: the browser's, or the one given (a device's own).
const dtf = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'long' });
const zoned = new Map();
function formatter(timeZone) {
  if (!timeZone) return dtf;
  if (!zoned.has(timeZone)) {
    try {
      zoned.set(timeZone, new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'long', timeZone }));
    } catch {
      zoned.set(timeZone, dtf);  // a zone this browser does not know
    }
  }
  return zoned.get(timeZone);
}

// "Never": null (health of a device that sent nothing); before 2026-11-30 Joule reported
// "1970-01-01T00:00:00Z".
const never = (ms) => !(ms > 0);

export function time(iso, timeZone) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return never(d.getTime()) ? 'never' : formatter(timeZone).format(d);
}

// A device is online when Joule received something from it within this long (the fleet's
// online/offline, the device page's "silent").
export const ONLINE_WITHIN_MS = 2 * 60 * 1000;

export function ago(iso, now = Date.now()) {
  if (!iso) return 'never';
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return '—';
  if (never(t)) return 'never';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 172800) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

// "YYYY-MM-DD" of an instant in an IANA zone.
export function localDate(ms, timeZone) {
  try {
    return new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(ms));
  } catch {
    return new Date(ms).toISOString().slice(0, 10);
  }
}

// An energy counter (CONTRACT §1: a counter's name ends in _wh or _total; _wh is energy):
// a window's increment (`delta`) gives its average power.
export function isEnergyCounter(metric) {
  return typeof metric === 'string' && metric.endsWith('_wh');
}

// The power metric a device's charts show: power_w when it has one, else its first power
// metric (one with energy_wh: solar_w, grid_w, …), else its first energy counter (a
// whole-home meter sending only energy_wh: its power is derived per window), else null.
export function powerMetric(records) {
  let first = null;
  let counter = null;
  for (const r of records || []) {
    const ms = (r && r.metrics) || {};
    if (ms.power_w) return 'power_w';
    for (const [name, m] of Object.entries(ms)) {
      if (!m) continue;
      if (first === null && 'energy_wh' in m) first = name;
      if (counter === null && isEnergyCounter(name) && 'delta' in m) counter = name;
    }
  }
  return first || counter;
}

// How a chart names the power it shows.
export function powerLabel(metric, capital = false) {
  if (metric === 'power_w') return capital ? 'Power' : 'power';
  if (isEnergyCounter(metric)) return (capital ? 'Power' : 'power') + ' from ' + metric;
  return metric;
}

// Power of a record (of `metric`, default power_w): time-weighted average when known, else
// the sample mean.
export function recordPower(r, metric = 'power_w') {
  const m = r && r.metrics && r.metrics[metric];
  if (m && isEnergyCounter(metric)) {
    // The window's increment over its length: Wh per hour = W.
    const hours = (Date.parse(r.window_end) - Date.parse(r.window_start)) / 3.6e6;
    return isNum(m.delta) && hours > 0 ? m.delta / hours : null;
  }
  if (m) return isNum(m.twa) ? m.twa : isNum(m.avg) ? m.avg : null;
  return metric === 'power_w' && isNum(r && r.avg_power_w) ? r.avg_power_w : null;
}

// Energy of a record: of `metric` (the device's power metric, e.g. a solar inverter's
// solar_w; default power_w), else the older summary fields.
export function recordEnergy(r, metric = 'power_w') {
  const m = (r && r.metrics) || {};
  if (m[metric] && isNum(m[metric].energy_wh)) return m[metric].energy_wh;
  if (m.power_w && isNum(m.power_w.energy_wh)) return m.power_w.energy_wh;
  if (isNum(r && r.sum_energy_wh)) return r.sum_energy_wh;
  if (m.energy_wh && isNum(m.energy_wh.delta)) return m.energy_wh.delta;
  return null;
}
