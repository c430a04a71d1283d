/** Loads a written .onnx file with onnxruntime-node and checks its interface. */
import { InferenceSession } from 'onnxruntime-node';

export interface ValueSummary {
  name: string;
  type?: string;
  shape?: (number | string)[];
}

export interface OrtInterface {
  inputs: ValueSummary[];
  outputs: ValueSummary[];
}

function summarise(names: readonly string[], metadata: readonly InferenceSession.ValueMetadata[] | undefined): ValueSummary[] {
  return names.map((name, i) => {
    const meta = metadata?.[i];
    if (meta && meta.isTensor) return { name, type: meta.type, shape: [...meta.shape] };
    return { name };
  });
}

/**
 * Opens `path` and throws unless its single input and output carry the given names and
 * a symbolic first (batch) dimension with the given width. Returns the session.
 */
export async function openAndCheck(
  path: string,
  expected: { input: string; inputWidth: number; output: string; outputWidth: number },
  options: InferenceSession.SessionOptions = {},
): Promise<{ session: InferenceSession; io: OrtInterface }> {
  const session = await InferenceSession.create(path, options);
  const io: OrtInterface = {
    inputs: summarise(session.inputNames, session.inputMetadata),
    outputs: summarise(session.outputNames, session.outputMetadata),
  };
  const check = (kind: string, values: ValueSummary[], name: string, width: number) => {
    if (values.length !== 1 || values[0].name !== name) {
      throw new Error(`${path}: ${kind} names ${JSON.stringify(values.map((v) => v.name))}, expected ["${name}"]`);
    }
    const { type, shape } = values[0];
    if (type !== undefined && type !== 'float32') throw new Error(`${path}: ${kind} ${name} is ${type}, expected float32`);
    if (shape !== undefined && (shape.length !== 2 || typeof shape[0] !== 'string' || shape[1] !== width)) {
      throw new Error(`${path}: ${kind} ${name} has shape ${JSON.stringify(shape)}, expected ["batch", ${width}]`);
    }
  };
  check('input', io.inputs, expected.input, expected.inputWidth);
  check('output', io.outputs, expected.output, expected.outputWidth);
  return { session, io };
}
