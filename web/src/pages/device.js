// Device details: metadata, a live power chart of 1m windows (SSE, no reload), history
// with automatic resolution, daily energy in the home's local days, voltage and health.
import { html } from 'htm/preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { api, openStream, qs } from '../api.js';
import * as fmt from '../format.js';
import { Chart, ErrorBox, Loading, timeAxis, timeScale, useLoad, valueAxis } from '../ui.js';

const LIVE_WINDOWS = 60;
const RANGES = [
  { id: '24h', label: '24 h', ms: 24 * 3600e3 },
  { id: '7d', label: '7 d', ms: 7 * 86400e3 },
  { id: '30d', label: '30 d', ms: 30 * 86400e3 },
  { id: '1y', label: '1 y', ms: 365 * 86400e3 },
];

const enc = encodeURIComponent;
const sec = (iso) => new Date(iso).getTime() / 1000;
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

// Chart times in the device's own zone (uPlot draws in the browser's otherwise).
// The newest final window of a Map start → window, else the newest; null when empty.
function newestWindow(windows) {
  let best = null;
  for (const [k, w] of windows) {
    if (!best || (w.final && !best.w.final) || (w.final === best.w.final && k > best.k)) best = { k, w };
  }
  return best && best.w;
}

// A window's maximum power: the metric's max (power_w's older summary field); none for an
// energy counter (its max is a meter reading, not a power).
function maxPower(w, metric) {
  if (fmt.isEnergyCounter(metric)) return null;
  return num(w.metrics?.[metric]?.max ?? (metric === 'power_w' ? w.max_power_w : null));
}

function inZone(tz) {
  return (ts) => uPlot.tzDate(new Date(ts * 1000), tz);
}

// An alert's events arrive in any order, and the loaded list may be older than the stream:
// one entry per alert id, the newest updated_at winning (ties: the later arrival).
const stamp = (a) => {
  const t = new Date(a.updated_at || a.opened_at || 0).getTime();
  return Number.isNaN(t) ? 0 : t;
};
export function mergeAlerts(...lists) {
  const byId = new Map();
  for (const list of lists) {
    for (const a of list || []) {
      if (!a || !a.id) continue;
      const old = byId.get(a.id);
      if (!old || stamp(a) >= stamp(old)) byId.set(a.id, a);
    }
  }
  // Retracted (a pending alert withdrawn) is gone; open ones first, then the newest.
  const open = (a) => (a.state === 'firing' ? 0 : a.state === 'pending' ? 1 : 2);
  return [...byId.values()]
    .filter((a) => a.event !== 'retracted')
    .sort((a, b) => open(a) - open(b) || stamp(b) - stamp(a));
}

// The live chart keeps the newest LIVE_WINDOWS * 2 windows.
function trimWindows(m) {
  if (m.size <= LIVE_WINDOWS * 2) return m;
  const keys = [...m.keys()].sort((a, b) => a - b);
  for (const k of keys.slice(0, m.size - LIVE_WINDOWS * 2)) m.delete(k);
  return m;
}

const alertBadge = (state) => (state === 'firing' ? 'bad' : state === 'pending' ? 'warn' : 'ok');

function powerSeries(label, stroke, fill) {
  return { label, stroke, fill, width: 2, value: (u, v) => fmt.power(v), spanGaps: false };
}

// Gaps: uPlot joins neighbouring points unless a null lies between them, and a window with
// no data is not in the API's answer. So a null point goes after every window whose next one
// starts later than `step` (seconds) after it: an outage shows as a gap, not a ramp
// (CONTRACT §2: unknown consumption is not invented). `rows`: [x, ...values], ascending x.
export function withGaps(rows, step, width) {
  const cols = Array.from({ length: width }, () => []);
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    for (let c = 0; c < width; c++) cols[c].push(row[c]);
    const next = rows[i + 1];
    if (next && next[0] - row[0] > step * 1.5) {
      cols[0].push(row[0] + step);
      for (let c = 1; c < width; c++) cols[c].push(null);
    }
  }
  return cols;
}

const STEP = { '1m': 60, '5m': 300, '15m': 900, '1h': 3600, '1d': 86400 };
const REFRESH_MS = 60000;  // history and daily energy (the live chart follows the stream)

