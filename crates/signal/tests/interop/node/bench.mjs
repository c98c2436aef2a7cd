// Benchmarks @signalapp/libsignal-client on the operations that
// crates/signal/benches/*.rs measure for passerelle-signal, under the same
// names, with the interop harness's in-memory stores (stores.mjs).
//
//   npm ci --prefix crates/signal/tests/interop/node
//   node crates/signal/tests/interop/node/bench.mjs [options] [name filter...]
//
// Options:
//   --json FILE      also write the results as JSON to FILE ('-': stdout only
//                    the JSON, the table going to stderr)
//   --warm-up SECS   warm-up per operation (default 3, like criterion)
//   --time SECS      measurement per operation (default 5, like criterion)
//   --quick          --warm-up 0.5 --time 1
//   --spqr           keep the post-quantum ratchet on established sessions
//   --libsignal V    the pinned libsignal-client to time: 0.90.0 (default)
//                    or 0.103.0; 0.103.0 requires SPQR, so it always runs
//                    with --spqr (its per-message cost with SPQR on)
//
// Two libsignal 0.90.0 parties negotiate SPQR, the sparse post-quantum
// ratchet, as passerelle-signal's sessions always do. Without --spqr, both
// parties' records are stripped of their SPQR state (SessionStructure field
// 15) once the handshake is done, to time the classic Double Ratchet alone:
// libsignal then sends no SPQR payload, as it does with a peer that does not
// speak SPQR. --spqr (and 0.103.0) keep it, which is the same protocol as
// passerelle-signal. Session setup always includes libsignal's SPQR start,
// which JavaScript cannot turn off.
//
// Like criterion's iter_batched, each sample first prepares a batch of inputs
// untimed (fresh stores, or the messages to decrypt), then times the batch
// back to back. A sample's mean is its time over its batch size; the reported
// mean is the total timed over the total operations. Between samples, once
// per 10 ms timed, the heap is collected (untimed) when the engine allows it,
// so garbage left by the setup is mostly not collected inside the timed
// region.

import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';

import { loadLibsignal, takeVersionArg } from './libsignal.mjs';

const { version: chosenVersion, rest: benchArgs } = takeVersionArg(process.argv.slice(2));
const lib = await loadLibsignal(chosenVersion);
const { signal, Party } = lib;
const LIBSIGNAL_VERSION = lib.version;
// 0.92 and later refuse a session without SPQR: it cannot be stripped.
const SPQR_REQUIRED = LIBSIGNAL_VERSION !== '0.90.0';

// --- options ---------------------------------------------------------------

function parseArgs(argv) {
  const options = { json: null, warmUp: 3, time: 5, spqr: false, filters: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    const seconds = () => {
      const s = Number(value());
      if (!(s >= 0)) throw new Error(`${arg} needs a number of seconds`);
      return s;
    };
    if (arg === '--json') options.json = value();
    else if (arg === '--warm-up') options.warmUp = seconds();
    else if (arg === '--time') options.time = seconds();
    else if (arg === '--quick') Object.assign(options, { warmUp: 0.5, time: 1 });
    else if (arg === '--spqr') options.spqr = true;
    else if (arg === '--help' || arg === '-h') {
      const header = readFileSync(new URL(import.meta.url), 'utf8').split('\n\n')[0];
      process.stdout.write(`${header.replace(/^\/\/ ?/gm, '')}\n`);
      process.exit(0);
    } else if (arg.startsWith('-')) throw new Error(`unknown option ${arg}`);
    else options.filters.push(arg);
  }
  return options;
}

const options = parseArgs(benchArgs);
if (SPQR_REQUIRED) options.spqr = true;
// With `--json -`, stdout carries only the JSON.
const out = options.json === '-' ? process.stderr : process.stdout;

// A full collection between samples, if V8 lets us have `gc` at run time.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');

// --- measurement -------------------------------------------------------------

const nowNs = () => process.hrtime.bigint();

