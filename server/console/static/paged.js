// Relay paging shared by the console's lists.
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from './html.js';

export const PAGE = 'totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }';

// usePaged runs a connection query with Relay cursors; reset when deps change.
// label names the pager, so two lists on one page have distinct controls.
export function usePaged(run, deps, size = 50, label = 'Pages') {
  const [cursor, setCursor] = useState({ first: size });
  const [page, setPage] = useState(0);
  const [conn, setConn] = useState(null);
  const [error, setError] = useState('');
  const [tick, setTick] = useState(0);
  const first = useRef(true);
  useEffect(() => {
    if (first.current) { first.current = false; return; }
    setCursor({ first: size }); setPage(0);
  }, deps);
  useEffect(() => {
    let live = true;
    run(cursor).then((c) => { if (live) { setConn(c); setError(''); } }).catch((e) => live && setError(e.message));
    return () => { live = false; };
  }, [cursor, tick, ...deps]);
  const pager = conn && (conn.pageInfo.hasNextPage || page > 0) && html`
    <nav class="pager" aria-label=${label}>
      <button type="button" disabled=${page === 0} onClick=${() => { setCursor({ last: size, before: conn.pageInfo.startCursor }); setPage(page - 1); }}>Previous page</button>
      <button type="button" disabled=${!conn.pageInfo.hasNextPage} onClick=${() => { setCursor({ first: size, after: conn.pageInfo.endCursor }); setPage(page + 1); }}>Next page</button>
    </nav>`;
  return { conn, error, pager, page, reload: () => setTick((n) => n + 1), rows: conn ? conn.edges.map((e) => e.node) : [] };
}
