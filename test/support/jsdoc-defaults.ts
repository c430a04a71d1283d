/**
 * The `@defaultValue` of every field of a TypeScript interface, read from its source with the
 * TypeScript parser (no type checking), so a test can hold the documented defaults to the
 * table the code uses. Nested sections are followed whether written inline or as another
 * interface of the same file.
 */
import { readFileSync } from 'node:fs';
import ts from 'typescript';

/** A field's documented default: the value, and the text after it (e.g. `(two retries)`, `if labels are given`). */
export interface DocumentedDefault {
  value: unknown;
  rest: string;
}

/** Reads the leading value of a `@defaultValue` text: a quoted string (`*\/` unescaped), a list of numbers, a number, true or false. */
function parseDefault(text: string): DocumentedDefault {
  const t = text.trim();
  const list = /^(\[[^\]]*\])(.*)$/s.exec(t);
  if (list) return { value: JSON.parse(list[1]) as unknown, rest: list[2].trim() };
  const quoted = /^'((?:[^'\\]|\\.)*)'(.*)$/s.exec(t);
  if (quoted) return { value: quoted[1].replace(/\\(.)/g, '$1'), rest: quoted[2].trim() };
  const word = /^(\S+)(.*)$/s.exec(t);
  const [, head, rest] = word ?? ['', t, ''];
  const value = head === 'true' ? true : head === 'false' ? false : /^-?\d+(\.\d+)?$/.test(head) ? Number(head) : head;
  return { value, rest: rest.trim() };
}

/** `path -> documented default` for every field of `iface` (and its sections) in `file` that has one. */
export function documentedDefaults(file: URL, iface: string): Map<string, DocumentedDefault> {
  const source = ts.createSourceFile(file.pathname, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const interfaces = new Map<string, ts.InterfaceDeclaration>();
  source.forEachChild((n) => {
    if (ts.isInterfaceDeclaration(n)) interfaces.set(n.name.text, n);
  });
  const out = new Map<string, DocumentedDefault>();
  const walk = (members: ts.NodeArray<ts.TypeElement>, prefix: string): void => {
    for (const m of members) {
      if (!ts.isPropertySignature(m) || !m.type) continue;
      const path = `${prefix}${m.name.getText(source)}`;
      const tag = ts.getJSDocTags(m).find((t) => t.tagName.text === 'defaultValue');
      if (tag) out.set(path, parseDefault(ts.getTextOfJSDocComment(tag.comment) ?? ''));
      if (ts.isTypeLiteralNode(m.type)) walk(m.type.members, `${path}.`);
      else if (ts.isTypeReferenceNode(m.type)) {
        const section = interfaces.get(m.type.typeName.getText(source));
        if (section) walk(section.members, `${path}.`);
      }
    }
  };
  const root = interfaces.get(iface);
  if (!root) throw new Error(`no interface ${iface} in ${file.pathname}`);
  walk(root.members, '');
  return out;
}

/** Every leaf of a nested object as `path -> value`. */
export function leaves(o: object, prefix = ''): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) for (const [p, x] of leaves(v, `${prefix}${k}.`)) out.set(p, x);
    else out.set(`${prefix}${k}`, v);
  }
  return out;
}