// Runs `fn` every `ms` while the tab is visible (and once when it becomes visible again).
export function useEvery(ms, fn, deps) {
  useEffect(() => {
    const tick = () => document.visibilityState !== 'hidden' && fn();
    const timer = setInterval(tick, ms);
    return () => clearInterval(timer);
  }, deps);
}

export function DevicePage({ id }) {
  const rt = useLoad((signal) => api(`/v1/devices/${enc(id)}/metrics/realtime?windows=${LIVE_WINDOWS}`, { signal }), [id], { keepOnError: true });
  const health = useLoad((signal) => api(`/v1/devices/${enc(id)}/health`, { signal }), [id]);
  // Live state: 1m windows by window_start (ms), and the latest raw reading.
  const [windows, setWindows] = useState(new Map());
  const [reading, setReading] = useState(null);
  const [streamState, setStreamState] = useState('connecting');
  const [liveAlerts, setLiveAlerts] = useState([]);
  // Bumped every minute and after every reconnect: History and Daily energy reload.
  const [refresh, setRefresh] = useState(0);
  // Its open alerts (firing), as loaded; later ones arrive over the stream. (Servers without
  // the alerts API, or a key that may not list them: none shown.)
  const firing = useLoad((signal) => api('/v1/alerts' + qs({ device_id: id, state: 'firing' }), { signal }).catch(() => ({ alerts: [] })), [id]);
  const found = !!rt.data;

  // The health panel follows the device (its counters and watermark move with every event);
  // not for a device that is not there (404: nothing to follow).
  useEvery(10000, () => found && health.reload(), [id, found]);
  useEvery(REFRESH_MS, () => found && setRefresh((n) => n + 1), [id, found]);
  useEffect(() => {
    if (!rt.data) return;
    // Merged into what the stream brought (the newer version of a window wins), so a
    // re-fetch after a reconnect fills the windows missed while the stream was down.
    setWindows((prev) => {
      const next = new Map(prev);
      for (const r of rt.data.data || []) {
        if (r.resolution && r.resolution !== '1m') continue;
        const t = new Date(r.window_start).getTime();
        const old = next.get(t);
        if (!old || !(old.version > r.version)) next.set(t, r);
      }
      return trimWindows(next);
    });
    if (rt.data.latest) setReading((old) => (old && old.timestamp > rt.data.latest.timestamp ? old : rt.data.latest));
  }, [rt.data]);

  useEffect(() => {
    if (!found) return;
    return openStream(
      { device_id: id },
      {
        onStatus: (s, detail, connects) => {
          setStreamState(s);
          // Reconnected (after a network drop, a server restart or a hidden tab): what was
          // sent meanwhile is not replayed, so load it again. Alerts: the badges the stream
          // brought may have changed state meanwhile; the reloaded firing list replaces them.
          if (s === 'live' && connects > 1) {
            setLiveAlerts([]);
            rt.reload();
            firing.reload();
            health.reload();
            setRefresh((n) => n + 1);
          }
        },
        onEvent: (event, data) => {
          if (event === 'window' && data.resolution === '1m') {
            const t = new Date(data.window_start).getTime();
            setWindows((prev) => {
              const old = prev.get(t);
              if (old && old.version > data.version) return prev;
              const next = new Map(prev);
              next.set(t, data);
              return trimWindows(next);
            });
          } else if (event === 'reading') {
            setReading(data);
          } else if (event === 'alert') {
            setLiveAlerts((a) => mergeAlerts(a, [data]).slice(0, 20));
          }
        },
      },
    );
  }, [id, found]);

  // power_w, or the device's own power metric (a solar inverter's solar_w).
  const metric = useMemo(() => fmt.powerMetric(windows.values()) || 'power_w', [windows]);
  const liveData = useMemo(() => {
    const keys = [...windows.keys()].sort((a, b) => a - b);
    const rows = keys.map((k) => {
      const w = windows.get(k);
      return [k / 1000, fmt.recordPower(w, metric), maxPower(w, metric)];
    });
    return withGaps(rows, 60, 3);
  }, [windows, metric]);
  const tz = (rt.data && rt.data.device && rt.data.device.timezone) || 'UTC';
  const liveOpts = useMemo(
    () => ({
      series: [{}, powerSeries('avg', '#2f7de1', 'rgba(47,125,225,0.12)'), powerSeries('max', '#e8833a')],
      axes: [timeAxis, valueAxis('W')],
      scales: { x: timeScale() },
      tzDate: inZone(tz),
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
    }),
    [tz],
  );

  if (rt.loading && !rt.data) return html`<${Loading} what="Loading device" />`;
  if (rt.error && !rt.data) return html`<p><a href="#/">‹ Fleet</a></p><${ErrorBox} error=${rt.error.status === 404 ? { status: 404, message: `No device "${id}" (or not visible with this key).` } : rt.error} retry=${rt.reload} />`;

  const device = rt.data.device || { device_id: id };
  const m = (reading && reading.metrics) || {};
  // Now: the latest reading's power; an energy counter's is the average of its newest final
  // window (an open one holds only part of its minute's increments), else of its newest.
  const nowPower = !fmt.isEnergyCounter(metric) ? num(m[metric]) : fmt.recordPower(newestWindow(windows), metric);
  const shownAlerts = mergeAlerts((firing.data && firing.data.alerts) || [], liveAlerts).slice(0, 5);
  // Nothing received for longer than the fleet's offline threshold: "Now" is only the last
  // known reading, and the page says so (found by a black-box test: a device stopped for
  // minutes showed "● live" and its old power as "Now"). The health panel's reload every
  // 10 s re-renders the page, so this follows the clock.
  const receivedMs = reading ? new Date(reading.received_at || reading.timestamp).getTime() : NaN;
  const silent = reading && Number.isFinite(receivedMs) && Date.now() - receivedMs >= fmt.ONLINE_WITHIN_MS;
  return html`<section class="device">
    <p class="crumbs"><a href="#/">Fleet</a> › ${device.owner_id && html`<a href=${'#/home/' + enc(device.owner_id)}>${device.owner_id}</a> › `}${id}</p>
    <div class="page-head">
      <h1>${device.name || id}</h1>
      <span class=${'badge ' + (streamState === 'live' ? 'ok' : 'warn')} data-testid="stream-state" data-state=${streamState} title=${streamState === 'paused' ? 'live updates pause while the tab is hidden (browsers allow few connections per server)' : "live updates from the server (not the device's own state: see Health)"}>${streamState === 'live' ? '● live' : streamState}</span>
      ${silent && html`<span class="badge warn" data-testid="device-silent" title="nothing received from the device for longer than 2 minutes: the values shown are its last known ones">device silent · last heard ${fmt.ago(reading.received_at || reading.timestamp)}</span>`}
    </div>
    <div class="grid">
      <div class="card meta">
        <h2>Device</h2>
        <dl>
          <dt>Id</dt><dd><code>${id}</code></dd>
          <dt>Owner</dt><dd>${device.owner_id || '—'}</dd>
          <dt>Model</dt><dd>${device.model || '—'}</dd>
          <dt>Location</dt><dd>${device.location || '—'}</dd>
          <dt>Time zone</dt><dd>${tz}</dd>
          <dt>Installed</dt><dd>${fmt.time(device.installed_at, tz)}</dd>
        </dl>
      </div>
      <div class="card now">
        <h2>${silent ? 'Last known' : 'Now'}</h2>
        <div class="big" data-testid="live-power">${fmt.power(nowPower)}</div>
        ${metric !== 'power_w' && html`<div class="muted small">${fmt.powerLabel(metric)}</div>`}
        <div class="muted">Voltage <span data-testid="live-voltage">${fmt.volts(num(m.voltage_v))}</span></div>
        <div class="muted small" title=${reading ? 'received ' + fmt.time(reading.received_at, tz) : ''}>Last reading ${reading ? fmt.time(reading.timestamp, tz) : 'never'}</div>
        ${shownAlerts.map((a) => html`<div class=${'badge ' + alertBadge(a.state)} data-testid="alert-badge" data-alert-id=${a.id} data-state=${a.state || ''}>${a.state || 'alert'}: ${a.rule_name || a.rule_id || ''}</div>`)}
      </div>
      <${Health} h=${health} tz=${tz} />
    </div>
    <${LatestMetrics} metrics=${m} />
    <div class="card">
      <h2>Live ${fmt.powerLabel(metric)} <span class="muted small">1-minute windows, up to the last ${LIVE_WINDOWS * 2}; times in ${tz}</span></h2>
      <${Chart} opts=${liveOpts} data=${liveData} testid="live-chart" />
    </div>
    <${History} id=${id} metric=${metric} tz=${tz} refresh=${refresh} />
    <${DailyEnergy} id=${id} tz=${tz} refresh=${refresh} />
  </section>`;
}

