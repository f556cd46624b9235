// Small shared pieces: loading and error states, the uPlot wrapper, data hooks.
import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export function Loading({ what = 'Loading' }) {
  return html`<p class="state loading" role="status"><span class="spinner"></span>${what}…</p>`;
}

// `autoRetry`: say that an outage is retried by itself (useLoad does; a caller with its own
// loop says so itself).
export function ErrorBox({ error, retry, autoRetry = true }) {
  if (!error) return null;
  return html`<div class="state error" role="alert">
    <strong>${error.status ? 'Error ' + error.status : 'Error'}</strong>: ${error.message || String(error)}
    ${retry && html` <button class="link" onClick=${retry}>Retry</button>`}
    ${retry && autoRetry && isOutage(error) && html` <span class="muted small" data-testid="auto-retry">(retrying every ${RETRY_UNREACHABLE_MS / 1000} s)</span>`}
  </div>`;
}

export function NotAvailable({ what }) {
  return html`<div class="state unavailable" data-testid="not-available">
    <strong>${what} not available</strong>: this Joule server does not offer this API yet.
  </div>`;
}

// How often a load that failed because Joule could not be reached (or answered 503) is
// tried again by itself.
export const RETRY_UNREACHABLE_MS = 15000;

// Whether an error is an outage that goes away by itself: Joule unreachable or 503.
export function isOutage(error) {
  return !!error && (error.status === 0 || error.status === 503);
}

// Loads `fn(signal)` whenever `deps` change: {data, error, loading, reload}. With
// keepOnError a failed reload keeps the data it had (shown with the error). A load that
// failed on an outage is tried again every RETRY_UNREACHABLE_MS while it lasts (a page
// first opened while Joule was down stayed on its error until Retry was clicked; found by
// a black-box test).
export function useLoad(fn, deps, { keepOnError = false } = {}) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const ctrl = new AbortController();
    let retry = null;
    setState((s) => ({ ...s, loading: true, error: null }));
    fn(ctrl.signal).then(
      (data) => !ctrl.signal.aborted && setState({ data, error: null, loading: false }),
      (error) => {
        if (ctrl.signal.aborted || error.name === 'AbortError') return;
        setState((s) => ({ data: keepOnError ? s.data : null, error, loading: false }));
        if (isOutage(error)) retry = setTimeout(() => setTick((t) => t + 1), RETRY_UNREACHABLE_MS);
      },
    );
    return () => {
      ctrl.abort();
      if (retry) clearTimeout(retry);
    };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

// A uPlot chart. `opts` must be stable (memoize it); `data` may change freely.
// For tests, every draw records what was drawn: data-span (seconds, the x scale's width),
// data-x-min/data-x-max and data-x-labels (the x axis' tick labels, "|"-separated).
// (Read at draw time: uPlot applies setData's scales later, in a microtask.)
export function Chart({ opts, data, height = 220, testid }) {
  const el = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const node = el.current;
    const width = Math.max(200, node.clientWidth || 600);
    const noteDrawn = (u) => {
      const x = u.scales.x;
      if (x.min == null || x.max == null) return;
      node.dataset.span = String(Math.round(x.max - x.min));
      node.dataset.xMin = String(Math.round(x.min));
      node.dataset.xMax = String(Math.round(x.max));
      const labels = (u.axes[0] && u.axes[0]._values) || [];
      node.dataset.xLabels = labels.map((v) => String(v).replace(/\n/g, ' ')).join('|');
      const yLabels = (u.axes[1] && u.axes[1]._values) || [];
      node.dataset.yLabels = yLabels.map((v) => String(v)).join('|');
      node.dataset.plotWidth = String(Math.round(u.bbox.width / devicePixelRatio));
    };
    const hooks = { ...(opts.hooks || {}), draw: [...((opts.hooks && opts.hooks.draw) || []), noteDrawn] };
    const padding = opts.padding || [null, edgePadding, null, edgePadding];
    plot.current = new uPlot({ ...opts, hooks, padding, width, height }, data, node);
    const ro = new ResizeObserver(() => {
      const w = Math.max(200, node.clientWidth);
      if (plot.current && w !== plot.current.width) plot.current.setSize({ width: w, height });
    });
    ro.observe(node);
    return () => {
      ro.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [opts, height]);
  useEffect(() => {
    if (plot.current) plot.current.setData(data);
  }, [data]);
  const points = data && data[0] ? data[0].length : 0;
  // data-filled: the windows with a value in the first series (data-points counts windows).
  const filled = data && data[1] ? data[1].filter((v) => v != null).length : 0;
  return html`<div class="chart" ref=${el} data-testid=${testid} data-points=${points} data-filled=${filled}>
    ${points === 0 && html`<p class="chart-empty">No data in this range</p>`}
  </div>`;
}

