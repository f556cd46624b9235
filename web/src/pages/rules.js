// Alert rules: list, create, edit, delete (CONTRACT §4). Validation is the API's: its
// error messages are shown as they come.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api } from '../api.js';
import * as fmt from '../format.js';
import { ErrorBox, Loading, NotAvailable, useLoad } from '../ui.js';

const enc = encodeURIComponent;
const KINDS = ['threshold', 'absence', 'rate_of_change', 'energy_budget'];
const EMPTY = {
  name: '', scopeType: 'device_id', scopeValue: '', kind: 'threshold', metric: 'power_w', aggregate: 'max', op: '>',
  threshold: '', clear_threshold: '', for_windows: '1', resolution: '1m', absent_for: '10m', budget_wh: '',
  severity: 'warning', cooldown: '15m', channels: '[]', enabled: true,
};

function toForm(rule) {
  const scope = rule.scope || {};
  const scopeType = ['device_id', 'owner_id', 'model'].find((k) => scope[k] !== undefined) || 'device_id';
  const s = (v) => (v === undefined || v === null ? '' : String(v));
  return {
    ...EMPTY, name: s(rule.name), scopeType, scopeValue: s(scope[scopeType]), kind: rule.kind || 'threshold',
    metric: s(rule.metric) || 'power_w', aggregate: s(rule.aggregate) || 'max', op: s(rule.op) || '>',
    threshold: s(rule.threshold), clear_threshold: s(rule.clear_threshold), for_windows: s(rule.for_windows),
    resolution: s(rule.resolution) || '1m', absent_for: s(rule.absent_for), budget_wh: s(rule.budget_wh),
    severity: s(rule.severity) || 'warning', cooldown: s(rule.cooldown), channels: JSON.stringify(rule.channels || [], null, 1),
    enabled: rule.enabled !== false,
  };
}

// The rule JSON for the form: only the fields its kind uses; numbers as numbers (a field
// that is not a number is sent as typed, so the API's message explains it).
function toRule(f) {
  const n = (v) => (v.trim() === '' ? undefined : Number.isFinite(Number(v)) ? Number(v) : v);
  // `enabled` always: a PUT replaces the rule, and the API's default (true) would turn a
  // disabled rule back on.
  const rule = { name: f.name, scope: { [f.scopeType]: f.scopeValue }, kind: f.kind, severity: f.severity, enabled: f.enabled };
  if (f.kind !== 'absence') Object.assign(rule, { metric: f.metric, resolution: f.resolution });
  if (f.kind === 'threshold' || f.kind === 'rate_of_change') {
    Object.assign(rule, { aggregate: f.aggregate, op: f.op, threshold: n(f.threshold), clear_threshold: n(f.clear_threshold), for_windows: n(f.for_windows) });
  }
  if (f.kind === 'absence') rule.absent_for = f.absent_for;
  if (f.kind === 'energy_budget') rule.budget_wh = n(f.budget_wh);
  if (f.cooldown.trim()) rule.cooldown = f.cooldown.trim();
  let channels;
  try {
    channels = JSON.parse(f.channels || '[]');
  } catch {
    throw { status: 0, message: 'Channels must be a JSON array, e.g. [{"type":"webhook","url":"https://…","secret":"…"}]' };
  }
  rule.channels = channels;
  for (const k of Object.keys(rule)) if (rule[k] === undefined) delete rule[k];
  return rule;
}

