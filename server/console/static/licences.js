// A token's Licences tab: assign, unassign and revoke (as the role allows),
// the licence operations as they progress, and the assignments; plus the
// licence warnings list used here and on the expiry overview.
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { fmtTime, gql } from './api.js';
import { PAGE, usePaged } from './paged.js';

export const OPERATION_FIELDS = `id kind status requested completed createdAt completedAt
  failures { adamID pricingParam serialNumber clientUserID code message } token { id }`;

const KIND_TEXT = { ASSIGN: 'Assign', UNASSIGN: 'Unassign', REVOKE: 'Revoke' };
const OP_STATUS_TEXT = { PENDING: 'Pending', COMPLETE: 'Complete', PARTIAL: 'Partly done', FAILED: 'Failed' };
const WARNING_TEXT = { LOW: 'Low', EXHAUSTED: 'Exhausted' };

// newer picks the later of two views of one operation: an operation never
// goes back to PENDING, and its completed count only grows.
export function newer(a, b) {
  if (!a) return b;
  if (!b) return a;
  if (a.status !== 'PENDING') return a;
  if (b.status !== 'PENDING') return b;
  return a.completed >= b.completed ? a : b;
}

// LicenceWarningList shows licenceWarnings as they arrived, newest first.
export function LicenceWarningList({ warnings, showToken, empty }) {
  return html`
    <ul aria-live="polite" class="warnings licence-warnings">
      ${warnings.length === 0 ? html`<li class="hint">${empty}</li>` : null}
      ${warnings.map((w) => html`<li key=${w.app.id} class=${'warning ' + w.level}>
        <span class="level">${WARNING_TEXT[w.level] || w.level}</span>
        ${w.app.name || 'adamID ' + w.app.adamID}: ${w.availableCount} licence${w.availableCount === 1 ? '' : 's'} left
        (warns at ${w.threshold})
        ${showToken ? html` · <a href=${'#/tokens/' + encodeURIComponent(w.token.id) + '?tab=licences'}>${w.token.locationName}</a> (${w.token.customer.name})` : null}
        <span class="hint"> · ${fmtTime(w.issuedAt)}</span></li>`)}
    </ul>`;
}

// lines reads one serial number or user ID per line, without blanks or repeats.
function lines(text) {
  return [...new Set(text.split(/\r?\n/).map((s) => s.trim()).filter(Boolean))];
}

// Targets is the "serial numbers or user IDs" choice and the pasted list.
function Targets({ prefix, kind, setKind, text, setText, verb, purpose }) {
  const what = (kind === 'serial' ? 'Serial numbers' : 'User IDs') + (purpose ? ' ' + purpose : '');
  return html`
    <fieldset class="choice">
      <legend>${verb}</legend>
      <label class="inline"><input type="radio" name=${prefix + '-kind'} checked=${kind === 'serial'} onChange=${() => setKind('serial')} /> Devices (serial numbers)</label>
      <label class="inline"><input type="radio" name=${prefix + '-kind'} checked=${kind === 'user'} onChange=${() => setKind('user')} /> Users (clientUserId)</label>
    </fieldset>
    <div class="field">
      <label for=${prefix + '-targets'}>${what}, one per line</label>
      <textarea id=${prefix + '-targets'} rows="5" spellcheck="false" autocomplete="off" value=${text} onInput=${(e) => setText(e.target.value)}></textarea>
    </div>`;
}

const TOKEN_APPS = `query($where: AppWhereInput) { apps(first: 100, where: $where, orderBy: {field: NAME, direction: ASC}) {
  totalCount edges { node { id adamID pricingParam name availableCount unlimited } } } }`;

