/**
 * A small client of the inference protocol's gRPC door (grpcurl's job, with our .proto):
 *
 *   node scripts/oip-grpc-client.ts [host:port] <Method> ['<request as JSON>']
 *
 * Methods: ServerLive, ServerReady, ServerMetadata, ModelMetadata, ModelReady, ModelInfer.
 * `raw_input_contents` entries may be lists of numbers (sent as little-endian FP32 bytes) or
 * base64 text; `raw_output_contents` are printed as numbers for FP32 outputs, else as base64.
 * The key, when auth is on, comes from BATCHLINE_API_KEY (sent as `x-api-key`).
 */
import * as grpc from '@grpc/grpc-js';
import { loadInferenceService } from '../server/oip/grpc.ts';

const args = process.argv.slice(2);
const address = args[0]?.includes(':') ? args.shift()! : '127.0.0.1:4001';
const [method, json = '{}'] = args;
if (!method) {
  console.error("usage: node scripts/oip-grpc-client.ts [host:port] <Method> ['<request JSON>']");
  process.exit(2);
}
const request = JSON.parse(json) as { raw_input_contents?: (number[] | string)[] };
if (request.raw_input_contents)
  request.raw_input_contents = request.raw_input_contents.map((c) =>
    Array.isArray(c) ? Buffer.from(Float32Array.from(c).buffer).toString('base64') : c,
  );

const Service = (loadInferenceService() as unknown as { inference: { GRPCInferenceService: grpc.ServiceClientConstructor } }).inference
  .GRPCInferenceService;
const client = new Service(address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
if (typeof client[method] !== 'function') {
  console.error(`unknown method '${method}'`);
  process.exit(2);
}
const metadata = new grpc.Metadata();
if (process.env.BATCHLINE_API_KEY) metadata.set('x-api-key', process.env.BATCHLINE_API_KEY);

client[method](request, metadata, { deadline: Date.now() + 30_000 }, (err: grpc.ServiceError | null, res: Record<string, unknown>) => {
  client.close();
  if (err) {
    console.error(`${grpc.status[err.code]}: ${err.details}`);
    process.exit(1);
  }
  const outputs = (res.outputs ?? []) as { datatype: string }[];
  const raw = res.raw_output_contents as Buffer[] | undefined;
  if (raw?.length)
    res.raw_output_contents = raw.map((b, i) =>
      outputs[i]?.datatype === 'FP32' ? Array.from(new Float32Array(Uint8Array.from(b).buffer)) : b.toString('base64'),
    );
  console.log(JSON.stringify(res));
});
