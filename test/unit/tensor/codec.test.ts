/**
 * The base64 tensor codec: every datatype decodes to the values it encodes, and the wire form
 * a job carries gives the worker back the same values.
 */
import { describe, expect, it } from 'vitest';
import { fromWire, toWire } from '../../../core/prediction/input.ts';
import { decodeBase64Tensor, encodeBase64Tensor } from '../../../core/tensor/codec.ts';
import type { Datatype } from '../../../core/models/config.ts';
import { ServingError } from '../../../core/errors/registry.ts';

const VALUES: Record<Datatype, number[]> = {
  FP32: [0, 1.5, -2.25, 3e10, -1e-7],
  FP64: [0, Math.PI, -1e300, 5e-324, 123456.789],
  INT32: [0, -1, 2147483647, -2147483648, 42],
  INT64: [0, -1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 7],
  UINT8: [0, 1, 128, 255, 3],
  INT8: [0, -128, 127, -1, 5],
  BOOL: [0, 1, 1, 0, 1],
};

describe('base64 tensors', () => {
  for (const [datatype, values] of Object.entries(VALUES) as [Datatype, number[]][]) {
    it(`round-trips ${datatype}`, () => {
      const text = encodeBase64Tensor(datatype, values)!;
      const back = Array.from(decodeBase64Tensor('t', text, datatype, values.length));
      expect(back).toEqual(datatype === 'FP32' ? Array.from(Float32Array.from(values)) : values);
    });
  }

  it('refuses an INT64 beyond 2^53 rather than rounding it', () => {
    const text = Buffer.from(BigInt64Array.of(2n ** 53n + 1n).buffer).toString('base64');
    expect(() => decodeBase64Tensor('t', text, 'INT64', 1)).toThrow(/t\[0\]: INT64 value 9007199254740993 is beyond 2\^53/);
  });

  it('refuses text that is not strict base64, with BAD_USER_INPUT', () => {
    for (const text of ['abc', 'ab=c', 'AAAA AAAA', 'AA-_']) {
      let err: unknown;
      try {
        decodeBase64Tensor('t', text, 'UINT8', 3);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ServingError);
      expect((err as ServingError).code).toBe('BAD_USER_INPUT');
    }
  });

  it('has no byte layout for a datatype it does not know', () => {
    expect(encodeBase64Tensor('FP16', [1])).toBeNull();
  });

  it('carries FP32 inputs in a job as bytes and gives the worker the same values', () => {
    const data = Float32Array.from([1, -2, 3.5, 0.125]);
    const wire = toWire({ kind: 'tensors', tensors: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data }] });
    expect(JSON.stringify(wire)).not.toContain('3.5');
    const back = fromWire(JSON.parse(JSON.stringify(wire)));
    expect(back.kind === 'tensors' && Array.from(back.tensors[0].data)).toEqual(Array.from(data));
  });
});
