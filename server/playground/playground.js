// Orchard's Playground: GraphiQL with an API-key field. The key is kept in
// this browser's sessionStorage only and sent as "Authorization: Bearer KEY"
// on HTTP requests and in the websocket connection_init payload.
(function () {
  var input = document.getElementById('apikey');
  var state = document.getElementById('keystate');
  var stored = sessionStorage.getItem('orchard.apikey') || '';
  // A key may also come in the URL fragment (#key=…), which browsers never send to a server.
  var m = /(?:^|[#&])key=([^&]+)/.exec(location.hash);
  if (m) {
    stored = decodeURIComponent(m[1]);
    history.replaceState(null, '', location.pathname + location.search);
  }
  input.value = stored;
  function key() { return input.value.trim(); }
  function show() { state.textContent = key() ? 'set' : 'missing: requests will be refused'; }
  input.addEventListener('input', function () { sessionStorage.setItem('orchard.apikey', key()); show(); });
  show();

  var endpoint = location.origin + '/graphql';
  var wsEndpoint = endpoint.replace(/^http/, 'ws');

  function authHeaders(extra) {
    var h = Object.assign({ 'Content-Type': 'application/json', 'Accept': 'application/json' }, extra || {});
    if (key() && !h.Authorization) { h.Authorization = 'Bearer ' + key(); }
    return h;
  }

  function isSubscription(params) {
    var doc = params.query || '';
    if (params.operationName) {
      return new RegExp('subscription\\s+' + params.operationName + '\\b').test(doc);
    }
    return /^\s*subscription\b/.test(doc.replace(/#[^\n]*/g, ''));
  }

  function subscribe(params) {
    var client = graphqlWs.createClient({
      url: wsEndpoint,
      connectionParams: { Authorization: 'Bearer ' + key() },
      lazy: true,
    });
    var queue = [], waiting = null, done = false;
    function push(item) { if (waiting) { var w = waiting; waiting = null; w(item); } else { queue.push(item); } }
    var dispose = client.subscribe(params, {
      next: function (v) { push({ value: v, done: false }); },
      error: function (e) {
        var msg = (e && e.reason) || (e && e.message) || String(e);
        push({ value: { errors: [{ message: msg }] }, done: false });
        push({ value: undefined, done: true });
      },
      complete: function () { push({ value: undefined, done: true }); },
    });
    return {
      next: function () {
        if (queue.length) { return Promise.resolve(queue.shift()); }
        if (done) { return Promise.resolve({ value: undefined, done: true }); }
        return new Promise(function (r) { waiting = r; });
      },
      return: function () { done = true; dispose(); client.dispose(); return Promise.resolve({ value: undefined, done: true }); },
      [Symbol.asyncIterator]: function () { return this; },
    };
  }

  function fetcher(params, opts) {
    if (isSubscription(params)) { return subscribe(params); }
    return fetch(endpoint, {
      method: 'POST',
      headers: authHeaders(opts && opts.headers),
      body: JSON.stringify(params),
    }).then(function (res) { return res.json(); });
  }

  // ?query=… opens the Playground with that document, for links in docs.
  var params = new URLSearchParams(location.search);
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    query: params.get('query') || undefined,
    defaultQuery: '# Welcome to Orchard. Paste your API key above, then run:\n{\n  customers(first: 20) {\n    totalCount\n    edges { node { id name } }\n  }\n}\n',
  }));
})();
