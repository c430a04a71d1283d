/**
 * A minimal ONNX writer for dense feed-forward nets: Gemm layers with optional ReLU and
 * a final Softmax, float32 initializers, a dynamic `batch` dimension. Built with
 * onnx-proto's ModelProto so the bytes are a standard ONNX file (IR 8, opset 17).
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export const ONNX_IR_VERSION = 8;
export const ONNX_OPSET = 17;
export const PRODUCER_NAME = 'batchline';

/** One fully connected layer: y = x W + b, W stored [inFeatures, outFeatures] row-major. */
export interface DenseLayer {
  inFeatures: number;
  outFeatures: number;
  weight: Float32Array;
  bias: Float32Array;
  activation: 'relu' | 'none';
}

export interface DenseModelSpec {
  graphName: string;
  docString?: string;
  inputName: string;
  outputName: string;
  layers: DenseLayer[];
  /** Append a Softmax over the last axis (the output then holds probabilities). */
  softmax: boolean;
  /** Extra key/value pairs stored in the model's metadata_props. */
  metadata?: Record<string, string>;
}

function floatTensor(name: string, dims: number[], values: Float32Array): InstanceType<typeof onnx.TensorProto> {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (values.length !== expected) throw new Error(`${name}: ${values.length} values for dims [${dims.join(', ')}]`);
  // raw_data is little-endian; copy so the bytes are exactly the tensor's.
  const bytes = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) bytes.writeFloatLE(values[i], i * 4);
  return onnx.TensorProto.create({ name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: bytes });
}

function batchedFloatValue(name: string, width: number): InstanceType<typeof onnx.ValueInfoProto> {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: onnx.TensorShapeProto.create({
          dim: [
            onnx.TensorShapeProto.Dimension.create({ dimParam: 'batch' }),
            onnx.TensorShapeProto.Dimension.create({ dimValue: width }),
          ],
        }),
      }),
    }),
  });
}

function intAttribute(name: string, value: number): InstanceType<typeof onnx.AttributeProto> {
  return onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: value });
}

/** Builds the ModelProto of a dense net; `encodeDenseModel` gives its bytes. */
export function buildDenseModel(spec: DenseModelSpec): InstanceType<typeof onnx.ModelProto> {
  if (spec.layers.length === 0) throw new Error('a dense model needs at least one layer');
  const nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  const initializers: InstanceType<typeof onnx.TensorProto>[] = [];
  let current = spec.inputName;
  spec.layers.forEach((layer, index) => {
    if (index > 0 && spec.layers[index - 1].outFeatures !== layer.inFeatures) {
      throw new Error(`layer ${index}: ${layer.inFeatures} inputs after ${spec.layers[index - 1].outFeatures} outputs`);
    }
    if (layer.bias.length !== layer.outFeatures) throw new Error(`layer ${index}: bias length ${layer.bias.length}`);
    const w = `fc${index}.weight`;
    const b = `fc${index}.bias`;
    initializers.push(floatTensor(w, [layer.inFeatures, layer.outFeatures], layer.weight));
    initializers.push(floatTensor(b, [layer.outFeatures], layer.bias));
    const last = index === spec.layers.length - 1;
    const gemmOut = last && !spec.softmax && layer.activation === 'none' ? spec.outputName : `fc${index}.out`;
    nodes.push(onnx.NodeProto.create({ name: `fc${index}`, opType: 'Gemm', input: [current, w, b], output: [gemmOut] }));
    current = gemmOut;
    if (layer.activation === 'relu') {
      const reluOut = last && !spec.softmax ? spec.outputName : `relu${index}.out`;
      nodes.push(onnx.NodeProto.create({ name: `relu${index}`, opType: 'Relu', input: [current], output: [reluOut] }));
      current = reluOut;
    }
  });
  if (spec.softmax) {
    nodes.push(
      onnx.NodeProto.create({
        name: 'softmax',
        opType: 'Softmax',
        input: [current],
        output: [spec.outputName],
        attribute: [intAttribute('axis', -1)],
      }),
    );
  }
  const first = spec.layers[0];
  const last = spec.layers[spec.layers.length - 1];
  return onnx.ModelProto.create({
    irVersion: ONNX_IR_VERSION,
    opsetImport: [onnx.OperatorSetIdProto.create({ domain: '', version: ONNX_OPSET })],
    producerName: PRODUCER_NAME,
    producerVersion: '0.1.0',
    modelVersion: 1,
    docString: spec.docString ?? '',
    graph: onnx.GraphProto.create({
      name: spec.graphName,
      node: nodes,
      initializer: initializers,
      input: [batchedFloatValue(spec.inputName, first.inFeatures)],
      output: [batchedFloatValue(spec.outputName, last.outFeatures)],
    }),
    metadataProps: Object.entries(spec.metadata ?? {}).map(([k, value]) => onnx.StringStringEntryProto.create({ key: k, value })),
  });
}

export function encodeDenseModel(spec: DenseModelSpec): Uint8Array {
  return onnx.ModelProto.encode(buildDenseModel(spec)).finish();
}
