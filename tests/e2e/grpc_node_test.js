// lowbitd driven by Node's @grpc/grpc-js with grpc-reflection-js, as grpcurl would be: services and
// message types come from server reflection alone; requests are built from JSON objects (with the
// proto's field names, which proto3 JSON accepts as well as lowerCamelCase).
// Usage: node grpc_node_test.js LOWBITD SHARED_DATA  (NODE_PATH must point at tools/node_modules)
'use strict';
const assert = require('assert');
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const { Client: ReflectionClient } = require('grpc-reflection-js');

const [lowbitd, shared] = process.argv.slice(2);

function startServer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbitd-node-'));
  fs.mkdirSync(path.join(dir, 'store'));
  fs.copyFileSync(path.join(shared, 'models/stories260K/stories260K.bin'), path.join(dir, 'store/stories260K.bin'));
  const ready = path.join(dir, 'ready');
  const proc = spawn(lowbitd, ['--grpc_address=127.0.0.1:0', '--metrics_address=127.0.0.1:0',
    `--store_root=${dir}/store`, `--state_dir=${dir}/state`, `--ready_file=${ready}`], { stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      if (fs.existsSync(ready)) {
        clearInterval(poll);
        const [port] = fs.readFileSync(ready, 'utf8').trim().split(' ');
        resolve({ proc, dir, address: `127.0.0.1:${port}` });
      } else if (Date.now() - started > 30000 || proc.exitCode !== null) {
        clearInterval(poll);
        reject(new Error('lowbitd did not start'));
      }
    }, 50);
  });
}

// A unary or server-streaming call by full method name, with protobufjs types from reflection.
function call(channelClient, root, service, method, json) {
  const svc = root.lookupService(service);
  const m = svc.methods[method];
  m.resolve();
  const req = m.resolvedRequestType, res = m.resolvedResponseType;
  const serialize = (obj) => Buffer.from(req.encode(req.fromObject(obj)).finish());
  const deserialize = (buf) => res.toObject(res.decode(buf), { enums: String, longs: String, defaults: false });
  const fullPath = `/${service}/${method}`;
  if (m.responseStream) {
    return new Promise((resolve, reject) => {
      const out = [];
      const stream = channelClient.makeServerStreamRequest(fullPath, serialize, deserialize, json);
      stream.on('data', (d) => out.push(d));
      stream.on('error', reject);
      stream.on('end', () => resolve(out));
    });
  }
  return new Promise((resolve, reject) =>
    channelClient.makeUnaryRequest(fullPath, serialize, deserialize, json, (err, r) => (err ? reject(err) : resolve(r))));
}

function ok(what) { console.log('ok:', what); }

async function main() {
  const server = await startServer();
  try {
    const reflection = new ReflectionClient(server.address, grpc.credentials.createInsecure());
    const services = (await reflection.listServices()).sort();
    console.log('services:', services);
    for (const s of ['lowbit.v1.Quantizer', 'google.longrunning.Operations', 'grpc.health.v1.Health']) {
      assert(services.includes(s), s);
    }
    ok('reflection lists the services');

    const root = await reflection.fileContainingSymbol('lowbit.v1.Quantizer');
    const quantizer = root.lookupService('lowbit.v1.Quantizer');
    assert.deepStrictEqual(Object.keys(quantizer.methods).sort(),
      ['CancelJob', 'DeleteJob', 'GetJob', 'ListJobs', 'QuantizeModel', 'WatchJob']);
    assert(quantizer.methods.WatchJob.responseStream);
    ok('describe lowbit.v1.Quantizer');
    const opsRoot = await reflection.fileContainingSymbol('google.longrunning.Operations');
    const healthRoot = await reflection.fileContainingSymbol('grpc.health.v1.Health');

    const channelClient = new grpc.Client(server.address, grpc.credentials.createInsecure());
    const health = await call(channelClient, healthRoot, 'grpc.health.v1.Health', 'Check', { service: '' });
    assert.strictEqual(health.status, 'SERVING');
    ok('health: SERVING');

    const op = await call(channelClient, root, 'lowbit.v1.Quantizer', 'QuantizeModel', {
      source_uri: 'stories260K.bin', destination_uri: 'out/node-rtn3', rtn: { bits: 3, group_size: 32 } });
    assert.strictEqual(op.metadata.type_url, 'type.googleapis.com/lowbit.v1.Job');
    const id = op.name.split('/')[1];
    ok(`QuantizeModel -> ${op.name}`);

    const updates = await call(channelClient, root, 'lowbit.v1.Quantizer', 'WatchJob', { name: `jobs/${id}` });
    const last = updates[updates.length - 1];
    assert.strictEqual(last.state, 'SUCCEEDED');
    ok(`WatchJob: ${updates.length} updates, ends ${last.state}`);

    const job = await call(channelClient, root, 'lowbit.v1.Quantizer', 'GetJob', { name: `jobs/${id}` });
    assert.strictEqual(job.layers.length, 20);  // the 172-wide MLP stays FP16 in the GPTQ format
    assert(job.layers.every((l) => l.relative_error > 0 && l.relative_error < 0.3));
    ok(`GetJob(JSON): ${job.layers.length} layers, first ${JSON.stringify(job.layers[0])}`);

    const got = await call(channelClient, opsRoot, 'google.longrunning.Operations', 'GetOperation', { name: op.name });
    assert.strictEqual(got.done, true);
    assert.strictEqual(got.response.type_url, 'type.googleapis.com/lowbit.v1.QuantizeResult');
    ok('Operations.GetOperation(JSON): done, response is the QuantizeResult');

    const waited = await call(channelClient, opsRoot, 'google.longrunning.Operations', 'WaitOperation',
      { name: op.name, timeout: { seconds: 5 } });
    assert.strictEqual(waited.done, true);
    ok('Operations.WaitOperation');

    await assert.rejects(call(channelClient, root, 'lowbit.v1.Quantizer', 'GetJob', { name: 'jobs/nope' }),
      (e) => e.code === grpc.status.NOT_FOUND);
    ok('GetJob of an unknown job -> NOT_FOUND');
  } finally {
    server.proc.kill('SIGTERM');
    await new Promise((r) => server.proc.on('exit', (code) => { assert.strictEqual(code, 0); r(); }));
    fs.rmSync(server.dir, { recursive: true, force: true });
  }
  console.log('node grpc e2e: all checks passed');
}

main().catch((e) => { console.error(e); process.exit(1); });
