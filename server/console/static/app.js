// Orchard's console: sign-in, navigation and the live expiry warnings.
// Routes live in the URL fragment (#/…); the API key never does.
import { render } from 'preact';
import { useEffect, useState, useCallback } from 'preact/hooks';
import { html } from './html.js';
import { go, gql, session, subscribe } from './api.js';
import { Wizard } from './wizard.js';
import { TokenPage } from './token.js';
import { Customers, CustomerPage, Overview, Audit } from './views.js';

function parseRoute() {
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const parts = (path || '/').split('/').filter(Boolean);
  return { hash: location.hash, name: parts[0] || 'customers', id: parts[1] ? decodeURIComponent(parts[1]) : '', params: new URLSearchParams(query || '') };
}

function SignIn({ onSignedIn }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError('');
    session.set(key.trim());
    try {
      const data = await gql('{ viewer { name role allCustomers defaultLowLicenceThreshold } }');
      onSignedIn(data.viewer);
    } catch (err) {
      session.clear();
      setError(err.message);
    } finally {
      setBusy(false);
    }
  }
  return html`
    <main class="signin">
      <h1>Orchard</h1>
      <p>Sign in with an API key. It is kept for this browser tab only.</p>
      <form onSubmit=${submit}>
        <label for="apikey">API key</label>
        <input id="apikey" class="secret" type="text" autocomplete="off" spellcheck="false" required
          value=${key} onInput=${(e) => setKey(e.target.value)} placeholder="orch_…" />
        <button type="submit" disabled=${busy}>Sign in</button>
      </form>
      ${error && html`<p role="alert" class="error">${error}</p>`}
      <p class="hint">No key yet? Run <code>orchard apikey create --name you</code> on the server.</p>
    </main>`;
}

const WARNINGS = `subscription { tokenExpiryWarnings { daysUntilExpiry level issuedAt
  token { id locationName orgName expiresAt customer { id name } } } }`;

const LICENCE_WARNINGS = `subscription { licenceWarnings { level availableCount threshold issuedAt
  app { id adamID name } token { id locationName customer { id name } } } }`;

function Shell({ viewer, onSignOut }) {
  const [route, setRoute] = useState(parseRoute());
  const [warnings, setWarnings] = useState([]);
  const [licenceWarnings, setLicenceWarnings] = useState([]);
  const [liveError, setLiveError] = useState('');
  useEffect(() => {
    const onHash = () => setRoute(parseRoute());
    window.addEventListener('hashchange', onHash);
    // Effects run after the first paint: a hash changed in between (a link
    // followed, a bookmark opened right after signing in) fired no event we heard.
    if (location.hash !== route.hash) onHash();
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  useEffect(() => subscribe(WARNINGS, {}, (data) => {
    setLiveError('');
    const w = data.tokenExpiryWarnings;
    setWarnings((prev) => [w, ...prev.filter((p) => !(p.token.id === w.token.id && p.level === w.level))].slice(0, 200));
  }, (err) => setLiveError(err.message)), []);
  // One entry per app: its latest crossing (LOW, then EXHAUSTED) replaces the last.
  useEffect(() => subscribe(LICENCE_WARNINGS, {}, (data) => {
    setLiveError('');
    const w = data.licenceWarnings;
    setLicenceWarnings((prev) => [w, ...prev.filter((p) => p.app.id !== w.app.id)].slice(0, 200));
  }, (err) => setLiveError(err.message)), []);

  const canWrite = viewer.role !== 'VIEWER';
  const nav = [
    ['customers', 'Customers'], ['overview', 'Expiry overview'], ['audit', 'Audit log'],
  ];
  let page;
  switch (route.name) {
    case 'upload':
      page = canWrite
        ? html`<${Wizard} key=${location.hash} customerID=${route.params.get('customer') || ''} renew=${route.params.get('renew') || ''} />`
        : html`<p role="alert">This API key may only read.</p>`;
      break;
    case 'tokens': page = html`<${TokenPage} key=${route.id} id=${route.id} viewer=${viewer} tab=${route.params.get('tab') || ''} licenceWarnings=${licenceWarnings} />`; break;
    case 'customer': page = html`<${CustomerPage} key=${route.id} id=${route.id} viewer=${viewer} />`; break;
    case 'overview': page = html`<${Overview} viewer=${viewer} warnings=${warnings} licenceWarnings=${licenceWarnings} liveError=${liveError} />`; break;
    case 'audit': page = html`<${Audit} />`; break;
    default: page = html`<${Customers} viewer=${viewer} />`;
  }
  const current = route.name === 'customer' ? 'customers' : route.name;
  return html`
    <header class="top">
      <a class="brand" href="#/customers">Orchard</a>
      <nav aria-label="Main">
        <ul>
          ${nav.map(([name, label]) => html`<li><a href=${'#/' + name} aria-current=${current === name ? 'page' : null}>${label}${name === 'overview' && warnings.length + licenceWarnings.length ? html` <span class="badge" aria-label=${warnings.length + licenceWarnings.length + ' live warnings'}>${warnings.length + licenceWarnings.length}</span>` : null}</a></li>`)}
          <li><a href="/playground" target="_blank" rel="noopener">Playground</a></li>
        </ul>
      </nav>
      ${canWrite && html`<a class="button primary" href="#/upload">Upload server token</a>`}
      <span class="who">${viewer.name} · ${viewer.role.toLowerCase()}${viewer.allCustomers ? '' : ' · some customers'}</span>
      <button type="button" class="link" onClick=${onSignOut}>Sign out</button>
    </header>
    <main id="main">${page}</main>`;
}

function App() {
  const [viewer, setViewer] = useState(null);
  const [checking, setChecking] = useState(!!session.key);
  useEffect(() => {
    if (!session.key) return;
    gql('{ viewer { name role allCustomers defaultLowLicenceThreshold } }')
      .then((d) => setViewer(d.viewer))
      .catch(() => session.clear())
      .finally(() => setChecking(false));
  }, []);
  const signOut = useCallback(() => { session.clear(); setViewer(null); go('#/'); }, []);
  if (checking) return html`<p class="loading">Signing in…</p>`;
  if (!viewer) return html`<${SignIn} onSignedIn=${setViewer} />`;
  return html`<${Shell} viewer=${viewer} onSignOut=${signOut} />`;
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
