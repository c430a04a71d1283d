/**
 * One tensor type for every stage: a request's input, a job's wire form, the runtime's output
 * and the output as it travels. The stages differ only in how they hold the values (a plain
 * array from JSON, a typed array off the wire or out of onnxruntime, base64 bytes in a reply),
 * so each is this type with its own `Values`, or with `data` swapped for its encoded form.
 */
import type { Datatype } from '../models/config.ts';

export interface Tensor<Values = ArrayLike<number>, Type extends string = Datatype> {
  name: string;
  datatype: Type;
  /** Full shape, batch dimension first. */
  shape: number[];
  /** Row-major values. */
  data: Values;
}

/** A tensor with its values at hand (Open Inference Protocol layout). */
export type TensorValue = Tensor<number[], string>;
