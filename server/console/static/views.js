// The console's lists: customers, one customer, the expiry overview and the
// audit log.
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { STATE_TEXT, STATUS_TEXT, daysLeft, fmtDate, fmtTime, gql } from './api.js';
import { AppsTable } from './token.js';
import { PAGE, usePaged } from './paged.js';
import { LicenceWarningList } from './licences.js';

const CUSTOMERS = `query($first: Int, $after: Cursor, $last: Int, $before: Cursor, $where: CustomerWhereInput) {
  customers(first: $first, after: $after, last: $last, before: $before, where: $where, orderBy: {field: NAME, direction: ASC}) {
    ${PAGE} edges { node { id name
      tokens(first: 1, where: {state: ACTIVE}, orderBy: {field: EXPIRES_AT, direction: ASC}) {
        totalCount edges { node { id expiresAt daysUntilExpiry expiryStatus } } } } } } }`;

function Expiry({ t }) {
  if (!t) return html`<span class="hint">no active token</span>`;
  return html`${fmtDate(t.expiresAt)} <span class=${'status ' + t.expiryStatus}>${daysLeft(t.daysUntilExpiry)}</span>`;
}

export function Customers({ viewer }) {
  const [search, setSearch] = useState('');
  const [query, setQuery] = useState('');
  const [name, setName] = useState('');
  const [renaming, setRenaming] = useState(null);
  const [error, setError] = useState('');
  const isAdmin = viewer.role === 'ADMIN';
  const canWrite = viewer.role !== 'VIEWER';
  useEffect(() => { const t = setTimeout(() => setQuery(search.trim()), 250); return () => clearTimeout(t); }, [search]);
  const list = usePaged((c) => gql(CUSTOMERS, { ...c, where: query ? { nameContainsFold: query } : null }).then((d) => d.customers), [query]);

  async function create(e) {
    e.preventDefault();
    setError('');
    try {
      await gql('mutation($n: String!) { createCustomer(input: {name: $n}) { id } }', { n: name.trim() });
      setName('');
      list.reload();
    } catch (err) { setError(err.message); }
  }
  async function rename(e) {
    e.preventDefault();
    setError('');
    try {
      await gql('mutation($id: ID!, $n: String!) { updateCustomer(id: $id, input: {name: $n}) { id name } }', { id: renaming.id, n: renaming.name.trim() });
      setRenaming(null);
      list.reload();
    } catch (err) { setError(err.message); }
  }

  return html`
    <h1>Customers</h1>
    <div class="filters">
      <div class="field"><label for="customer-search">Search customers</label>
        <input id="customer-search" type="search" value=${search} onInput=${(e) => setSearch(e.target.value)} /></div>
      ${isAdmin && html`
        <form class="inline" onSubmit=${create}>
          <div class="field"><label for="new-customer">New customer name</label>
            <input id="new-customer" type="text" required value=${name} onInput=${(e) => setName(e.target.value)} /></div>
          <button type="submit">Create customer</button>
        </form>`}
    </div>
    ${(error || list.error) && html`<p role="alert" class="error">${error || list.error}</p>`}
    <table class="data">
      <caption>${list.conn ? `${list.conn.totalCount} customer${list.conn.totalCount === 1 ? '' : 's'}` : 'Loading customers…'}</caption>
      <thead><tr><th scope="col">Name</th><th scope="col" class="num">Active tokens</th><th scope="col">Nearest expiry</th>${canWrite && html`<th scope="col">Actions</th>`}</tr></thead>
      <tbody>
        ${list.rows.map((c) => html`<tr key=${c.id}>
          <td>${renaming && renaming.id === c.id ? html`
            <form class="inline" onSubmit=${rename}>
              <label class="vh" for=${'rename-' + c.id}>New name for ${c.name}</label>
              <input id=${'rename-' + c.id} type="text" required value=${renaming.name} onInput=${(e) => setRenaming({ ...renaming, name: e.target.value })} />
              <button type="submit">Save</button>
              <button type="button" onClick=${() => setRenaming(null)}>Cancel</button>
            </form>` : html`<a href=${'#/customer/' + encodeURIComponent(c.id)}>${c.name}</a>`}</td>
          <td class="num">${c.tokens.totalCount}</td>
          <td><${Expiry} t=${c.tokens.edges[0] && c.tokens.edges[0].node} /></td>
          ${canWrite && html`<td class="row-actions">
            <a href=${'#/upload?customer=' + encodeURIComponent(c.id)}>Add token<span class="vh"> for ${c.name}</span></a>
            ${isAdmin && html`<button type="button" class="link" onClick=${() => setRenaming({ id: c.id, name: c.name })}>Rename<span class="vh"> ${c.name}</span></button>`}
          </td>`}
        </tr>`)}
      </tbody>
    </table>
    ${list.pager}`;
}