// Every metric of the latest reading, also those no chart shows (temp_c, a counter-only
// device's energy_wh, any custom name), with the unit its name implies.
function LatestMetrics({ metrics }) {
  const names = Object.keys(metrics || {}).sort();
  if (!names.length) return null;
  return html`<div class="card">
    <h2>Latest reading <span class="muted small">every metric</span></h2>
    <table class="metrics" data-testid="latest-metrics"><tbody>
      ${names.map((n) => html`<tr data-metric=${n}><th><span class="ellip" title=${n}>${n}</span></th><td class="num">${fmt.metric(num(metrics[n]), n)}</td></tr>`)}
    </tbody></table>
  </div>`;
}

function Health({ h, tz }) {
  const d = h.data || {};
  const seen = d.last_seen && new Date(d.last_seen).getTime() > 0;
  return html`<div class="card health" data-testid="health">
    <h2>Health</h2>
    ${h.loading && !h.data ? html`<${Loading} />` : h.error ? html`<${ErrorBox} error=${h.error} retry=${h.reload} />` : html`<dl>
      <dt>Last seen</dt><dd title=${fmt.time(d.last_seen, tz)}>${fmt.ago(d.last_seen)}</dd>
      <dt>Watermark</dt><dd>${fmt.time(d.watermark, tz)}</dd>
      <dt>Lag</dt><dd>${seen ? fmt.seconds(d.lag_seconds) : '—'}</dd>
      <dt>Clock skew</dt><dd>${fmt.seconds(d.clock_skew_seconds)}</dd>
      <dt>Events</dt><dd>${fmt.count(d.events)}</dd>
      <dt>Late updates</dt><dd>${fmt.count(d.late_updates)}</dd>
      <dt>Late dropped</dt><dd>${fmt.count(d.late_dropped)}</dd>
      <dt>Duplicates</dt><dd>${fmt.count(d.duplicates)}</dd>
    </dl>`}
  </div>`;
}

