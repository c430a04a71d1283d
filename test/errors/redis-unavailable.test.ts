/**
 * The Redis errors a request can meet become 503 SERVICE_UNAVAILABLE (retry), not 500. The
 * errors are ioredis's own, raised by a real connection: a pipelined command aborted when its
 * server dies (what a cluster failover does to commands in flight), a command on a connection
 * that closed, a command refused with the offline queue off.
 */
import { describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { asServingError } from '../../core/errors/registry.ts';
import { freePort } from '../../cli/local-redis.ts';
import { startPrivateRedis } from '../../harness/private-redis.ts';
import { until } from '../support/wait.ts';

describe('Redis errors as client errors', () => {
  it('commands in flight when the server dies are 503 SERVICE_UNAVAILABLE, whichever way ioredis fails them', async () => {
    const server = await startPrivateRedis();
    // Auto-pipelined, as the API's request-path connection is (core/redis/connection.ts).
    const redis = new Redis(server.url, {
      maxRetriesPerRequest: 1,
      enableAutoPipelining: true,
      retryStrategy: () => null,
      connectionName: 'under-test',
    });
    redis.on('error', () => {});
    const admin = new Redis(server.url, { retryStrategy: () => null });
    admin.on('error', () => {});
    try {
      await redis.ping();
      const single = redis.blpop('nothing', 5).then(
        () => undefined,
        (e: unknown) => e,
      );
      const piped = redis.pipeline().get('a').blpop('nothing', 5).exec();
      // Both writes at the server: the connection blocked in the first BLPOP, the pipeline in its query buffer.
      let seen = '';
      await until(
        async () => {
          seen = ((await admin.client('LIST')) as string).split('\n').find((l) => l.includes('name=under-test')) ?? '';
          return /\bflags=b\b/.test(seen) && /\bcmd=blpop\b/.test(seen) && /\bqbuf=[1-9]/.test(seen);
        },
        () => `the BLPOP to block and the pipeline to reach the server (CLIENT LIST: ${seen || 'no such client'})`,
      );
      admin.disconnect();
      await server.stop(true);
      const inPipeline = ((await piped) ?? []).map(([e]) => e).filter((e): e is Error => e !== null);
      expect(inPipeline.map((e) => e.message).join(' | ')).toMatch(/Command aborted due to connection close/);
      for (const e of inPipeline) expect(asServingError(e).code, e.message).toBe('SERVICE_UNAVAILABLE');
      expect(asServingError(await single).code).toBe('SERVICE_UNAVAILABLE');
    } finally {
      redis.disconnect();
      admin.disconnect();
      await server.stop(true);
    }
  });

  it('a command refused while the connection is down is 503 SERVICE_UNAVAILABLE', async () => {
    const offline = new Redis({ port: await freePort(), enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy: () => null });
    offline.on('error', () => {});
    const refused = await offline.get('k').catch((e: unknown) => e);
    offline.disconnect();
    expect(asServingError(refused).code).toBe('SERVICE_UNAVAILABLE');
  });

  it('an error that is not Redis trouble stays INTERNAL_SERVER_ERROR', () => {
    expect(asServingError(new Error('something else')).code).toBe('INTERNAL_SERVER_ERROR');
  });
});