// AssignForm assigns or unassigns the chosen apps' licences.
function AssignForm({ token, onStarted, changed }) {
  const [search, setSearch] = useState('');
  const [query, setQuery] = useState('');
  const [apps, setApps] = useState(null);
  const [chosen, setChosen] = useState({}); // App ID → app, kept across searches
  const [kind, setKind] = useState('serial');
  const [text, setText] = useState('');
  const [error, setError] = useState('');
  const [done, setDone] = useState('');
  const [busy, setBusy] = useState(false);
  useEffect(() => { const t = setTimeout(() => setQuery(search.trim()), 250); return () => clearTimeout(t); }, [search]);
  useEffect(() => {
    const where = { hasTokenWith: [{ id: token.id }] };
    if (query) where.or = [{ nameContainsFold: query }, { adamID: query }];
    let live = true;
    gql(TOKEN_APPS, { where }).then((d) => live && setApps(d.apps)).catch((e) => live && setError(e.message));
    return () => { live = false; };
  }, [query, token.id, changed]);

  const toggle = (a) => setChosen((c) => {
    const next = { ...c };
    if (next[a.id]) delete next[a.id]; else next[a.id] = a;
    return next;
  });
  async function run(mutation) {
    setError('');
    setDone('');
    const picked = Object.values(chosen);
    const targets = lines(text);
    if (!picked.length) { setError('Choose at least one app.'); return; }
    if (!targets.length) { setError(`Paste at least one ${kind === 'serial' ? 'serial number' : 'user ID'}, one per line.`); return; }
    const input = { tokenID: token.id, assets: picked.map((a) => ({ adamID: a.adamID, pricingParam: a.pricingParam })) };
    input[kind === 'serial' ? 'serialNumbers' : 'clientUserIDs'] = targets;
    setBusy(true);
    try {
      const d = await gql(`mutation($in: LicenceInput!) { ${mutation}(input: $in) { operation { ${OPERATION_FIELDS} } } }`, { in: input });
      const op = d[mutation].operation;
      onStarted(op);
      setDone(`${KIND_TEXT[op.kind]} started for ${op.requested} licence${op.requested === 1 ? '' : 's'}; it is followed under Operations.`);
    } catch (e) { setError(e.message); }
    setBusy(false);
  }
  const rows = apps ? apps.edges.map((e) => e.node) : [];
  const picked = Object.values(chosen);
  return html`
    <form class="panel licence-form" onSubmit=${(e) => { e.preventDefault(); run('assignLicences'); }} aria-labelledby="assign-title">
      <h3 id="assign-title">Assign or unassign licences</h3>
      <div class="field"><label for="assign-app-search">Find apps</label>
        <input id="assign-app-search" type="search" value=${search} onInput=${(e) => setSearch(e.target.value)} placeholder="Name or adamID" /></div>
      <fieldset class="app-picker">
        <legend>Apps${picked.length ? ` (${picked.length} chosen)` : ''}</legend>
        ${apps === null ? html`<p class="hint">Loading apps…</p>` : null}
        ${apps && !rows.length ? html`<p class="hint">No app matches.</p>` : null}
        ${rows.map((a) => html`<label class="inline" key=${a.id}>
          <input type="checkbox" checked=${!!chosen[a.id]} onChange=${() => toggle(a)} />
          ${a.name || 'adamID ' + a.adamID} <span class="hint">(${a.name ? a.adamID + '; ' : ''}${a.pricingParam === 'PLUS' ? 'PLUS; ' : ''}${a.unlimited ? 'unlimited' : a.availableCount + ' available'})</span></label>`)}
        ${apps && apps.totalCount > rows.length ? html`<p class="hint">Showing ${rows.length} of ${apps.totalCount}; search to find the others.</p>` : null}
      </fieldset>
      <${Targets} prefix="assign" kind=${kind} setKind=${setKind} text=${text} setText=${setText} verb="For" />
      <div class="actions">
        <button type="submit" class="primary" disabled=${busy}>Assign licences</button>
        <button type="button" disabled=${busy} onClick=${() => run('unassignLicences')}>Unassign licences</button>
      </div>
      ${error && html`<p role="alert" class="error">${error}</p>`}
      ${done && html`<p role="status" class="note">${done}</p>`}
    </form>`;
}