const CUSTOMER = `query($id: ID!) { node(id: $id) { ... on Customer { id name
  tokens(first: 100, orderBy: {field: EXPIRES_AT, direction: ASC}) { totalCount edges { node {
    id state locationName orgName expiresAt daysUntilExpiry expiryStatus appCount lastSyncedAt lastError } } } } } }`;

function TokenRows({ tokens, showCustomer }) {
  return html`
    <table class="data">
      <thead><tr>
        <th scope="col">Location</th>${showCustomer && html`<th scope="col">Customer</th>`}<th scope="col">State</th>
        <th scope="col">Expires</th><th scope="col">Days left</th><th scope="col">Status</th><th scope="col" class="num">Apps</th><th scope="col">Last sync</th>
      </tr></thead>
      <tbody>
        ${tokens.map((t) => html`<tr key=${t.id}>
          <td><a href=${'#/tokens/' + encodeURIComponent(t.id)}>${t.locationName}</a>${t.lastError ? html` <span class="tag error-tag" title=${t.lastError}>error</span>` : null}</td>
          ${showCustomer && html`<td><a href=${'#/customer/' + encodeURIComponent(t.customer.id)}>${t.customer.name}</a></td>`}
          <td>${STATE_TEXT[t.state] || t.state}</td>
          <td>${fmtDate(t.expiresAt)}</td>
          <td class="num">${t.daysUntilExpiry}</td>
          <td><span class=${'status ' + t.expiryStatus}>${STATUS_TEXT[t.expiryStatus]}</span></td>
          <td class="num">${t.appCount}</td>
          <td>${fmtTime(t.lastSyncedAt)}</td>
        </tr>`)}
      </tbody>
    </table>`;
}

export function CustomerPage({ id, viewer }) {
  const [c, setC] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    gql(CUSTOMER, { id }).then((d) => {
      if (!d.node) throw new Error('No such customer is visible to this API key.');
      setC(d.node);
    }).catch((e) => setError(e.message));
  }, [id]);
  if (!c) return error ? html`<p role="alert" class="error">${error}</p>` : html`<p class="loading">Loading…</p>`;
  const tokens = c.tokens.edges.map((e) => e.node);
  return html`
    <p class="crumbs"><a href="#/customers">Customers</a></p>
    <h1>${c.name}</h1>
    ${viewer.role !== 'VIEWER' && html`<p><a class="button" href=${'#/upload?customer=' + encodeURIComponent(c.id)}>Add a server token for ${c.name}</a></p>`}
    <h2>Server tokens</h2>
    ${tokens.length ? html`<${TokenRows} tokens=${tokens} />` : html`<p>No server tokens yet.</p>`}
    <h2>Apps</h2>
    <${AppsTable} where=${{ hasTokenWith: [{ hasCustomerWith: [{ id: c.id }], state: 'ACTIVE' }] }} defaultThreshold=${viewer.defaultLowLicenceThreshold} />
    <p><a href=${'#/audit?customer=' + encodeURIComponent(c.id)}>Audit log for ${c.name}</a></p>`;
}

const TOKENS = `query($first: Int, $after: Cursor, $last: Int, $before: Cursor, $where: ServerTokenWhereInput) {
  tokens(first: $first, after: $after, last: $last, before: $before, where: $where, orderBy: {field: EXPIRES_AT, direction: ASC}) {
    ${PAGE} edges { node { id state locationName orgName expiresAt daysUntilExpiry expiryStatus appCount lastSyncedAt lastError customer { id name } } } } }`;

const LEVEL_TEXT = { NOTICE: 'Notice', WARNING: 'Warning', CRITICAL: 'Critical', EXPIRED: 'Expired' };

