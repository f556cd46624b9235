// Small shared pieces: loading and error states, the uPlot wrapper, data hooks.
import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export function Loading({ what = 'Loading' }) {
  return html`<p class="state loading" role="status"><span class="spinner"></span>${what}…</p>`;
}

export function ErrorBox({ error, retry }) {
  if (!error) return null;
  return html`<div class="state error" role="alert">
    <strong>${error.status ? 'Error ' + error.status : 'Error'}</strong>: ${error.message || String(error)}
    ${retry && html` <button class="link" onClick=${retry}>Retry</button>`}
  </div>`;
}

export function NotAvailable({ what }) {
  return html`<div class="state unavailable" data-testid="not-available">
    <strong>${what} not available</strong>: this Joule server does not offer this API yet.
  </div>`;
}

// Loads `fn(signal)` whenever `deps` change: {data, error, loading, reload}. With
// keepOnError a failed reload keeps the data it had (shown with the error).
export function useLoad(fn, deps, { keepOnError = false } = {}) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const ctrl = new AbortController();
    setState((s) => ({ ...s, loading: true, error: null }));
    fn(ctrl.signal).then(
      (data) => !ctrl.signal.aborted && setState({ data, error: null, loading: false }),
      (error) => !ctrl.signal.aborted && error.name !== 'AbortError' && setState((s) => ({ data: keepOnError ? s.data : null, error, loading: false })),
    );
    return () => ctrl.abort();
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
    };
    const hooks = { ...(opts.hooks || {}), draw: [...((opts.hooks && opts.hooks.draw) || []), noteDrawn] };
    plot.current = new uPlot({ ...opts, hooks, width, height }, data, node);
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

// Local-time axis values for uPlot (seconds since the epoch).
export const timeAxis = { scale: 'x', stroke: '#8a8f98', grid: { stroke: 'rgba(138,143,152,0.25)' }, ticks: { stroke: 'rgba(138,143,152,0.25)' } };

export function valueAxis(unit, size = 60) {
  return {
    stroke: '#8a8f98',
    grid: { stroke: 'rgba(138,143,152,0.25)' },
    ticks: { stroke: 'rgba(138,143,152,0.25)' },
    size,
    values: (u, vals) => vals.map((v) => (v == null ? '' : formatAxis(v) + ' ' + unit)),
  };
}

// Short tick labels: k, M, G, T, P, E, then exponents (the API accepts |value| ≤ 1e100).
function formatAxis(v) {
  const a = Math.abs(v);
  if (a >= 1e21) return v.toExponential(1);
  if (a >= 1e4) {
    const i = Math.min(6, Math.floor(Math.log10(a) / 3));
    return +(v / 1000 ** i).toFixed(1) + ['', 'k', 'M', 'G', 'T', 'P', 'E'][i];
  }
  return +v.toFixed(a < 10 ? 2 : 1);
}
