// The "Add a server token" wizard: select customer, download from Apple
// Business Manager, upload, review, confirm. An upload left unconfirmed is
// cancelled when the wizard is left, so the console never strands a pending
// token.
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';
import { TOKEN_FIELDS, cancelPending, daysLeft, fmtDate, go, gql, maxUploadBytes, upload, STATUS_TEXT } from './api.js';

const STEPS = ['Select customer', 'Download from Apple Business Manager', 'Upload server token', 'Review'];
const ABM_PATH = 'Settings > Preferences > Payments and Billing > Apps and Books > Download';

const CUSTOMERS = `query($where: CustomerWhereInput) {
  customers(first: 100, where: $where, orderBy: {field: NAME, direction: ASC}) { totalCount edges { node { id name } } } }`;
const UPLOAD = `mutation($c: ID!, $f: Upload!) { uploadServerToken(input: {customerID: $c, file: $f}) {
  token { ${TOKEN_FIELDS} } conflict { id name metadata } renews { id locationName expiresAt } } }`;
const ACTION = (name) => `mutation($t: ID!) { ${name}(input: {tokenID: $t}) { token { id } } }`;

// checkFile catches the two common mistakes before anything is sent; the
// server checks again and has the last word.
async function checkFile(file) {
  if (!file) return 'Choose the .vpptoken file first, or drop it on the box.';
  if (file.size > maxUploadBytes) {
    return `This file is ${file.size} bytes; a server token is at most ${maxUploadBytes} bytes. Choose the .vpptoken file downloaded from Apple Business Manager.`;
  }
  const head = (await file.slice(0, 512).text()).toLowerCase();
  if (/\.p7m$/i.test(file.name) || head.startsWith('content-type:') || head.startsWith('mime-version:') || head.includes('pkcs7-mime')) {
    return 'This is an Automated Device Enrollment token (a *_smime.p7m file), not an Apps and Books token. ' +
      `Download the Apps and Books token from Apple Business Manager: ${ABM_PATH}.`;
  }
  return '';
}