function RuleForm({ initial, editing, onDone, onCancel }) {
  const [f, setF] = useState(initial);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setF({ ...f, [k]: e.currentTarget.value });
  const field = (k, label, attrs = {}) => html`<label class="field">${label}<input name=${k} value=${f[k]} onInput=${set(k)} ...${attrs} /></label>`;
  const choice = (k, label, opts) => html`<label class="field">${label}<select name=${k} value=${f[k]} onChange=${set(k)}>
    ${opts.map((o) => html`<option value=${o}>${o}</option>`)}</select></label>`;
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const rule = toRule(f);
      if (editing) await api(`/v1/rules/${enc(editing)}`, { method: 'PUT', body: rule });
      else await api('/v1/rules', { method: 'POST', body: rule });
      onDone();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const details = error && error.body && error.body.error && (error.body.error.details || error.body.error.fields);
  return html`<form class="card rule-form" onSubmit=${submit} data-testid="rule-form">
    <h2>${editing ? 'Edit rule ' + editing : 'New rule'}</h2>
    <div class="form-grid">
      ${field('name', 'Name', { required: true })}
      ${choice('scopeType', 'Scope', ['device_id', 'owner_id', 'model'])}
      ${field('scopeValue', 'Scope value', { placeholder: 'plug-42' })}
      ${choice('kind', 'Kind', KINDS)}
      ${f.kind !== 'absence' && field('metric', 'Metric')}
      ${f.kind !== 'absence' && choice('resolution', 'Resolution', ['1m', '1h', '1d'])}
      ${(f.kind === 'threshold' || f.kind === 'rate_of_change') && html`
        ${choice('aggregate', 'Aggregate', ['max', 'min', 'avg', 'twa', 'last', 'sum', 'energy_wh', 'delta'])}
        ${choice('op', 'Operator', ['>', '>=', '<', '<='])}
        ${field('threshold', 'Threshold', { inputmode: 'decimal' })}
        ${field('clear_threshold', 'Clear threshold', { inputmode: 'decimal' })}
        ${field('for_windows', 'For windows', { inputmode: 'numeric' })}`}
      ${f.kind === 'absence' && field('absent_for', 'Absent for', { placeholder: '10m' })}
      ${f.kind === 'energy_budget' && field('budget_wh', 'Budget (Wh)', { inputmode: 'decimal' })}
      ${choice('severity', 'Severity', ['info', 'warning', 'critical'])}
      ${field('cooldown', 'Cooldown', { placeholder: '15m' })}
      <label class="field check"><input type="checkbox" name="enabled" checked=${f.enabled}
        onChange=${(e) => setF({ ...f, enabled: e.currentTarget.checked })} /> Enabled</label>
    </div>
    <label class="field">Channels (JSON)<textarea name="channels" rows="2" value=${f.channels} onInput=${set('channels')}></textarea></label>
    <div class="form-actions">
      <button type="submit" class="primary" disabled=${busy}>${busy ? 'Saving…' : editing ? 'Save' : 'Create rule'}</button>
      <button type="button" onClick=${onCancel}>Cancel</button>
    </div>
    ${error && html`<div class="state error" role="alert" data-testid="rule-error">
      <strong>${error.status === 400 || error.status === 422 ? 'The API refused this rule' : 'Error' + (error.status ? ' ' + error.status : '')}</strong>: ${error.message}
      ${Array.isArray(details) && html`<ul>${details.map((d) => html`<li>${typeof d === 'string' ? d : (d.field ? d.field + ': ' : '') + (d.message || JSON.stringify(d))}</li>`)}</ul>`}
    </div>`}
  </form>`;
}

function describe(r) {
  const scope = Object.entries(r.scope || {}).map(([k, v]) => k + '=' + v).join(', ');
  let what = r.kind;
  const times = r.for_windows > 1 ? ` for ${r.for_windows}×${r.resolution}` : '';
  if (r.kind === 'threshold') what = `${r.aggregate || ''}(${r.metric}) ${r.op} ${r.threshold}${times}`;
  // The change of the aggregate from one window to the next (CONTRACT §4).
  if (r.kind === 'rate_of_change') what = `Δ ${r.aggregate || ''}(${r.metric}) per ${r.resolution || '1m'} ${r.op} ${r.threshold}${times}`;
  if (r.kind === 'absence') what = `no data for ${r.absent_for}`;
  if (r.kind === 'energy_budget') what = `${r.metric} over ${fmt.energy(r.budget_wh)}`;
  return { scope, what };
}

export function RulesPage() {
  const rules = useLoad((signal) => api('/v1/rules', { signal }), []);
  const [editing, setEditing] = useState(null); // null | 'new' | rule
  const [error, setError] = useState(null);
  const remove = async (r) => {
    if (!confirm(`Delete rule "${r.name || r.id}"?`)) return;
    setError(null);
    try {
      await api(`/v1/rules/${enc(r.id)}`, { method: 'DELETE' });
      rules.reload();
    } catch (e) {
      setError(e);
    }
  };
  if (rules.error && rules.error.routeMissing) return html`<section><div class="page-head"><h1>Rules</h1></div><${NotAvailable} what="Alert rules" /></section>`;
  const list = (rules.data && (rules.data.rules || rules.data.data)) || [];
  return html`<section>
    <div class="page-head"><h1>Rules</h1>
      ${editing === null && html`<button class="primary" onClick=${() => setEditing('new')} data-testid="new-rule">New rule</button>`}</div>
    ${editing !== null && html`<${RuleForm} key=${editing === 'new' ? 'new' : editing.id} initial=${editing === 'new' ? EMPTY : toForm(editing)}
      editing=${editing === 'new' ? null : editing.id} onCancel=${() => setEditing(null)} onDone=${() => { setEditing(null); rules.reload(); }} />`}
    <${ErrorBox} error=${error} />
    ${rules.loading && !rules.data ? html`<${Loading} what="Loading rules" />` : rules.error ? html`<${ErrorBox} error=${rules.error} retry=${rules.reload} />`
      : list.length === 0 ? html`<p class="state">No rules yet.</p>` : html`<table class="rules" data-testid="rules-table">
        <thead><tr><th>Name</th><th>Scope</th><th>Condition</th><th>Severity</th><th>State</th><th></th></tr></thead>
        <tbody>${list.map((r) => {
          const d = describe(r);
          return html`<tr key=${r.id}>
            <td data-label="Name">${r.name || r.id}</td><td data-label="Scope">${d.scope}</td>
            <td data-label="Condition"><code>${d.what}</code></td><td data-label="Severity">${r.severity}</td>
            <td data-label="State">${r.enabled === false ? html`<span class="badge muted">disabled</span>` : 'enabled'}</td>
            <td class="actions"><button onClick=${() => setEditing(r)}>Edit</button> <button class="danger" onClick=${() => remove(r)}>Delete</button></td>
          </tr>`;
        })}</tbody></table>`}
  </section>`;
}