// RevokeForm takes back every revocable licence of devices or users, after
// asking once more.
function RevokeForm({ token, onStarted }) {
  const [kind, setKind] = useState('serial');
  const [text, setText] = useState('');
  const [asking, setAsking] = useState(null);
  const [error, setError] = useState('');
  const [done, setDone] = useState('');
  const [busy, setBusy] = useState(false);
  const question = useRef(null);
  useEffect(() => { if (asking && question.current) question.current.focus(); }, [asking]);
  function ask(e) {
    e.preventDefault();
    setError('');
    setDone('');
    const targets = lines(text);
    if (!targets.length) { setError(`Paste at least one ${kind === 'serial' ? 'serial number' : 'user ID'}, one per line.`); return; }
    setAsking(targets);
  }
  async function revoke() {
    setBusy(true);
    const input = { tokenID: token.id, [kind === 'serial' ? 'serialNumbers' : 'clientUserIDs']: asking };
    try {
      const d = await gql(`mutation($in: RevokeLicencesInput!) { revokeLicences(input: $in) { operation { ${OPERATION_FIELDS} } } }`, { in: input });
      onStarted(d.revokeLicences.operation);
      setDone('Revoke started; it is followed under Operations.');
    } catch (err) { setError(err.message); }
    setAsking(null);
    setBusy(false);
  }
  const n = asking ? asking.length : 0;
  const who = kind === 'serial' ? `device${n === 1 ? '' : 's'}` : `user${n === 1 ? '' : 's'}`;
  return html`
    <form class="panel licence-form" onSubmit=${ask} aria-labelledby="revoke-title">
      <h3 id="revoke-title">Revoke every licence</h3>
      <p class="hint">Takes back every licence the devices or users hold under this token, for all apps.</p>
      <${Targets} prefix="revoke" kind=${kind} setKind=${setKind} text=${text} setText=${setText} verb="Of" purpose="to revoke" />
      ${asking ? html`
        <div class="confirm" role="group" aria-labelledby="revoke-q" key="confirm">
          <p id="revoke-q" tabindex="-1" ref=${question}>Revoke every licence of ${n} ${who} under ${token.locationName}?</p>
          <button type="button" class="danger" onClick=${revoke} disabled=${busy}>Revoke</button>
          <button type="button" onClick=${() => setAsking(null)}>Keep them</button>
        </div>` : html`<div class="actions" key="actions"><button type="submit" class="danger">Revoke licences</button></div>`}
      ${error && html`<p role="alert" class="error">${error}</p>`}
      ${done && html`<p role="status" class="note">${done}</p>`}
    </form>`;
}

const OPERATIONS = `query($id: ID!, $first: Int, $after: Cursor, $last: Int, $before: Cursor) { node(id: $id) { ... on ServerToken {
  licenceOperations(first: $first, after: $after, last: $last, before: $before, orderBy: {field: CREATED_AT, direction: DESC}) {
    ${PAGE} edges { node { ${OPERATION_FIELDS} } } } } } }`;

function failurePair(f) {
  const target = f.serialNumber ? 'serial number ' + f.serialNumber : f.clientUserID ? 'user ' + f.clientUserID : '';
  const asset = f.adamID ? 'adamID ' + f.adamID : '';
  return [asset, target].filter(Boolean).join(' · ');
}

// Operations lists the token's licence operations, newest first, with the
// live updates laid over the fetched rows.
function Operations({ token, updates, started }) {
  const list = usePaged((c) => gql(OPERATIONS, { id: token.id, ...c }).then((d) => d.node.licenceOperations), [token.id], 20, 'Operation pages');
  const known = new Set(list.rows.map((o) => o.id));
  // An operation started here or elsewhere shows up at the top of page one.
  const unseen = Object.keys(updates).some((id) => !known.has(id));
  useEffect(() => { if (unseen && list.page === 0 && list.conn) list.reload(); }, [unseen, started]);
  const rows = list.rows.map((o) => newer(updates[o.id], o));
  return html`
    ${list.error && html`<p role="alert" class="error">${list.error}</p>`}
    <table class="data operations">
      <caption>${list.conn ? (list.conn.totalCount ? `${list.conn.totalCount} operation${list.conn.totalCount === 1 ? '' : 's'}, newest first; they update live` : 'No licence operation yet.') : 'Loading operations…'}</caption>
      <thead><tr><th scope="col">Started</th><th scope="col">Kind</th><th scope="col">Status</th>
        <th scope="col" class="num">Requested</th><th scope="col" class="num">Completed</th><th scope="col">Ended</th><th scope="col">Failures</th></tr></thead>
      <tbody>
        ${rows.map((o) => html`<tr key=${o.id} data-status=${o.status}>
          <td>${fmtTime(o.createdAt)}</td>
          <td>${KIND_TEXT[o.kind] || o.kind}</td>
          <td><span class=${'opstatus ' + o.status}>${OP_STATUS_TEXT[o.status] || o.status}</span></td>
          <td class="num">${o.requested}</td>
          <td class="num">${o.completed}</td>
          <td>${o.completedAt ? fmtTime(o.completedAt) : '—'}</td>
          <td>${o.failures.length ? html`<ul class="failures">${o.failures.map((f, i) => html`<li key=${i}>
            <span class="pair">${failurePair(f)}</span>: ${f.message} <span class="hint">(${f.code})</span></li>`)}</ul>` : '—'}</td>
        </tr>`)}
      </tbody>
    </table>
    ${list.pager}`;
}

