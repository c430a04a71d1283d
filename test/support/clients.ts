/** Real clients: GraphQL over HTTP (fetch), over SSE, and over WebSocket (graphql-ws). */
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';

export interface GqlResponse<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: { data?: T | null; errors?: { message: string; extensions?: Record<string, unknown> }[] };
}

export async function gql<T = Record<string, unknown>>(
  url: string,
  query: string,
  variables?: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<GqlResponse<T>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as GqlResponse<T>['body'] };
}

/** Subscribes over SSE and collects every `next` payload until the server completes the stream. */
export async function sseCollect(
  url: string,
  query: string,
  variables: Record<string, unknown>,
  timeoutMs = 20_000,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers?: Headers; events: GqlResponse['body'][] }> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers },
      body: JSON.stringify({ query, variables }),
      signal: ctrl.signal,
    });
    const events: GqlResponse['body'][] = [];
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let idx;
      while ((idx = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, idx);
        buffer = buffer.slice(idx + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event === 'next' && data) events.push(JSON.parse(data) as GqlResponse['body']);
        if (event === 'complete') return { status: res.status, headers: res.headers, events };
      }
    }
    return { status: res.status, headers: res.headers, events };
  } finally {
    clearTimeout(timer);
  }
}

export function wsClient(url: string): Client {
  return createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true });
}

/** Subscribes over WebSocket and collects every `next` payload until complete. */
export function wsCollect(client: Client, query: string, variables: Record<string, unknown>): Promise<GqlResponse['body'][]> {
  return new Promise((resolve, reject) => {
    const events: GqlResponse['body'][] = [];
    client.subscribe(
      { query, variables },
      { next: (v) => events.push(v as GqlResponse['body']), error: reject, complete: () => resolve(events) },
    );
  });
}
