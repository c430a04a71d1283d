/**
 * What a connection is for, which decides how it behaves when Redis is away: a producer (the
 * request path) fails fast, a blocking connection (BullMQ) and a subscriber wait and reconnect.
 */
export type RedisRole = 'producer' | 'blocking' | 'subscriber';
