// @ts-check
/**
 * The page's GraphQL client: queries over POST, subscriptions over SSE (graphql-yoga's
 * default), the API key in the headers of both. EventSource cannot POST nor set headers, so
 * the stream is read from fetch.
 */

/** @typedef {{ message: string, extensions?: { code?: string } }} GqlError */
/** @typedef {{ data?: any, errors?: GqlError[] }} GqlResult */

/** The key goes as x-api-key (the default header) and as a Bearer token, which the server reads whatever header it is configured with. */
function authHeaders(apiKey) {
  return apiKey ? { 'x-api-key': apiKey, authorization: `Bearer ${apiKey}` } : {};
}

/**
 * @param {string} query
 * @param {Record<string, unknown>} variables
 * @param {string | undefined} apiKey
 * @returns {Promise<GqlResult & { status: number }>}
 */
export async function request(query, variables, apiKey) {
  const res = await fetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json, application/json', ...authHeaders(apiKey) },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json().catch(() => ({ errors: [{ message: `HTTP ${res.status}` }] }));
  return { status: res.status, ...body };
}

/**
 * Subscribes; `onNext` gets every payload. Resolves when the server ends the stream, rejects
 * on a network error. `signal` stops it.
 * @param {string} query
 * @param {Record<string, unknown>} variables
 * @param {string | undefined} apiKey
 * @param {(r: GqlResult) => void} onNext
 * @param {AbortSignal} signal
 */
export async function subscribe(query, variables, apiKey, onNext, signal) {
  const res = await fetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...authHeaders(apiKey) },
    body: JSON.stringify({ query, variables }),
    signal,
  });
  if (!res.body || !(res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    onNext(await res.json().catch(() => ({ errors: [{ message: `HTTP ${res.status}` }] })));
    return;
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: ?(.*)$/m.exec(block)?.[1];
      const data = block
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, ''))
        .join('\n');
      if (event === 'complete') return;
      if (data) onNext(JSON.parse(data));
    }
  }
}

/** @param {GqlResult} r */
export const errorCode = (r) => r.errors?.[0]?.extensions?.code;
