// The console's only way to the server: GraphQL over HTTP (and a websocket
// for live warnings), with the API key from this tab's sessionStorage.
const KEY = 'orchard.apikey'; // shared with the Playground, so it opens signed in

export const session = {
  get key() { return sessionStorage.getItem(KEY) || ''; },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

// go navigates within the console.
export function go(hash) { location.hash = hash; }

export const maxUploadBytes = Number(document.querySelector('meta[name="orchard-max-upload-bytes"]')?.content) || 65536;

// GraphQLError carries the server's own message, shown as it was written.
export class GraphQLError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code || '';
  }
}

async function post(body, contentType, opts = {}) {
  const headers = { Authorization: 'Bearer ' + session.key, Accept: 'application/json' };
  if (contentType) headers['Content-Type'] = contentType;
  let res;
  try {
    res = await fetch('/graphql', { method: 'POST', headers, body, keepalive: !!opts.keepalive });
  } catch (e) {
    throw new GraphQLError('Orchard could not be reached. Check the connection and try again.', 'NETWORK');
  }
  let out;
  try {
    out = await res.json();
  } catch (e) {
    throw new GraphQLError(`Orchard answered HTTP ${res.status} without a GraphQL response.`, 'HTTP_' + res.status);
  }
  if (out.errors && out.errors.length) {
    const e = out.errors[0];
    throw new GraphQLError(e.message, e.extensions && e.extensions.code);
  }
  return out.data;
}

// gql runs a query or mutation and returns its data, or throws GraphQLError.
export function gql(query, variables, opts) {
  return post(JSON.stringify({ query, variables: variables || {} }), 'application/json', opts);
}

// upload sends one file per the GraphQL multipart request spec; the file's
// variable is named f.
export function upload(query, variables, file) {
  const form = new FormData();
  form.append('operations', JSON.stringify({ query, variables: { ...variables, f: null } }));
  form.append('map', JSON.stringify({ 0: ['variables.f'] }));
  form.append('0', file, file.name);
  return post(form, null);
}

// One graphql-ws client (the one the Playground vendors) carries every live
// subscription over one websocket; it is lazy, so the socket opens with the
// first subscription and closes after the last. A new key gets a new client.
let ws = null;

function wsClient() {
  if (ws && ws.key === session.key) return ws.client;
  if (ws) ws.client.dispose();
  const url = location.origin.replace(/^http/, 'ws') + '/graphql';
  const key = session.key;
  ws = {
    key,
    client: window.graphqlWs.createClient({
      url,
      connectionParams: { Authorization: 'Bearer ' + key },
      retryAttempts: Infinity,
      shouldRetry: () => true,
    }),
  };
  return ws.client;
}

// subscribe starts a subscription on the shared client and returns a
// function that ends it.
export function subscribe(query, variables, onData, onError) {
  if (!window.graphqlWs) {
    onError(new Error('Live updates are unavailable: the websocket client did not load.'));
    return () => {};
  }
  return wsClient().subscribe({ query, variables }, {
    next: (v) => {
      if (v.errors && v.errors.length) onError(new GraphQLError(v.errors[0].message));
      else onData(v.data);
    },
    error: (e) => onError(new Error((e && (e.reason || e.message)) || 'The live connection closed.')),
    complete: () => {},
  });
}

export const TOKEN_FIELDS = `id state orgName locationName locationUID countryCode expiresAt daysUntilExpiry expiryStatus
  lastSyncedAt lastError lastErrorAt appCount managedBy { id name metadata } customer { id name }`;

const CANCEL = `mutation($t: ID!) { cancelServerToken(input: {tokenID: $t}) { token { id state } } }`;

// cancelPending discards an upload the wizard leaves behind. keepalive lets
// the request outlive the page when the tab is closed (sendBeacon cannot
// carry the Authorization header).
export function cancelPending(tokenID, keepalive) {
  return gql(CANCEL, { t: tokenID }, { keepalive });
}

// Formatting: dates in the browser's locale, every value as text. The
// formatters are built once: building one per cell costs more than the rest
// of a table's render.
const dateFormat = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'long', day: 'numeric' });
const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export function fmtDate(iso) {
  return iso ? dateFormat.format(new Date(iso)) : '—';
}

export function fmtTime(iso) {
  return iso ? timeFormat.format(new Date(iso)) : 'never';
}

export function daysLeft(n) {
  if (n < 0) return `expired ${-n} day${n === -1 ? '' : 's'} ago`;
  if (n === 0) return 'expires today';
  return `${n} day${n === 1 ? '' : 's'} left`;
}

export const STATUS_TEXT = { VALID: 'Valid', EXPIRING_SOON: 'Expiring soon', EXPIRED: 'Expired' };
export const STATE_TEXT = { PENDING: 'Pending', CONFLICT: 'Managed elsewhere', ACTIVE: 'Active', REVOKED: 'Revoked', INVALID: 'Invalid' };