const ASSIGNMENTS = `query($id: ID!, $first: Int, $after: Cursor, $last: Int, $before: Cursor, $where: LicenceAssignmentWhereInput) {
  node(id: $id) { ... on ServerToken {
    assignments(first: $first, after: $after, last: $last, before: $before, where: $where, orderBy: {field: ADAM_ID, direction: ASC}) {
      ${PAGE} edges { node { id adamID pricingParam serialNumber clientUserID app { id name } } } } } } }`;

function useDebounced(value) {
  const [v, setV] = useState(value);
  useEffect(() => { const t = setTimeout(() => setV(value.trim()), 250); return () => clearTimeout(t); }, [value]);
  return v;
}

// Assignments lists who holds this token's licences, filterable by serial
// number, user and app.
function Assignments({ token, changed }) {
  const [serial, setSerial] = useState('');
  const [user, setUser] = useState('');
  const [app, setApp] = useState('');
  const s = useDebounced(serial);
  const u = useDebounced(user);
  const a = useDebounced(app);
  const list = usePaged((c) => {
    const where = {};
    if (s) where.serialNumberContainsFold = s;
    if (u) where.clientUserIDContainsFold = u;
    if (a) where.or = [{ adamID: a }, { hasAppWith: [{ nameContainsFold: a }] }];
    return gql(ASSIGNMENTS, { id: token.id, ...c, where }).then((d) => d.node.assignments);
  }, [token.id, s, u, a], 50, 'Assignment pages');
  const seen = useRef(changed);
  useEffect(() => { if (changed !== seen.current) { seen.current = changed; list.reload(); } }, [changed]);
  const from = list.page * 50;
  return html`
    <div class="filters">
      <div class="field"><label for="asg-serial">Serial number</label>
        <input id="asg-serial" type="search" value=${serial} onInput=${(e) => setSerial(e.target.value)} /></div>
      <div class="field"><label for="asg-user">User ID</label>
        <input id="asg-user" type="search" value=${user} onInput=${(e) => setUser(e.target.value)} /></div>
      <div class="field"><label for="asg-app">App</label>
        <input id="asg-app" type="search" value=${app} onInput=${(e) => setApp(e.target.value)} placeholder="Name or adamID" /></div>
    </div>
    ${list.error && html`<p role="alert" class="error">${list.error}</p>`}
    <table class="data assignments">
      <caption>${list.conn ? (list.conn.totalCount ? `Assignments ${from + 1}–${from + list.rows.length} of ${list.conn.totalCount}` : 'No assignment matches.') : 'Loading assignments…'}</caption>
      <thead><tr><th scope="col">App</th><th scope="col">adamID</th><th scope="col">Pricing</th><th scope="col">Serial number</th><th scope="col">User ID</th></tr></thead>
      <tbody>
        ${list.rows.map((r) => html`<tr key=${r.id}>
          <td>${!r.app ? html`<span class="hint">not synced yet</span>` : r.app.name || html`<span class="hint">no name from Apple</span>`}</td>
          <td>${r.adamID}</td><td>${r.pricingParam}</td>
          <td>${r.serialNumber || '—'}</td><td>${r.clientUserID || '—'}</td>
        </tr>`)}
      </tbody>
    </table>
    ${list.pager}`;
}

// LicencesPanel is the token page's Licences tab.
export function LicencesPanel({ token, canWrite, updates, onStarted, changed }) {
  const [started, setStarted] = useState(0);
  const start = (op) => { onStarted(op); setStarted((n) => n + 1); };
  return html`
    <div class="licences">
      ${canWrite && token.state === 'ACTIVE' ? html`
        <div class="licence-forms">
          <${AssignForm} token=${token} onStarted=${start} changed=${changed} />
          <${RevokeForm} token=${token} onStarted=${start} />
        </div>` : null}
      ${canWrite && token.state !== 'ACTIVE' ? html`<p class="note">Licences can be assigned once the token is active.</p>` : null}
      <h2>Operations</h2>
      <${Operations} token=${token} updates=${updates} started=${started} />
      <h2>Assignments</h2>
      <${Assignments} token=${token} changed=${changed} />
    </div>`;
}