// Times `run(input)` over inputs from `setup()`. `batch` fixes the batch size
// (1 when each setup depends on the previous run); by default it is chosen
// after the warm-up so that a sample takes about 10 ms.
async function measure({ setup, run, batch }) {
  // Timed nanoseconds since the last collection: one per 10 ms timed, so
  // that single-operation samples do not each start with cold caches.
  let sinceGc = 0;
  const sample = async (size, collect) => {
    const inputs = [];
    for (let i = 0; i < size; i++) inputs.push(await setup());
    if (collect && sinceGc >= 10e6) {
      gc?.();
      sinceGc = 0;
    }
    const start = nowNs();
    for (const input of inputs) await run(input);
    const ns = Number(nowNs() - start);
    sinceGc += ns;
    return ns;
  };

  // Warm-up: batches of 1, 2, 4, ... until the warm-up time is spent; the
  // last one estimates the time per operation.
  let perOp;
  const warmEnd = Date.now() + options.warmUp * 1000;
  for (let size = 1; ; size = Math.min(2 * size, 1000)) {
    perOp = (await sample(batch ?? size, false)) / (batch ?? size);
    if (Date.now() >= warmEnd) break;
  }
  const size = batch ?? Math.max(1, Math.min(1000, Math.round(10e6 / perOp)));

  // Samples until the measurement time is spent, and at least 10 of them.
  const samples = [];
  const end = Date.now() + options.time * 1000;
  while (samples.length < 10 || Date.now() < end) {
    samples.push((await sample(size, true)) / size);
  }

  const sorted = [...samples].sort((a, b) => a - b);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  const sd = Math.sqrt(samples.reduce((a, b) => a + (b - mean) ** 2, 0) / (samples.length - 1));
  return {
    meanNs: mean,
    medianNs: sorted[Math.floor(sorted.length / 2)],
    minNs: sorted[0],
    stddevNs: sd,
    opsPerSec: 1e9 / mean,
    samples: samples.length,
    batch: size,
    iterations: samples.length * size,
  };
}

// --- the two parties -------------------------------------------------------

const PLAINTEXT = new Uint8Array(randomBytes(200));
const DISTRIBUTION_ID = randomUUID();
const { PreKey, Whisper } = signal.CiphertextMessageType;

const aliceIdentity = signal.IdentityKeyPair.generate();
const bobIdentity = signal.IdentityKeyPair.generate();

// Bob's published prekeys, one of each kind, made once; each fresh Bob store
// gets them (the Kyber one behaves as last-resort, see stores.mjs).
const bobKeys = (() => {
  const now = Date.now();
  const preKey = signal.PrivateKey.generate();
  const signedKey = signal.PrivateKey.generate();
  const signedPublic = signedKey.getPublicKey().serialize();
  const signedSignature = bobIdentity.privateKey.sign(signedPublic);
  const kyberPair = signal.KEMKeyPair.generate();
  const kyberPublic = kyberPair.getPublicKey().serialize();
  const kyberSignature = bobIdentity.privateKey.sign(kyberPublic);
  return {
    preKey: signal.PreKeyRecord.new(1, preKey.getPublicKey(), preKey),
    signedPreKey: signal.SignedPreKeyRecord.new(1, now, signedKey.getPublicKey(), signedKey, signedSignature),
    kyberPreKey: signal.KyberPreKeyRecord.new(1, now, kyberPair, kyberSignature),
    // The bundle as it arrives from the server: serialized keys.
    bundle: {
      registrationId: 2,
      deviceId: 1,
      preKeyId: 1,
      preKey: preKey.getPublicKey().serialize(),
      signedPreKeyId: 1,
      signedPreKey: signedPublic,
      signedPreKeySignature: signedSignature,
      kyberPreKeyId: 1,
      kyberPreKey: kyberPublic,
      kyberPreKeySignature: kyberSignature,
      identityKey: bobIdentity.publicKey.serialize(),
    },
  };
})();

// Decodes the keys, as a client does before starting a session.
const parseBundle = (b) =>
  signal.PreKeyBundle.new(
    b.registrationId,
    b.deviceId,
    b.preKeyId,
    signal.PublicKey.deserialize(b.preKey),
    b.signedPreKeyId,
    signal.PublicKey.deserialize(b.signedPreKey),
    b.signedPreKeySignature,
    signal.PublicKey.deserialize(b.identityKey),
    b.kyberPreKeyId,
    signal.KEMPublicKey.deserialize(b.kyberPreKey),
    b.kyberPreKeySignature,
  );

// Alice's device, without sessions; Bob's, with its prekeys and no session.
// Named by service ids, as Signal and Passerelle name devices: 0.103's
// PreKey messages then carry the address binding.
const ALICE = '0a11ce00-0000-4000-8000-000000000001';
const BOB = '0b0b0000-0000-4000-8000-000000000002';
const newAlice = () => new Party(ALICE, 1, 1, aliceIdentity);
async function newBob() {
  const bob = new Party(BOB, 2, 1, bobIdentity);
  await bob.preKeys.savePreKey(1, bobKeys.preKey);
  await bob.signedPreKeys.saveSignedPreKey(1, bobKeys.signedPreKey);
  await bob.kyberPreKeys.saveKyberPreKey(1, bobKeys.kyberPreKey);
  return bob;
}

