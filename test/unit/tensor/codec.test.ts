/**
 * The base64 tensor codec: every datatype decodes to the values it encodes, and the wire form
 * a job carries gives the worker back the same values.
 */
import { describe, expect, it } from 'vitest';
import { fromWire, toWire } from '../../../core/prediction/input.ts';
import { decodeBase64Tensor, encodeBase64Tensor, encodeRows } from '../../../core/tensor/codec.ts';
import { sliceRows } from '../../../core/runtime/postprocess.ts';
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

describe('a job input and a run output, without extra copies (issue 25 item 6)', () => {
  it('decodes each FP32 tensor of a job into a whole buffer of its own, as the old decode did', () => {
    const a = Float32Array.from({ length: 13 }, (_, i) => i * 0.5 - 3);
    const b = Float32Array.from([7.25]);
    const wire = JSON.parse(
      JSON.stringify(
        toWire({
          kind: 'tensors',
          tensors: [
            { name: 'a', datatype: 'FP32', shape: [1, 13], data: a },
            { name: 'b', datatype: 'FP32', shape: [1, 1], data: b },
            { name: 'e', datatype: 'FP32', shape: [0, 4], data: new Float32Array(0) },
          ],
        }),
      ),
    ) as ReturnType<typeof toWire>;
    const back = fromWire(wire);
    if (back.kind !== 'tensors') throw new Error('tensors expected');
    const [x, y, e] = back.tensors.map((t) => t.data as Float32Array);
    expect(Array.from(x)).toEqual(Array.from(a));
    expect(Array.from(y)).toEqual([7.25]);
    expect(e.length).toBe(0);
    // Whole buffers, not views into a shared pool: a run may move them to its thread.
    for (const v of [x, y]) expect([v.byteOffset, v.buffer.byteLength]).toEqual([0, v.byteLength]);
    expect(x.buffer).not.toBe(y.buffer);
  });

  it('takes a request’s rows of a typed output, as numbers, and encodes the same bytes as before', () => {
    const logits = Float32Array.from({ length: 12 }, (_, i) => i / 3 - 1);
    const ids = BigInt64Array.from([1n, -2n, 3n, 4n]);
    const rows = sliceRows(
      [
        { name: 'logits', datatype: 'FP32', shape: [4, 3], data: logits },
        { name: 'ids', datatype: 'INT64', shape: [4], data: ids },
      ],
      1,
      2,
    );
    expect(rows[0]).toEqual({ name: 'logits', datatype: 'FP32', shape: [2, 3], data: Array.from(logits.subarray(3, 9)) });
    expect(rows[1]).toEqual({ name: 'ids', datatype: 'INT64', shape: [2], data: [-2, 3] });
    const encoded = encodeRows(rows, 1, 1);
    expect(encoded[0]).toEqual({
      name: 'logits',
      datatype: 'FP32',
      shape: [1, 3],
      base64: Buffer.from(logits.buffer, 6 * 4, 3 * 4).toString('base64'),
    });
    expect(Array.from(decodeBase64Tensor('t', encoded[1].base64, 'INT64', 1))).toEqual([3]);
  });
});