export function Wizard({ customerID, renew }) {
  const [step, setStep] = useState(0);
  const [customers, setCustomers] = useState(null);
  const [customer, setCustomer] = useState(customerID);
  const [file, setFile] = useState(null);
  const [dragging, setDragging] = useState(false);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const [review, setReview] = useState(null);
  const pending = useRef('');
  const heading = useRef(null);
  const inputRef = useRef(null);

  // Each step puts the focus on its heading once. Not again when the
  // customers arrive: a keyboard user may already have moved on, and would
  // be sent back to the heading.
  const focusedStep = useRef(null);
  useEffect(() => {
    if (heading.current && focusedStep.current !== step) {
      focusedStep.current = step;
      heading.current.focus();
    }
  }, [step, customers === null]);
  useEffect(() => {
    gql(CUSTOMERS).then((d) => {
      const list = d.customers.edges.map((e) => e.node);
      setCustomers(list);
      if (!list.some((c) => c.id === customerID) && list.length) setCustomer(list[0].id);
    }).catch((e) => setError(e.message));
  }, []);
  // Leaving the wizard (another page, or closing the tab) cancels the upload.
  useEffect(() => {
    const leave = () => {
      if (pending.current) {
        cancelPending(pending.current, true).catch(() => {});
        pending.current = '';
      }
    };
    window.addEventListener('pagehide', leave);
    return () => { window.removeEventListener('pagehide', leave); leave(); };
  }, []);

  const chosen = customers && customers.find((c) => c.id === customer);
  const move = (n) => { setError(''); setStep(n); };

  async function sendFile() {
    setError('');
    const problem = await checkFile(file);
    if (problem) { setError(problem); return; }
    setBusy(true);
    try {
      const d = await upload(UPLOAD, { c: customer }, file);
      pending.current = d.uploadServerToken.token.id;
      setReview(d.uploadServerToken);
      move(3);
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  }

  async function finish(mutation) {
    setBusy(true);
    setError('');
    try {
      const d = await gql(ACTION(mutation), { t: pending.current });
      pending.current = '';
      go('#/tokens/' + encodeURIComponent(d[mutation].token.id));
    } catch (e) {
      setError(e.message);
      setBusy(false);
    }
  }

  async function cancel() {
    setBusy(true);
    try {
      if (pending.current) await cancelPending(pending.current, false);
      pending.current = '';
      go(customerID ? '#/customer/' + encodeURIComponent(customerID) : '#/customers');
    } catch (e) {
      setError(e.message);
      setBusy(false);
    }
  }

  function pick(f) {
    setError('');
    setFile(f || null);
  }
  function onDrop(e) {
    e.preventDefault();
    setDragging(false);
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) pick(f);
  }
  function onDragOver(e) {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy';
    setDragging(true);
  }

  let body;
  if (step === 0) {
    body = html`
      <h2 ref=${heading} tabindex="-1">Select customer</h2>
      ${customers === null ? html`<p>Loading customers…</p>` : customers.length === 0 ? html`
        <p>There are no customers yet. <a href="#/customers">Create a customer</a> first.</p>` : html`
        <p>Which customer is this server token for?${renew ? ' The wizard renews a token when the new file is for the same location.' : ''}</p>
        <div class="field">
          <label for="wizard-customer">Customer</label>
          <select id="wizard-customer" value=${customer} onChange=${(e) => setCustomer(e.target.value)}>
            ${customers.map((c) => html`<option value=${c.id} selected=${c.id === customer}>${c.name}</option>`)}
          </select>
        </div>
        <div class="actions">
          <button type="button" class="primary" onClick=${() => move(1)} disabled=${!chosen}>Next</button>
          <button type="button" onClick=${cancel}>Cancel</button>
        </div>`}`;
  } else if (step === 1) {
    body = html`
      <h2 ref=${heading} tabindex="-1">Download from Apple Business Manager</h2>
      <p>Sign in to Apple Business Manager as an administrator or content manager of <strong>${chosen && chosen.name}</strong>'s organisation, then:</p>
      <ol class="path">
        ${ABM_PATH.split(' > ').map((s) => html`<li>${s}</li>`)}
      </ol>
      <p>Choose the location whose apps Orchard should manage and download its server token (a <code>.vpptoken</code> file). Apple School Manager has the same path.</p>
      <p><a href="https://business.apple.com/" target="_blank" rel="noopener noreferrer">Open Apple Business Manager</a> <span class="hint">(opens a new tab)</span></p>
      <div class="actions">
        <button type="button" class="primary" onClick=${() => move(2)}>Next</button>
        <button type="button" onClick=${() => move(0)}>Back</button>
      </div>`;
  } else if (step === 2) {
    body = html`
      <h2 ref=${heading} tabindex="-1">Upload server token</h2>
      <div class=${'dropzone' + (dragging ? ' dragging' : '')} onDragOver=${onDragOver} onDragEnter=${onDragOver}
        onDragLeave=${() => setDragging(false)} onDrop=${onDrop}>
        <label for="wizard-file">Server token file</label>
        <input id="wizard-file" ref=${inputRef} type="file" onChange=${(e) => pick(e.target.files[0])} />
        <p class="hint">Browse for the <code>.vpptoken</code> file, or drop it here. At most ${maxUploadBytes} bytes.</p>
        ${file && html`<p class="chosen">Selected: <strong>${file.name}</strong> (${file.size} bytes)</p>`}
      </div>
      <div class="actions">
        <button type="button" class="primary" onClick=${sendFile} disabled=${busy}>${busy ? 'Uploading…' : 'Next'}</button>
        <button type="button" onClick=${() => move(1)} disabled=${busy}>Back</button>
      </div>`;
  } else {
    const t = review.token;
    const conflict = t.state === 'CONFLICT' ? (review.conflict || t.managedBy) : null;
    body = html`
      <h2 ref=${heading} tabindex="-1">Review</h2>
      <dl class="facts">
        <dt>Customer</dt><dd>${t.customer.name}</dd>
        <dt>Organisation</dt><dd>${t.orgName}</dd>
        <dt>Location</dt><dd>${t.locationName}</dd>
        <dt>Country</dt><dd>${t.countryCode || '—'}</dd>
        <dt>Expiry date</dt><dd>${fmtDate(t.expiresAt)} <span class=${'status ' + t.expiryStatus}>${daysLeft(t.daysUntilExpiry)} · ${STATUS_TEXT[t.expiryStatus]}</span></dd>
      </dl>
      ${review.renews && html`<p class="note">This renews the token for <strong>${review.renews.locationName}</strong> expiring ${fmtDate(review.renews.expiresAt)}: same apps, new expiry date.</p>`}
      ${conflict ? html`
        <div class="conflict">
          <p>Another MDM manages this location: <strong>${conflict.name}</strong>${conflict.metadata ? html` (<span>${conflict.metadata}</span>)` : null}.</p>
          <p>Claim takes the location from ${conflict.name}; it will no longer manage these licences. Cancel leaves everything as it is.</p>
        </div>
        <div class="actions">
          <button type="button" class="primary" onClick=${() => finish('claimServerToken')} disabled=${busy}>Claim</button>
          <button type="button" onClick=${cancel} disabled=${busy}>Cancel</button>
        </div>` : html`
        <div class="actions">
          <button type="button" class="primary" onClick=${() => finish('confirmServerToken')} disabled=${busy}>Confirm</button>
          <button type="button" onClick=${cancel} disabled=${busy}>Cancel</button>
        </div>`}`;
  }

  return html`
    <section class="wizard" aria-labelledby="wizard-title">
      <h1 id="wizard-title">Add a server token</h1>
      <ol class="steps">
        ${STEPS.map((s, i) => html`<li aria-current=${i === step ? 'step' : null} class=${i < step ? 'done' : ''}>${s}</li>`)}
      </ol>
      <div class="panel">
        ${body}
        ${error && html`<p role="alert" class="error">${error}</p>`}
      </div>
    </section>`;
}

