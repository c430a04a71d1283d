/** Stand-in for `k6/encoding`. */
import { Buffer } from 'node:buffer';

type Variant = 'std' | 'rawstd' | 'url' | 'rawurl';

export function b64encode(input: ArrayBuffer | string, variant: Variant = 'std'): string {
  const bytes = typeof input === 'string' ? Buffer.from(input) : Buffer.from(input);
  const url = variant === 'url' || variant === 'rawurl';
  const s = bytes.toString(url ? 'base64url' : 'base64');
  if (variant === 'rawstd') return s.replace(/=+$/, '');
  if (variant === 'url') return s + '='.repeat((4 - (s.length % 4)) % 4);
  return s;
}

export default { b64encode };
