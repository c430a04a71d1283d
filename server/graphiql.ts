/**
 * GraphiQL served offline. yoga's default page loads GraphiQL from a CDN (a blank page on a
 * machine without internet); `@graphql-yoga/render-graphiql` ships the same bundle, Monaco's
 * workers, CSS and fonts (as data URIs) inside the package. Its own renderer inlines all of it
 * (about 9 MB) into every page; here the page is a small shell and the assets are separate,
 * gzipped once, under a versioned path the browser caches, so reopening GraphiQL costs a few
 * kilobytes. Subscriptions run over SSE: the headers editor's API key then reaches them as it
 * reaches queries (yoga's GraphiQL sends no connection parameters over WebSocket).
 */
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { GraphiQLOptions, Plugin } from 'graphql-yoga';

const { version } = createRequire(import.meta.url)('@graphql-yoga/render-graphiql/package.json') as { version: string };
/** Versioned: a new package version is a new URL, so the assets may be cached for good. */
export const GRAPHIQL_ASSETS = `/graphiql/${version}`;

const DEFAULT_QUERY = `# Ask the demo model; Ctrl-Enter runs it.
# Subscriptions work here too (over SSE).
# With auth on, in Headers: {"x-api-key": "..."}
{
  predict(model: "name-gender", input: { text: "Maria" }) {
    label
    score
    probabilities { label probability }
    timings { queueMs batchWaitMs batchRows coldStartMs inferenceMs totalMs }
    cached
  }
}
`;

/** yoga's `graphiql` option: the page's settings, or false when `http.graphiql` is off. */
export function graphiqlOptions(enabled: boolean): GraphiQLOptions | false {
  return enabled ? { title: 'batchline GraphiQL', subscriptionsProtocol: 'SSE', defaultQuery: DEFAULT_QUERY } : false;
}

/** JSON that cannot end the script element it sits in. */
const scriptJson = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');

/** yoga's `renderGraphiQL`: the shell page, with assets from this server. */
export function renderGraphiQL(opts: GraphiQLOptions): string {
  const workers = {
    editorWorkerService: `${GRAPHIQL_ASSETS}/editor.worker.js`,
    json: `${GRAPHIQL_ASSETS}/json.worker.js`,
    graphql: `${GRAPHIQL_ASSETS}/graphql.worker.js`,
  };
  const title = (opts.title ?? 'GraphiQL').replace(/[<>&"]/g, '');
  return `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>${title}</title>
    <link rel="icon" href="${GRAPHIQL_ASSETS}/favicon.ico" />
    <link rel="stylesheet" href="${GRAPHIQL_ASSETS}/graphiql.css" />
  </head>
  <body id="body" class="no-focus-outline">
    <noscript>GraphiQL needs JavaScript.</noscript>
    <div id="root"></div>
    <script>
      const workers = ${scriptJson(workers)};
      self.MonacoEnvironment = { globalAPI: false, getWorkerUrl: (_moduleId, label) => workers[label] ?? workers.editorWorkerService };
    </script>
    <script src="${GRAPHIQL_ASSETS}/graphiql.js"></script>
    <script>YogaGraphiQL.renderYogaGraphiQL(document.querySelector('#root'), ${scriptJson(opts)});</script>
  </body>
</html>
`;
}

interface Asset {
  type: string;
  body: Uint8Array<ArrayBuffer>;
  gzipped: Uint8Array<ArrayBuffer>;
}

let assets: Promise<ReadonlyMap<string, Asset>> | undefined;

/** The package's assets by file name, loaded (and compressed) on first use: 9 MB of strings not every API needs. */
function loadAssets(): Promise<ReadonlyMap<string, Asset>> {
  assets ??= import('@graphql-yoga/render-graphiql/graphiql').then((m) => {
    const js = 'text/javascript; charset=utf-8';
    const icon = /^data:([^;]+);base64,(.*)$/.exec(m.favicon);
    const files: [string, string, Buffer][] = [
      ['graphiql.js', js, Buffer.from(m.js)],
      ['graphiql.css', 'text/css; charset=utf-8', Buffer.from(m.css)],
      ['editor.worker.js', js, Buffer.from(m.editorWorkerService)],
      ['json.worker.js', js, Buffer.from(m.jsonWorker)],
      ['graphql.worker.js', js, Buffer.from(m.graphqlWorker)],
      ['favicon.ico', icon?.[1] ?? 'image/x-icon', Buffer.from(icon?.[2] ?? '', 'base64')],
    ];
    // On libuv's thread pool: compressing 9 MB on the event loop would stall every request for a moment.
    const gzipped = promisify(gzip);
    return Promise.all(
      files.map(
        async ([name, type, body]) => [name, { type, body: new Uint8Array(body), gzipped: new Uint8Array(await gzipped(body)) }] as const,
      ),
    ).then((all) => new Map(all));
  });
  return assets;
}

/** Answers GET `${GRAPHIQL_ASSETS}/<file>`; everything else passes on. */
export function useGraphiQLAssets(): Plugin {
  return {
    async onRequest({ request, url, endResponse, fetchAPI }) {
      if (!url.pathname.startsWith(`${GRAPHIQL_ASSETS}/`) || (request.method !== 'GET' && request.method !== 'HEAD')) return;
      const asset = (await loadAssets()).get(url.pathname.slice(GRAPHIQL_ASSETS.length + 1));
      if (!asset) {
        endResponse(new fetchAPI.Response('not found', { status: 404, headers: { 'content-type': 'text/plain' } }));
        return;
      }
      const gzip = /\bgzip\b/.test(request.headers.get('accept-encoding') ?? '');
      const headers: Record<string, string> = {
        'content-type': asset.type,
        'cache-control': 'public, max-age=31536000, immutable',
        vary: 'accept-encoding',
      };
      if (gzip) headers['content-encoding'] = 'gzip';
      endResponse(new fetchAPI.Response(request.method === 'HEAD' ? null : gzip ? asset.gzipped : asset.body, { headers }));
    },
  };
}
