/** The part of espree (ESLint's parser, no types of its own) the loadtests syntax test uses. */
declare module 'espree' {
  interface Node {
    type: string;
    source?: { value: unknown } | null;
  }
  export function parse(code: string, options: { ecmaVersion: number; sourceType: 'module' | 'script' }): { body: Node[] };
}