const processBundle = (me, peer, bundle) => lib.processPreKeyBundle(me, parseBundle(bundle), peer.address);

// Messages cross the network serialized, with their type.
async function encrypt(me, peer, plaintext) {
  const message = await lib.signalEncrypt(me, plaintext, peer.address);
  return { type: message.type(), body: message.serialize() };
}

function decrypt(me, peer, { type, body }) {
  if (type === PreKey) {
    return lib.signalDecryptPreKey(me, signal.PreKeySignalMessage.deserialize(body), peer.address);
  }
  if (type === Whisper) {
    return lib.signalDecrypt(me, signal.SignalMessage.deserialize(body), peer.address);
  }
  throw new Error(`unexpected message type ${type}`);
}

// Alice starts from Bob's bundle and sends, Bob answers, Alice reads the
// answer: both sides then send SignalMessages.
async function handshake(alice, bob) {
  await processBundle(alice, bob, bobKeys.bundle);
  await decrypt(bob, alice, await encrypt(alice, bob, PLAINTEXT));
  await decrypt(alice, bob, await encrypt(bob, alice, PLAINTEXT));
}

// Two parties after the handshake; without SPQR unless --spqr.
async function established() {
  const [alice, bob] = [newAlice(), await newBob()];
  await handshake(alice, bob);
  if (!options.spqr) {
    await withoutSpqr(alice, bob);
    await withoutSpqr(bob, alice);
    // One round trip to check that neither side sends SPQR payloads now.
    for (const [from, to] of [
      [alice, bob],
      [bob, alice],
    ]) {
      const message = await encrypt(from, to, PLAINTEXT);
      if (signal.SignalMessage.deserialize(message.body).pqRatchet().length !== 0) {
        throw new Error('SPQR still on after stripping its state');
      }
      await decrypt(to, from, message);
    }
  }
  return [alice, bob];
}

// Drops the SPQR state from `me`'s current session with `peer`.
async function withoutSpqr(me, peer) {
  const record = (await me.sessions.getSession(peer.address)).serialize();
  const stripped = protobufFields(record).map((f) =>
    f.tag === 1 ? { ...f, bytes: protobufEncode(protobufFields(f.bytes).filter((g) => g.tag !== 15)) } : f,
  );
  await me.sessions.saveSession(peer.address, signal.SessionRecord.deserialize(protobufEncode(stripped)));
}

// Just enough protobuf for that: a message's fields, in order, as
// { tag, wireType, raw } where `raw` is the encoded value (and `bytes` the
// payload of a length-delimited field).
function protobufFields(buf) {
  let at = 0;
  const varint = () => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      if (at >= buf.length) throw new Error('truncated protobuf');
      const byte = buf[at++];
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
  };
  const fields = [];
  while (at < buf.length) {
    const key = varint();
    const field = { tag: Math.floor(key / 8), wireType: key % 8 };
    const start = at;
    if (field.wireType === 0) varint();
    else if (field.wireType === 1) at += 8;
    else if (field.wireType === 5) at += 4;
    else if (field.wireType === 2) {
      const length = varint();
      field.bytes = buf.subarray(at, at + length);
      at += length;
    } else throw new Error(`unexpected protobuf wire type ${field.wireType}`);
    field.raw = buf.subarray(start, at);
    fields.push(field);
  }
  return fields;
}

function protobufEncode(fields) {
  const varint = (value) => {
    const out = [];
    for (; value >= 0x80; value = Math.floor(value / 128)) out.push((value % 128) | 0x80);
    out.push(value);
    return out;
  };
  const parts = fields.map(({ tag, wireType, raw, bytes }) =>
    Uint8Array.from([
      ...varint(tag * 8 + wireType),
      ...(wireType === 2 ? [...varint(bytes.length), ...bytes] : raw),
    ]),
  );
  return new Uint8Array(Buffer.concat(parts));
}

// Alice sends to the distribution; Bob has processed her distribution message.
async function group() {
  const [alice, bob] = [newAlice(), await newBob()];
  const skdm = await signal.SenderKeyDistributionMessage.create(alice.address, DISTRIBUTION_ID, alice.senderKeys);
  await signal.processSenderKeyDistributionMessage(
    alice.address,
    signal.SenderKeyDistributionMessage.deserialize(skdm.serialize()),
    bob.senderKeys,
  );
  return { alice, bob };
}

// A group message, serialized.
const groupEncrypt = async (sender, plaintext) =>
  (await signal.groupEncrypt(sender.address, DISTRIBUTION_ID, sender.senderKeys, plaintext)).serialize();

// --- the operations ----------------------------------------------------------