function History({ id, metric, tz, refresh }) {
  const [range, setRange] = useState('24h');
  // The range asked for (seconds): what an empty chart spans.
  const asked = useRef(null);
  const hist = useLoad(
    (signal) => {
      const r = RANGES.find((x) => x.id === range);
      const to = new Date();
      const from = new Date(to.getTime() - r.ms);
      asked.current = [from.getTime() / 1000, to.getTime() / 1000];
      return api(`/v1/devices/${enc(id)}/metrics/history` + qs({ from: from.toISOString(), to: to.toISOString(), resolution: 'auto', metrics: `${metric},voltage_v`, limit: 1500 }), { signal });
    },
    [id, range, metric, refresh],
    { keepOnError: true },
  );
  const recs = (hist.data && hist.data.data) || [];
  const step = (hist.data && STEP[hist.data.resolution]) || (recs[0] && recs[0].window_end ? sec(recs[0].window_end) - sec(recs[0].window_start) : 60);
  const powerData = useMemo(() => withGaps(recs.map((r) => [sec(r.window_start), fmt.recordPower(r, metric), maxPower(r, metric)]), step, 3), [hist.data, metric]);
  const voltData = useMemo(() => withGaps(recs.map((r) => [sec(r.window_start), num(r.metrics?.voltage_v?.min), num(r.metrics?.voltage_v?.avg), num(r.metrics?.voltage_v?.max)]), step, 4), [hist.data]);
  // A chart only for what the device sends: one without voltage_v got an empty "Voltage"
  // chart with a blank axis (found by the black-box test, session 31).
  const hasVoltage = recs.some((r) => r.metrics && r.metrics.voltage_v);
  const emptyRange = () => asked.current || [Date.now() / 1000 - RANGES[0].ms / 1000, Date.now() / 1000];
  const powerOpts = useMemo(() => ({ series: [{}, powerSeries('avg', '#2f7de1', 'rgba(47,125,225,0.12)'), powerSeries('max', '#e8833a')], axes: [timeAxis, valueAxis('W')], scales: { x: timeScale(emptyRange) }, tzDate: inZone(tz) }), [tz]);
  const voltOpts = useMemo(() => {
    const v = (label, stroke, dash) => ({ label, stroke, dash, width: 1.5, value: (u, x) => fmt.volts(x) });
    return { series: [{}, v('min', '#8a8f98', [4, 4]), v('avg', '#8b5cf6'), v('max', '#8a8f98', [4, 4])], axes: [timeAxis, valueAxis('V')], scales: { x: timeScale(emptyRange) }, tzDate: inZone(tz) };
  }, [tz]);
  return html`<div class="card">
    <div class="card-head">
      <h2>History ${hist.data && html`<span class="muted small">resolution ${hist.data.resolution}, ${recs.length} windows; times in ${tz}</span>`}</h2>
      <div class="seg" role="group" aria-label="Range">
        ${RANGES.map((r) => html`<button class=${r.id === range ? 'on' : ''} onClick=${() => setRange(r.id)}>${r.label}</button>`)}
      </div>
    </div>
    ${hist.error && !hist.data ? html`<${ErrorBox} error=${hist.error} retry=${hist.reload} />` : html`
      ${hist.loading && !hist.data && html`<${Loading} />`}
      <h3>${fmt.powerLabel(metric, true)}</h3>
      <${Chart} opts=${powerOpts} data=${powerData} testid="history-chart" />
      ${hasVoltage && html`<h3>Voltage</h3>
      <${Chart} opts=${voltOpts} data=${voltData} height=${160} testid="voltage-chart" />`}`}
  </div>`;
}

