import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // graphql ships CJS (main) and ESM (module) builds. Node loads the CJS one for our code
    // and for yoga alike; Vite would give our code the ESM one, so the tests would run two
    // graphql copies where production runs one. Pin the one Node uses.
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    setupFiles: ['test/support/crashes.ts'],
    // An unhandled rejection anywhere in a test process fails the run (a 1 ms deadline once took
    // the API down this way); said here so nobody turns it off without reading this.
    dangerouslyIgnoreUnhandledErrors: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Files start real processes and a private redis-server; two cores do not take more.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
