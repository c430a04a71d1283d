import { Redis } from 'ioredis';

/**
 * Counts publications per prediction id on the result channels (`<prefix>:result:<id>`), into
 * `counts`: a prediction answered twice, or never, shows there whoever was listening.
 */
export async function countResults(
  redisUrl: string,
  prefix: string,
  counts = new Map<string, number>(),
): Promise<{ counts: Map<string, number>; close: () => void }> {
  const listener = new Redis(redisUrl);
  listener.on('error', () => {});
  await listener.psubscribe(`${prefix}:result:*`);
  listener.on('pmessage', (_p, channel) => {
    const id = channel.slice(`${prefix}:result:`.length);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  });
  return { counts, close: () => listener.disconnect() };
}