// Room at a chart's left (side 3) and right (side 1) for the outermost labels of its x
// axis. uPlot centres a label on its tick, and the first and last ticks may lie on the
// plot's edges, with only the value axis (left) or uPlot's 25 px pad (right) outside: a
// first label of seconds ticks, ":00" over "12/13/26 10:21am", or a last "10:23am", was
// cut off at the canvas' edge (black-box test). uPlot calls this in each sizing cycle,
// after laying out the axes, so the labels of the size being fitted are known; a label
// counts as if its tick were on the edge (its widest line, + 2 px).
function edgePadding(u, side, sidesWithAxes) {
  const own = sidesWithAxes[side] ? 0 : 25;  // uPlot's own padding (autoPadSide)
  const labels = (u.axes[0] && u.axes[0]._values) || [];
  if (!labels.length) return own;
  const label = String(labels[side === 3 ? 0 : labels.length - 1] ?? '');
  const half = Math.max(0, ...label.split('\n').map(textWidth)) / 2 + 2;
  let axes = 0;  // the value axes on this side, between the padding and the plot
  for (const a of u.axes) if (a.side === side && a.show !== false && a._show !== false) axes += a._size || 0;
  return Math.max(own, Math.ceil(half - axes));
}

// The x scale of time charts (seconds). A single window gets an hour around it (uPlot's
// own range for one point is 86,400 of its time units: years, as ours are seconds); no
// data gets `empty()` — [from, to] of the range asked for — instead of the Unix epoch.
// The data decides, not (min, max): uPlot pads a single point before it asks.
export function timeScale(empty = () => {
  const now = Date.now() / 1000;
  return [now - 3600, now];
}) {
  return {
    time: true,
    range: (u, min, max) => {
      const xs = (u.data && u.data[0]) || [];
      if (xs.length === 0 || min == null || max == null) return empty();
      const first = xs[0];
      if (xs[xs.length - 1] === first && first != null) return [first - 1800, first + 1800];
      return min === max ? [min - 1800, max + 1800] : [min, max];
    },
  };
}

// Local-time axis values for uPlot (seconds since the epoch). `space`: the least distance
// between two ticks, in CSS px — a label such as "10:00am" is about 50 px wide, and uPlot's
// default (50) let 15-minute labels run together ("10:00am10:15am10:30am", black-box test).
export const timeAxis = { scale: 'x', space: 90, stroke: '#8a8f98', grid: { stroke: 'rgba(138,143,152,0.25)' }, ticks: { stroke: 'rgba(138,143,152,0.25)' } };

// Tick increments for value axes: 1, 2, 5 × 10^k up to the API's |value| ≤ 1e100. uPlot's
// own stop near 1e16: past that it found no increment and drew no ticks (a blank axis).
const VALUE_INCRS = [];
for (let k = -12; k <= 100; k++) for (const m of [1, 2, 5]) VALUE_INCRS.push(+(m + 'e' + k));

// Width of the labels (CSS px) in uPlot's axis font.
let measureCtx = null;
function textWidth(text) {
  if (!measureCtx) {
    measureCtx = document.createElement('canvas').getContext('2d');
    measureCtx.font = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  }
  return measureCtx.measureText(text).width;
}

// A value axis whose labels carry the unit with the SI prefix ("3 TW", as the rest of the
// page writes it; it wrote "2T W") and as many decimals as the tick spacing needs (tiny
// daily energy gave "0.01 Wh, 0.01 Wh, 0 Wh"). Its width follows its labels (at least
// `size` px): "-1e+100 V" did not fit 60 px and the axis was left blank.
export function valueAxis(unit, size = 60) {
  return {
    stroke: '#8a8f98',
    grid: { stroke: 'rgba(138,143,152,0.25)' },
    ticks: { stroke: 'rgba(138,143,152,0.25)' },
    incrs: VALUE_INCRS,
    size: (u, values) => {
      if (!values || !values.length) return size;
      const widest = Math.max(...values.map((v) => (v ? textWidth(String(v)) : 0)));
      return Math.max(size, Math.ceil(widest) + 18);  // + tick length and gap
    },
    values: (u, vals, axisIdx, space, incr) => vals.map((v) => (v == null ? '' : formatAxis(v, incr, unit))),
  };
}

// A tick label: k, M, G, T, P, E before the unit, then exponents (the API accepts |value|
// ≤ 1e100), with the decimals the increment `incr` between ticks needs (trailing zeros
// dropped), so neighbouring ticks never read the same.
const PREFIXES = ['', 'k', 'M', 'G', 'T', 'P', 'E'];
const decimals = (step) => (step > 0 ? Math.min(12, Math.max(0, Math.ceil(-Math.log10(step) - 1e-9))) : 0);
export function formatAxis(v, incr, unit) {
  const a = Math.abs(v);
  if (a === 0) return '0 ' + unit;
  if (a >= 1e21) {
    const exp = Math.floor(Math.log10(a));
    const mant = +(v / 10 ** exp).toFixed(decimals(incr ? incr / 10 ** exp : 0.1));
    return mant + 'e' + (exp >= 0 ? '+' : '') + exp + ' ' + unit;
  }
  const i = a >= 1000 ? Math.min(6, Math.floor(Math.log10(a) / 3)) : 0;
  const scaled = v / 1000 ** i;
  const d = decimals(incr ? incr / 1000 ** i : (a < 10 ? 0.01 : 0.1));
  return +scaled.toFixed(d) + ' ' + PREFIXES[i] + unit;
}