const benchmarks = [
  {
    name: 'session/initiator_process_bundle',
    make: async () => ({
      setup: async () => [newAlice(), { address: signal.ProtocolAddress.new(BOB, 1) }],
      run: ([alice, bob]) => processBundle(alice, bob, bobKeys.bundle),
    }),
  },
  {
    name: 'session/responder_decrypt_prekey',
    make: async () => ({
      setup: async () => {
        const [alice, bob] = [newAlice(), await newBob()];
        await processBundle(alice, bob, bobKeys.bundle);
        return { alice, bob, first: await encrypt(alice, bob, PLAINTEXT) };
      },
      run: ({ alice, bob, first }) => decrypt(bob, alice, first),
    }),
  },
  {
    name: 'session/handshake',
    make: async () => ({
      setup: async () => [newAlice(), await newBob()],
      run: ([alice, bob]) => handshake(alice, bob),
    }),
  },
  {
    name: 'session/encrypt_200',
    make: async () => {
      const [alice, bob] = await established();
      return { setup: async () => null, run: () => encrypt(alice, bob, PLAINTEXT) };
    },
  },
  {
    name: 'session/decrypt_200',
    make: async () => {
      const [alice, bob] = await established();
      return { setup: () => encrypt(alice, bob, PLAINTEXT), run: (message) => decrypt(bob, alice, message) };
    },
  },
  {
    // Bob's answer carries a new ratchet key: Alice takes a Diffie-Hellman
    // ratchet step before decrypting. Each input needs the previous run.
    name: 'session/decrypt_200_ratchet_step',
    make: async () => {
      const [alice, bob] = await established();
      return {
        batch: 1,
        setup: async () => {
          await decrypt(bob, alice, await encrypt(alice, bob, PLAINTEXT));
          return encrypt(bob, alice, PLAINTEXT);
        },
        run: (reply) => decrypt(alice, bob, reply),
      };
    },
  },
  {
    name: 'sender_keys/group_encrypt_200',
    make: async () => {
      const { alice } = await group();
      return {
        setup: async () => null,
        run: () => groupEncrypt(alice, PLAINTEXT),
      };
    },
  },
  {
    name: 'sender_keys/group_decrypt_200',
    make: async () => {
      const { alice, bob } = await group();
      return {
        setup: () => groupEncrypt(alice, PLAINTEXT),
        run: (body) => signal.groupDecrypt(alice.address, bob.senderKeys, body),
      };
    },
  },
];


// --- run and report ------------------------------------------------------------

const formatNs = (ns) =>
  ns >= 1e6 ? `${(ns / 1e6).toFixed(3)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`;

const selected = benchmarks.filter(
  ({ name }) => options.filters.length === 0 || options.filters.some((f) => name.includes(f)),
);
if (selected.length === 0) throw new Error(`no benchmark matches ${options.filters.join(' ')}`);

const results = {};
for (const { name, make } of selected) {
  out.write(`${name} ... `);
  const result = await measure(await make());
  results[name] = result;
  out.write(
    `${formatNs(result.meanNs)} (±${((100 * result.stddevNs) / result.meanNs).toFixed(1)}%, ` +
      `${result.iterations} ops in ${result.samples} samples)\n`,
  );
}

const nameWidth = Math.max(...Object.keys(results).map((n) => n.length));
const spqr = options.spqr ? 'SPQR on' : 'SPQR off';
out.write(`\nlibsignal-client ${LIBSIGNAL_VERSION}, Node ${process.version}, established sessions ${spqr}\n`);
const columns = ['mean', 'median', 'ops/s'].map((c, i) => c.padStart(i < 2 ? 11 : 9)).join('  ');
out.write(`${'operation'.padEnd(nameWidth)}  ${columns}\n`);
for (const [name, r] of Object.entries(results)) {
  out.write(
    `${name.padEnd(nameWidth)}  ${formatNs(r.meanNs).padStart(11)}  ${formatNs(r.medianNs).padStart(11)}  ` +
      `${r.opsPerSec.toFixed(0).padStart(9)}\n`,
  );
}

const report = {
  implementation: '@signalapp/libsignal-client',
  version: LIBSIGNAL_VERSION,
  node: process.version,
  cpu: os.cpus()[0]?.model,
  cpus: os.cpus().length,
  loadavg: os.loadavg(),
  spqrOnEstablishedSessions: options.spqr,
  warmUpSeconds: options.warmUp,
  measurementSeconds: options.time,
  results,
};
const json = `${JSON.stringify(report, null, 2)}\n`;
if (options.json === '-') process.stdout.write(json);
else if (options.json) writeFileSync(options.json, json);
else out.write(`\n${json}`);
