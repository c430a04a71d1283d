import { defineConfig } from 'vitest/config';
export default defineConfig({ test: { include: ['test/k8s/**/*.test.ts'], testTimeout: 60_000 } });
