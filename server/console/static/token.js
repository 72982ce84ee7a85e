// A server token's page: its health and expiry, its actions, its licence
// warnings, and two tabs: Apps, and Licences (operations and assignments).
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { STATE_TEXT, STATUS_TEXT, TOKEN_FIELDS, daysLeft, fmtDate, fmtTime, go, gql, subscribe } from './api.js';
import { LicenceWarningList, LicencesPanel, OPERATION_FIELDS, newer } from './licences.js';

const TOKEN = `query($id: ID!) { node(id: $id) { ... on ServerToken { ${TOKEN_FIELDS} } } }`;
const SYNC = `mutation($t: ID!) { syncServerToken(input: {tokenID: $t}) { token { ${TOKEN_FIELDS} } } }`;
const DELETE = `mutation($t: ID!) { deleteServerToken(input: {tokenID: $t}) { deletedID } }`;
const OPERATION_UPDATES = `subscription($c: ID) { licenceOperationUpdates(customerID: $c) { ${OPERATION_FIELDS} } }`;
const TABS = [['apps', 'Apps'], ['licences', 'Licences']];

export function TokenPage({ id, viewer, tab: initialTab, licenceWarnings }) {
  const [token, setToken] = useState(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [tab, setTab] = useState(initialTab === 'licences' ? 'licences' : 'apps');
  const [opened, setOpened] = useState({ [tab]: true }); // a tab stays mounted once shown
  const [updates, setUpdates] = useState({}); // operation ID → its latest view
  const [liveError, setLiveError] = useState('');
  const heading = useRef(null);
  const canWrite = viewer.role !== 'VIEWER';
  const customerID = token ? token.customer.id : '';

  const seenOp = (op) => setUpdates((u) => {
    const next = newer(u[op.id], op);
    return next === u[op.id] ? u : { ...u, [op.id]: next };
  });
  // Counts and assignments change when an operation ends: this grows then.
  const changed = Object.values(updates).filter((o) => o.status !== 'PENDING').length;
  // Operations end while the page is open: listen for them on the socket
  // the expiry warnings use, for this token's customer, and keep this token's.
  useEffect(() => {
    if (!customerID) return undefined;
    return subscribe(OPERATION_UPDATES, { c: customerID }, (d) => {
      setLiveError('');
      const op = d.licenceOperationUpdates;
      if (op.token.id === id) seenOp(op);
    }, (e) => setLiveError(e.message));
  }, [customerID]);

  useEffect(() => {
    gql(TOKEN, { id }).then((d) => {
      if (!d.node) throw new Error('No such server token is visible to this API key.');
      setToken(d.node);
    }).catch((e) => setError(e.message));
  }, [id]);
  useEffect(() => { if (token && heading.current) heading.current.focus(); }, [token && token.id]);
  // A confirmed token's first sync runs in the background, so right after
  // Confirm the apps may be missing or nameless: look again every second
  // until it has ended (synced or failed), which reloads the Apps table.
  const [polls, setPolls] = useState(0);
  const firstSyncPending = token && token.state === 'ACTIVE' && !token.lastSyncedAt && !token.lastErrorAt;
  useEffect(() => {
    if (!firstSyncPending || polls >= 60) return undefined;
    const t = setTimeout(() => {
      gql(TOKEN, { id }).then((d) => { if (d.node) setToken(d.node); }).catch(() => {});
      setPolls((n) => n + 1);
    }, 1000);
    return () => clearTimeout(t);
  }, [firstSyncPending, polls]);

  async function act(fn) {
    setBusy(true);
    setError('');
    try { await fn(); } catch (e) { setError(e.message); }
    setBusy(false);
  }
  const sync = () => act(async () => setToken((await gql(SYNC, { t: id })).syncServerToken.token));
  const remove = () => act(async () => {
    await gql(DELETE, { t: id });
    go('#/customer/' + encodeURIComponent(token.customer.id));
  });

  function choose(name, focus) {
    setTab(name);
    setOpened((o) => ({ ...o, [name]: true }));
    // The tab is kept in the URL without a navigation, so a reload or a
    // shared link opens it again.
    history.replaceState(null, '', '#/tokens/' + encodeURIComponent(id) + (name === 'apps' ? '' : '?tab=' + name));
    if (focus) document.getElementById('tab-' + name).focus();
  }
  // Arrow keys, Home and End move between tabs, as in any tab list.
  function onTabKey(e) {
    const i = TABS.findIndex(([n]) => n === tab);
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    choose(TABS[(to + TABS.length) % TABS.length][0], true);
  }

  if (!token) return error ? html`<p role="alert" class="error">${error}</p>` : html`<p class="loading">Loading…</p>`;
  const t = token;
  const warnings = (licenceWarnings || []).filter((w) => w.token.id === t.id);
  const label = { apps: `Apps (${t.appCount})`, licences: 'Licences' };
  return html`
    <article class="token">
      <p class="crumbs"><a href=${'#/customer/' + encodeURIComponent(t.customer.id)}>${t.customer.name}</a></p>
      <h1 ref=${heading} tabindex="-1">${t.locationName}</h1>
      <p class="expires"><span class="label">Expires</span> <strong>${fmtDate(t.expiresAt)}</strong>
        <span class=${'status ' + t.expiryStatus}>${daysLeft(t.daysUntilExpiry)} · ${STATUS_TEXT[t.expiryStatus]}</span></p>
      <dl class="facts">
        <dt>Organisation</dt><dd>${t.orgName}</dd>
        <dt>State</dt><dd><span class=${'state ' + t.state}>${STATE_TEXT[t.state] || t.state}</span></dd>
        <dt>Country</dt><dd>${t.countryCode || '—'}</dd>
        <dt>Managed by</dt><dd>${t.managedBy ? t.managedBy.name : '—'}</dd>
        <dt>Last sync</dt><dd>${fmtTime(t.lastSyncedAt)}</dd>
        <dt>Last error</dt><dd>${t.lastError ? html`${t.lastError} <span class="hint">(${fmtTime(t.lastErrorAt)})</span>` : 'none'}</dd>
      </dl>
      ${canWrite && html`
        <div class="actions">
          <button type="button" onClick=${sync} disabled=${busy || t.state !== 'ACTIVE'}>Sync now</button>
          <a class="button" href=${'#/upload?customer=' + encodeURIComponent(t.customer.id) + '&renew=' + encodeURIComponent(t.id)}>Renew</a>
          <button type="button" class="danger" onClick=${() => setConfirming(true)} disabled=${busy}>Delete</button>
        </div>
        ${confirming && html`
          <div class="confirm" role="group" aria-labelledby="delete-q">
            <p id="delete-q">Delete the server token for ${t.locationName}? Its ${t.appCount} apps leave Orchard; nothing changes at Apple.</p>
            <button type="button" class="danger" onClick=${remove} disabled=${busy}>Delete token</button>
            <button type="button" onClick=${() => setConfirming(false)}>Keep it</button>
          </div>`}`}
      ${error && html`<p role="alert" class="error">${error}</p>`}
      ${warnings.length ? html`
        <section class="live" aria-labelledby="token-licence-warnings">
          <h2 id="token-licence-warnings">Licence warnings</h2>
          <${LicenceWarningList} warnings=${warnings} empty="" />
        </section>` : null}
      ${liveError && html`<p role="alert" class="error">${liveError}</p>`}
      <div role="tablist" aria-label="Token details" class="tabs" onKeyDown=${onTabKey}>
        ${TABS.map(([name]) => html`<button type="button" role="tab" id=${'tab-' + name} key=${name}
          aria-selected=${tab === name ? 'true' : 'false'} aria-controls=${'panel-' + name} tabindex=${tab === name ? '0' : '-1'}
          onClick=${() => choose(name)}>${label[name]}</button>`)}
      </div>
      <section role="tabpanel" id="panel-apps" aria-labelledby="tab-apps" hidden=${tab !== 'apps'}>
        <${AppsTable} where=${{ hasTokenWith: [{ id: t.id }] }} canEdit=${canWrite} refresh=${changed + '/' + (t.lastSyncedAt || '')} defaultThreshold=${viewer.defaultLowLicenceThreshold} />
      </section>
      ${opened.licences ? html`
        <section role="tabpanel" id="panel-licences" aria-labelledby="tab-licences" hidden=${tab !== 'licences'}>
          <${LicencesPanel} token=${t} canWrite=${canWrite} updates=${updates} onStarted=${seenOp} changed=${changed} />
        </section>` : null}
    </article>`;
}

const APPS = `query($first: Int, $after: Cursor, $last: Int, $before: Cursor, $where: AppWhereInput, $order: AppOrder) {
  apps(first: $first, after: $after, last: $last, before: $before, where: $where, orderBy: $order) {
    totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { node { id adamID pricingParam productType name iconURL supportedPlatforms
      totalCount assignedCount availableCount retiredCount unlimited lowLicenceThreshold } } } }`;
const UPDATE_APP = `mutation($id: ID!, $v: Int) { updateApp(id: $id, input: {lowLicenceThreshold: $v}) { id lowLicenceThreshold } }`;

const PLATFORMS = ['iOS', 'macOS', 'tvOS', 'watchOS', 'visionOS'];
const COLUMNS = [
  ['Name', 'NAME'], ['Type', 'PRODUCT_TYPE'], ['Platforms', null], ['Total', 'TOTAL_COUNT'],
  ['Assigned', 'ASSIGNED_COUNT'], ['Available', 'AVAILABLE_COUNT'], ['Retired', null],
];

// AppsTable lists apps matching where: searchable, filterable by platform
// and type, sortable, paged with Relay cursors. canEdit lets the low-licence
// threshold be changed; a change of refresh reloads the page shown.
export function AppsTable({ where, pageSize = 50, canEdit = false, refresh = 0, defaultThreshold = null }) {
  const [search, setSearch] = useState('');
  const [query, setQuery] = useState('');
  const [platform, setPlatform] = useState('');
  const [type, setType] = useState('');
  const [order, setOrder] = useState({ field: 'NAME', direction: 'ASC' });
  const [size, setSize] = useState(pageSize);
  const [cursor, setCursor] = useState({ first: pageSize });
  const [page, setPage] = useState(0);
  const [data, setData] = useState(null);
  const [error, setError] = useState('');
  const [editing, setEditing] = useState(null); // { id, value } of the threshold being edited
  const [saved, setSaved] = useState(0);
  const base = JSON.stringify(where);

  useEffect(() => {
    const t = setTimeout(() => setQuery(search.trim()), 250);
    return () => clearTimeout(t);
  }, [search]);
  useEffect(() => { setCursor({ first: size }); setPage(0); }, [query, platform, type, order.field, order.direction, size, base]);
  useEffect(() => {
    const w = { ...where };
    if (query) w.or = [{ nameContainsFold: query }, { adamID: query }];
    if (platform) w.platform = platform;
    if (type) w.productType = type;
    let live = true;
    gql(APPS, { ...cursor, where: w, order }).then((d) => { if (live) { setData(d.apps); setError(''); } })
      .catch((e) => live && setError(e.message));
    return () => { live = false; };
  }, [cursor, query, platform, type, order.field, order.direction, base, refresh, saved]);

  async function saveThreshold(e) {
    e.preventDefault();
    setError('');
    const v = editing.value.trim();
    if (v !== '' && !/^\d+$/.test(v)) {
      setError('The threshold is a whole number of licences (0 or more); leave it empty to use the server default.');
      return;
    }
    try {
      await gql(UPDATE_APP, { id: editing.id, v: v === '' ? null : Number(v) });
      setEditing(null);
      setSaved((n) => n + 1);
    } catch (err) { setError(err.message); }
  }
  function threshold(a) {
    const name = a.name || 'adamID ' + a.adamID;
    if (editing && editing.id === a.id) {
      return html`<form class="inline threshold" onSubmit=${saveThreshold}>
        <label class="vh" for=${'threshold-' + a.id}>Low-licence threshold for ${name}</label>
        <input id=${'threshold-' + a.id} type="number" min="0" step="1" inputmode="numeric" placeholder=${defaultThreshold === null || defaultThreshold === undefined ? 'default' : `default (${defaultThreshold})`}
          value=${editing.value} onInput=${(ev) => setEditing({ ...editing, value: ev.target.value })} />
        <button type="submit">Save</button>
        <button type="button" onClick=${() => setEditing(null)}>Cancel</button>
      </form>`;
    }
    const shown = a.unlimited ? 'never' : a.lowLicenceThreshold !== null ? String(a.lowLicenceThreshold)
      : defaultThreshold === null || defaultThreshold === undefined ? 'default' : `${defaultThreshold} (default)`;
    return html`${shown}${canEdit && !a.unlimited ? html` <button type="button" class="link" onClick=${() => setEditing({ id: a.id, value: a.lowLicenceThreshold === null ? '' : String(a.lowLicenceThreshold) })}>Edit<span class="vh"> threshold for ${name}</span></button>` : null}`;
  }

  const sortBy = (field) => setOrder((o) => ({ field, direction: o.field === field && o.direction === 'ASC' ? 'DESC' : 'ASC' }));
  const count = (a, n) => (a.unlimited ? 'unlimited' : String(n));
  const rows = data ? data.edges.map((e) => e.node) : [];
  const from = page * size;
  return html`
    <div class="apps">
      <div class="filters">
        <div class="field"><label for="apps-search">Search apps</label>
          <input id="apps-search" type="search" value=${search} onInput=${(e) => setSearch(e.target.value)} placeholder="Name or adamID" /></div>
        <div class="field"><label for="apps-platform">Platform</label>
          <select id="apps-platform" value=${platform} onChange=${(e) => setPlatform(e.target.value)}>
            <option value="">All platforms</option>
            ${PLATFORMS.map((p) => html`<option value=${p}>${p}</option>`)}
          </select></div>
        <div class="field"><label for="apps-type">Type</label>
          <select id="apps-type" value=${type} onChange=${(e) => setType(e.target.value)}>
            <option value="">Apps and books</option><option value="APP">Apps</option><option value="BOOK">Books</option>
          </select></div>
        <div class="field"><label for="apps-size">Per page</label>
          <select id="apps-size" value=${String(size)} onChange=${(e) => setSize(Number(e.target.value))}>
            ${[25, 50, 100].map((n) => html`<option value=${String(n)}>${n}</option>`)}
          </select></div>
      </div>
      ${error && html`<p role="alert" class="error">${error}</p>`}
      <table class="data">
        <caption>${data ? (data.totalCount ? `Apps ${from + 1}–${from + rows.length} of ${data.totalCount}` : 'No apps match.') : 'Loading apps…'}</caption>
        <thead><tr>
          <th scope="col"><span class="vh">Icon</span></th>
          ${COLUMNS.map(([label, field]) => html`<th scope="col" class=${field && field !== 'NAME' && field !== 'PRODUCT_TYPE' ? 'num' : ''}
            aria-sort=${field && order.field === field ? (order.direction === 'ASC' ? 'ascending' : 'descending') : null}>
            ${field ? html`<button type="button" class="sort" onClick=${() => sortBy(field)}>${label}</button>` : label}</th>`)}
          <th scope="col" class="num">Warn at</th>
        </tr></thead>
        <tbody>
          ${rows.map((a) => html`<tr key=${a.id}>
            <td class="icon">${a.iconURL && /^https:\/\//.test(a.iconURL) ? html`<img src=${a.iconURL} alt="" width="32" height="32" loading="lazy" />` : html`<span class=${'noicon ' + a.productType} aria-hidden="true">${(a.name || '?').charAt(0)}</span>`}</td>
            <td>${a.name || html`<span class="hint">adamID ${a.adamID}</span>`}${a.pricingParam === 'PLUS' ? html` <span class="tag">PLUS</span>` : null}</td>
            <td>${a.productType === 'BOOK' ? 'Book' : 'App'}</td>
            <td>${a.supportedPlatforms.join(', ') || '—'}</td>
            <td class="num">${count(a, a.totalCount)}</td>
            <td class="num">${a.assignedCount}</td>
            <td class="num">${count(a, a.availableCount)}</td>
            <td class="num">${a.retiredCount}</td>
            <td class="num threshold">${threshold(a)}</td>
          </tr>`)}
        </tbody>
      </table>
      ${data && (data.pageInfo.hasPreviousPage || data.pageInfo.hasNextPage || page > 0) && html`
        <nav class="pager" aria-label="Apps pages">
          <button type="button" disabled=${page === 0} onClick=${() => { setCursor({ last: size, before: data.pageInfo.startCursor }); setPage(page - 1); }}>Previous page</button>
          <button type="button" disabled=${!data.pageInfo.hasNextPage} onClick=${() => { setCursor({ first: size, after: data.pageInfo.endCursor }); setPage(page + 1); }}>Next page</button>
        </nav>`}
    </div>`;
}