export function Overview({ warnings, licenceWarnings, liveError }) {
  const [status, setStatus] = useState('');
  const list = usePaged((c) => gql(TOKENS, { ...c, where: { state: 'ACTIVE', ...(status ? { expiryStatus: status } : {}) } }).then((d) => d.tokens), [status]);
  const seen = useRef(warnings.length);
  // A warning means a token changed: show the list as it is now.
  useEffect(() => { if (warnings.length !== seen.current) { seen.current = warnings.length; list.reload(); } }, [warnings.length]);
  return html`
    <h1>Expiry overview</h1>
    <section class="live" aria-labelledby="live-title">
      <h2 id="live-title">Live warnings</h2>
      ${liveError && html`<p role="alert" class="error">${liveError}</p>`}
      <ul aria-live="polite" class="warnings">
        ${warnings.length === 0 ? html`<li class="hint">No token is within its warning period. New warnings appear here as they happen.</li>` : null}
        ${warnings.map((w) => html`<li key=${w.token.id + w.level} class=${'warning ' + w.level}>
          <span class="level">${LEVEL_TEXT[w.level] || w.level}</span>
          <a href=${'#/tokens/' + encodeURIComponent(w.token.id)}>${w.token.locationName}</a>
          (${w.token.customer.name}): ${daysLeft(w.daysUntilExpiry)}, expires ${fmtDate(w.token.expiresAt)}
          <span class="hint">· ${fmtTime(w.issuedAt)}</span></li>`)}
      </ul>
      <h2 id="licence-live-title">Licence warnings</h2>
      <${LicenceWarningList} warnings=${licenceWarnings} showToken=${true}
        empty="No app is at or below its low-licence threshold. New warnings appear here as they happen." />
    </section>
    <h2>Active server tokens, soonest expiry first</h2>
    <div class="filters">
      <div class="field"><label for="overview-status">Status</label>
        <select id="overview-status" value=${status} onChange=${(e) => setStatus(e.target.value)}>
          <option value="">All</option>
          ${Object.entries(STATUS_TEXT).map(([v, l]) => html`<option value=${v}>${l}</option>`)}
        </select></div>
    </div>
    ${list.error && html`<p role="alert" class="error">${list.error}</p>`}
    ${list.conn && html`<p class="hint">${list.conn.totalCount} token${list.conn.totalCount === 1 ? '' : 's'}</p>`}
    <${TokenRows} tokens=${list.rows} showCustomer=${true} />
    ${list.pager}`;
}

const AUDIT = `query($first: Int, $after: Cursor, $last: Int, $before: Cursor, $where: AuditEventWhereInput) {
  auditEvents(first: $first, after: $after, last: $last, before: $before, where: $where, orderBy: {field: CREATED_AT, direction: DESC}) {
    ${PAGE} edges { node { id createdAt actor action outcome detail customerID } } } }`;

export function Audit() {
  const initial = new URLSearchParams(location.hash.split('?')[1] || '').get('customer') || '';
  const [customer, setCustomer] = useState(initial);
  const [customers, setCustomers] = useState([]);
  useEffect(() => {
    gql('{ customers(first: 100, orderBy: {field: NAME, direction: ASC}) { edges { node { id name } } } }')
      .then((d) => setCustomers(d.customers.edges.map((e) => e.node))).catch(() => {});
  }, []);
  const list = usePaged((c) => gql(AUDIT, { ...c, where: customer ? { customerID: customer } : null }).then((d) => d.auditEvents), [customer]);
  const names = Object.fromEntries(customers.map((c) => [c.id, c.name]));
  return html`
    <h1>Audit log</h1>
    <div class="filters">
      <div class="field"><label for="audit-customer">Customer</label>
        <select id="audit-customer" value=${customer} onChange=${(e) => setCustomer(e.target.value)}>
          <option value="">All customers</option>
          ${customers.map((c) => html`<option value=${c.id} selected=${c.id === customer}>${c.name}</option>`)}
        </select></div>
    </div>
    ${list.error && html`<p role="alert" class="error">${list.error}</p>`}
    <table class="data">
      <caption>${list.conn ? `${list.conn.totalCount} events, newest first` : 'Loading…'}</caption>
      <thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Customer</th><th scope="col">Outcome</th><th scope="col">Detail</th></tr></thead>
      <tbody>
        ${list.rows.map((e) => html`<tr key=${e.id}>
          <td>${fmtTime(e.createdAt)}</td><td>${e.actor}</td><td>${e.action}</td>
          <td>${e.customerID ? names[e.customerID] || '—' : '—'}</td><td>${e.outcome}</td><td class="detail">${e.detail}</td>
        </tr>`)}
      </tbody>
    </table>
    ${list.pager}`;
}
