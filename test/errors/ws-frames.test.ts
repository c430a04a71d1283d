/**
 * Malformed WebSocket frames, sent on raw TCP after a real upgrade: no mask, reserved bits,
 * an unknown opcode, an absurd length, a message over `http.maxBodyBytes`. ws closes each
 * connection with 1002 (protocol error) or 1009 (too big); the API logs ONE structured line per
 * connection (its ws error code, the close code) and prints no stack trace ("Internal error
 * emitted on a WebSocket socket", which graphql-ws printed for each before), and it goes on
 * serving WebSocket and HTTP clients.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { dropPrefix, listeningPort, spawnCli, uniquePrefix, type Child } from '../../harness/stack.ts';
import { wsCollect } from '../support/clients.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('wsframes');
const MAX_BODY = 64 * 1024;
let api: Child;
let port: number;

beforeAll(async () => {
  api = await spawnCli(
    ['serve'],
    {
      redisUrl,
      prefix,
      env: {
        BATCHLINE_HOST: '127.0.0.1',
        BATCHLINE_PORT: '0',
        BATCHLINE_MAX_BODY_BYTES: String(MAX_BODY),
        BATCHLINE_MAINTENANCE: 'false',
        BATCHLINE_LOG_REQUESTS: 'off',
      },
    },
    /"msg":"API listening"/,
  );
  port = listeningPort(api);
});

afterAll(async () => {
  await api?.stop();
  await dropPrefix(redisUrl, prefix);
});

const MASK = [0x11, 0x22, 0x33, 0x44];
/** A 64-bit payload length field. */
const len64 = (n: bigint): number[] => Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(8 * (7 - i))) & 0xffn));

const FRAMES: { name: string; bytes: number[]; wsCode: string; closeCode: number }[] = [
  { name: 'unmasked text frame', bytes: [0x81, 0x02, 0x7b, 0x7d], wsCode: 'WS_ERR_EXPECTED_MASK', closeCode: 1002 },
  { name: 'RSV2 and RSV3 set', bytes: [0xb1, 0x82, ...MASK, 0x6a, 0x5f], wsCode: 'WS_ERR_UNEXPECTED_RSV_2_3', closeCode: 1002 },
  {
    name: 'RSV1 without a negotiated extension',
    bytes: [0xc1, 0x82, ...MASK, 0x6a, 0x5f],
    wsCode: 'WS_ERR_UNEXPECTED_RSV_1',
    closeCode: 1002,
  },
  { name: 'unknown opcode', bytes: [0x83, 0x82, ...MASK, 0x6a, 0x5f], wsCode: 'WS_ERR_INVALID_OPCODE', closeCode: 1002 },
  {
    name: 'absurd length (2^63 - 1)',
    bytes: [0x82, 0xff, ...len64((1n << 63n) - 1n), ...MASK],
    wsCode: 'WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH',
    closeCode: 1009,
  },
  {
    name: 'message over http.maxBodyBytes',
    bytes: [0x82, 0xff, ...len64(BigInt(MAX_BODY * 4)), ...MASK],
    wsCode: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH',
    closeCode: 1009,
  },
];

/** Upgrades a raw TCP connection, sends `frame`, and reads until the server ends it: the close code it sent. */
function sendRaw(frame: number[]): Promise<{ upgraded: boolean; closeCode?: number }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let upgraded = false;
    socket.on('connect', () =>
      socket.write(
        'GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
          'Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n',
      ),
    );
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (upgraded) return;
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      upgraded = buf.subarray(0, end).toString().startsWith('HTTP/1.1 101');
      buf = buf.subarray(end + 4);
      if (upgraded) socket.write(Buffer.from(frame));
    });
    socket.on('error', reject);
    socket.on('close', () => {
      // The server's close frame: 0x88, its length, then the code.
      const at = buf.indexOf(0x88);
      resolve({ upgraded, closeCode: at >= 0 && buf.length >= at + 4 ? buf.readUInt16BE(at + 2) : undefined });
    });
  });
}

/** The API's log lines about a WebSocket closed for a bad frame. */
const frameLines = (): { code: string; closeCode: number; msg: string }[] =>
  api
    .output()
    .split('\n')
    .filter((l) => l.includes('"msg":"WebSocket closed: '))
    .map((l) => JSON.parse(l) as { code: string; closeCode: number; msg: string });

describe('malformed WebSocket frames', () => {
  it('each closes its connection with 1002 or 1009 and logs one structured line, no stack trace', { timeout: 60_000 }, async () => {
    for (const f of FRAMES) {
      // Twice each: two connections, two lines.
      for (let k = 0; k < 2; k++)
        expect({ frame: f.name, ...(await sendRaw(f.bytes)) }).toEqual({ frame: f.name, upgraded: true, closeCode: f.closeCode });
    }
    await until(
      () => frameLines().length >= FRAMES.length * 2,
      () => `${FRAMES.length * 2} log lines, got ${frameLines().length}`,
    );
    const lines = frameLines();
    expect(lines.map((l) => `${l.code} ${l.closeCode}`).sort()).toEqual(
      FRAMES.flatMap((f) => [`${f.wsCode} ${f.closeCode}`, `${f.wsCode} ${f.closeCode}`]).sort(),
    );
    expect(api.output()).not.toMatch(/Internal error|\n\s+at /);
  });

  it('the API goes on serving: a WebSocket operation and /health', async () => {
    const client = createClient({ url: `ws://127.0.0.1:${port}/graphql`, webSocketImpl: WebSocket, retryAttempts: 0 });
    try {
      expect(await wsCollect(client, '{ __typename }', {})).toEqual([{ data: { __typename: 'Query' } }]);
    } finally {
      await client.dispose();
    }
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    expect(api.output()).not.toMatch(/Internal error|\n\s+at /);
  });
});