function DailyEnergy({ id, tz, refresh }) {
  const asked = useRef(null);
  const days = useLoad((signal) => {
    const to = new Date();
    const from = new Date(to.getTime() - 31 * 86400e3);
    asked.current = [from.getTime() / 1000, to.getTime() / 1000];
    return api(`/v1/devices/${enc(id)}/metrics/history` + qs({ from: from.toISOString(), to: to.toISOString(), resolution: '1d', limit: 100 }), { signal });
  }, [id, refresh], { keepOnError: true });
  const recs = (days.data && days.data.data) || [];
  const labels = useMemo(() => new Map(recs.map((r) => [sec(r.window_start), r.local_date])), [days.data]);
  // The energy of the device's power metric (a solar inverter's solar_w.energy_wh).
  const metric = useMemo(() => fmt.powerMetric(recs), [days.data]);
  const data = useMemo(() => [recs.map((r) => sec(r.window_start)), recs.map((r) => fmt.recordEnergy(r, metric))], [days.data, metric]);
  const opts = useMemo(
    () => ({
      series: [{ value: (u, v) => (v == null ? '' : labels.get(v) || fmt.localDate(v * 1000, tz)) }, { label: 'energy', fill: 'rgba(34,160,107,0.6)', stroke: '#22a06b', paths: uPlot.paths.bars({ size: [0.7, 60] }), points: { show: false }, value: (u, v) => fmt.energy(v) }],
      axes: [{ ...timeAxis, splits: (u) => { const xs = u.data[0]; const k = Math.max(1, Math.ceil(xs.length / (u.bbox.width / devicePixelRatio / 56))); return xs.filter((_, i) => i % k === 0); }, values: (u, vals) => vals.map((v) => (labels.get(v) || fmt.localDate(v * 1000, tz)).slice(5)) }, valueAxis('Wh', 70)],
      // Half a day either side of the first and last day; no days: the 31 asked for.
      scales: { x: { time: false, range: (u) => {
        const xs = u.data[0] || [];
        if (!xs.length) return asked.current || [Date.now() / 1000 - 31 * 86400, Date.now() / 1000];
        return [xs[0] - 43200, xs[xs.length - 1] + 43200];
      } } },
    }),
    [labels, tz],
  );
  return html`<div class="card">
    <h2>Daily energy <span class="muted small">local days in ${tz}, last 31</span></h2>
    ${days.loading && !days.data ? html`<${Loading} />` : days.error && !days.data ? html`<${ErrorBox} error=${days.error} retry=${days.reload} />` : html`<${Chart} opts=${opts} data=${data} height=${180} testid="daily-chart" />`}
  </div>`;
}
