// @ts-check
import js from '@eslint/js';
import * as espree from 'espree';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'bench/results/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        setImmediate: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        fetch: 'readonly',
        AbortController: 'readonly',
        TextDecoder: 'readonly',
        TextEncoder: 'readonly',
        performance: 'readonly',
        structuredClone: 'readonly',
        __ENV: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // k6 before v0.53 compiles scripts with Babel 6, which rejects anything past ES2017 (object
    // spread, `??`, `?.`, `catch {}`) with exit 107. espree, not the TypeScript parser (which
    // accepts every syntax), so that newer syntax fails the lint here instead of on k6.
    files: ['loadtests/**/*.js'],
    languageOptions: {
      parser: espree,
      ecmaVersion: 2017,
      sourceType: 'module',
      parserOptions: { ecmaVersion: 2017, sourceType: 'module' },
      globals: { __ENV: 'readonly', __VU: 'readonly', __ITER: 'readonly', open: 'readonly', console: 'readonly' },
    },
    rules: {
      // Trailing commas in calls are ES2017 too, but Babel 6 parsers disagree about them.
      'comma-dangle': ['error', { arrays: 'ignore', objects: 'ignore', imports: 'ignore', exports: 'ignore', functions: 'never' }],
    },
  },
  {
    // The operations view's page runs in the browser (plain modules, served as they are).
    files: ['server/dashboard/**/*.js'],
    languageOptions: {
      globals: {
        document: 'readonly',
        window: 'readonly',
        location: 'readonly',
        sessionStorage: 'readonly',
        TextDecoderStream: 'readonly',
        AbortSignal: 'readonly',
      },
    },
  },
  {
    // Tests read loosely typed GraphQL responses.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
