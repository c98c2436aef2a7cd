// Interop harness: drives the real @signalapp/libsignal-client for the
// passerelle-signal Rust tests.
//
// Line protocol (see ../README.md): one JSON request per line on stdin, one
// JSON response per line on stdout, in order. Byte strings are standard base64
// with padding. stdout carries responses only; diagnostics go to stderr.

import { createHash, createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { createInterface } from 'node:readline';

import { loadLibsignal, takeVersionArg } from './libsignal.mjs';

// `node harness.mjs [--libsignal 0.90.0|0.103.0]`; 0.90.0 by default.
const lib = await loadLibsignal(takeVersionArg(process.argv.slice(2)).version);
const { signal, Party } = lib;

// Anything that logs must not corrupt the response stream.
console.log = console.error;
console.info = console.error;

class HarnessError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = kind;
  }
}

const badRequest = (message) => new HarnessError('BadRequest', message);

const b64 = (data) => Buffer.from(data).toString('base64');
// Buffer.from(s, 'base64') silently skips junk, so check the form first.
// libsignal's typings want Uint8Array<ArrayBuffer>; a fresh Uint8Array copy
// never aliases Node's shared Buffer pool.
function bytes(s) {
  if (typeof s !== 'string' || s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) {
    throw badRequest(`expected standard padded base64, got ${JSON.stringify(s)?.slice(0, 40)}`);
  }
  return new Uint8Array(Buffer.from(s, 'base64'));
}

const parties = new Map();

function party(name) {
  const p = parties.get(name);
  if (!p) throw new HarnessError('UnknownParty', `no party named ${JSON.stringify(name)}`);
  return p;
}

const peerAddress = (req) => signal.ProtocolAddress.new(req.peer, req.peerDevice);

const ops = {
  ping: () => ({ version: lib.version }),

  create: ({ name, registrationId, deviceId }) => {
    const p = new Party(name, registrationId, deviceId);
    parties.set(name, p);
    return { identityKey: b64(p.identityKeyPair.publicKey.serialize()) };
  },

  bundle: async ({ name, oneTimePreKey }) => {
    const p = party(name);
    const identity = p.identityKeyPair;
    const now = Date.now();
    const out = {
      registrationId: p.registrationId,
      deviceId: p.address.deviceId(),
      identityKey: b64(identity.publicKey.serialize()),
    };

    if (oneTimePreKey) {
      const id = p.nextId.preKey++;
      const key = signal.PrivateKey.generate();
      await p.preKeys.savePreKey(id, signal.PreKeyRecord.new(id, key.getPublicKey(), key));
      Object.assign(out, { preKeyId: id, preKey: b64(key.getPublicKey().serialize()) });
    }

    const signedId = p.nextId.signedPreKey++;
    const signedKey = signal.PrivateKey.generate();
    const signedPublic = signedKey.getPublicKey().serialize();
    const signedSignature = identity.privateKey.sign(signedPublic);
    await p.signedPreKeys.saveSignedPreKey(
      signedId,
      signal.SignedPreKeyRecord.new(signedId, now, signedKey.getPublicKey(), signedKey, signedSignature),
    );

    const kyberId = p.nextId.kyberPreKey++;
    const kyberPair = signal.KEMKeyPair.generate();
    const kyberPublic = kyberPair.getPublicKey().serialize();
    const kyberSignature = identity.privateKey.sign(kyberPublic);
    await p.kyberPreKeys.saveKyberPreKey(
      kyberId,
      signal.KyberPreKeyRecord.new(kyberId, now, kyberPair, kyberSignature),
    );

    return Object.assign(out, {
      signedPreKeyId: signedId,
      signedPreKey: b64(signedPublic),
      signedPreKeySignature: b64(signedSignature),
      kyberPreKeyId: kyberId,
      kyberPreKey: b64(kyberPublic),
      kyberPreKeySignature: b64(kyberSignature),
    });
  },

  processBundle: async (req) => {
    const p = party(req.name);
    const hasPreKey = req.preKeyId !== undefined && req.preKeyId !== null;
    const bundle = signal.PreKeyBundle.new(
      req.registrationId,
      req.deviceId,
      hasPreKey ? req.preKeyId : null,
      hasPreKey ? signal.PublicKey.deserialize(bytes(req.preKey)) : null,
      req.signedPreKeyId,
      signal.PublicKey.deserialize(bytes(req.signedPreKey)),
      bytes(req.signedPreKeySignature),
      signal.PublicKey.deserialize(bytes(req.identityKey)),
      req.kyberPreKeyId,
      signal.KEMPublicKey.deserialize(bytes(req.kyberPreKey)),
      bytes(req.kyberPreKeySignature),
    );
    await lib.processPreKeyBundle(p, bundle, peerAddress(req));
    return {};
  },

  encrypt: async (req) => {
    const p = party(req.name);
    const message = await lib.signalEncrypt(p, bytes(req.plaintext), peerAddress(req));
    return { type: message.type(), body: b64(message.serialize()) };
  },

  decrypt: async (req) => {
    const p = party(req.name);
    const body = bytes(req.body);
    let plaintext;
    if (req.type === signal.CiphertextMessageType.PreKey) {
      plaintext = await lib.signalDecryptPreKey(p, signal.PreKeySignalMessage.deserialize(body), peerAddress(req));
    } else if (req.type === signal.CiphertextMessageType.Whisper) {
      plaintext = await lib.signalDecrypt(p, signal.SignalMessage.deserialize(body), peerAddress(req));
    } else {
      throw badRequest(`decrypt: unsupported message type ${req.type}`);
    }
    return { plaintext: b64(plaintext) };
  },

  sessionInfo: async (req) => {
    const record = await party(req.name).sessions.getSession(peerAddress(req));
    // The registration ids throw without a current session.
    if (!record || !record.hasCurrentState(new Date())) return { exists: false };
    return {
      exists: true,
      version: sessionVersion(record.serialize()),
      localRegistrationId: record.localRegistrationId(),
      remoteRegistrationId: record.remoteRegistrationId(),
    };
  },

  trustIdentity: async (req) => {
    const key = signal.PublicKey.deserialize(bytes(req.identityKey));
    const change = await party(req.name).identities.saveIdentity(peerAddress(req), key);
    return { replaced: change === signal.IdentityChange.ReplacedExisting };
  },

  sign: ({ name, message }) => ({
    signature: b64(party(name).identityKeyPair.privateKey.sign(bytes(message))),
  }),

  verify: ({ publicKey, message, signature }) => ({
    valid: signal.PublicKey.deserialize(bytes(publicKey)).verify(bytes(message), bytes(signature)),
  }),

  skdmCreate: async ({ name, distributionId }) => {
    const p = party(name);
    const skdm = await signal.SenderKeyDistributionMessage.create(p.address, distributionId, p.senderKeys);
    return { skdm: b64(skdm.serialize()) };
  },

  skdmProcess: async ({ name, sender, senderDevice, skdm }) => {
    await signal.processSenderKeyDistributionMessage(
      signal.ProtocolAddress.new(sender, senderDevice),
      signal.SenderKeyDistributionMessage.deserialize(bytes(skdm)),
      party(name).senderKeys,
    );
    return {};
  },

  groupEncrypt: async ({ name, distributionId, plaintext }) => {
    const p = party(name);
    const message = await signal.groupEncrypt(p.address, distributionId, p.senderKeys, bytes(plaintext));
    return { body: b64(message.serialize()) };
  },

  groupDecrypt: async ({ name, sender, senderDevice, body }) => {
    const plaintext = await signal.groupDecrypt(
      signal.ProtocolAddress.new(sender, senderDevice),
      party(name).senderKeys,
      bytes(body),
    );
    return { plaintext: b64(plaintext) };
  },

  fingerprint: (req) => {
    const fp = signal.Fingerprint.new(
      req.iterations,
      req.version,
      bytes(req.localId),
      signal.PublicKey.deserialize(bytes(req.localKey)),
      bytes(req.remoteId),
      signal.PublicKey.deserialize(bytes(req.remoteKey)),
    );
    return {
      displayable: fp.displayableFingerprint().toString(),
      scannable: b64(fp.scannableFingerprint().toBuffer()),
    };
  },

  // libsignal's compare of a scanned fingerprint against ours; it throws
  // on a version mismatch or bytes that do not decode.
  fingerprintCompare: ({ scannable, other }) => ({
    matches: signal.ScannableFingerprint._fromBuffer(bytes(scannable)).compare(
      signal.ScannableFingerprint._fromBuffer(bytes(other)),
    ),
  }),

  attachmentEncrypt: ({ key, iv, plaintext }) => {
    const { aesKey, macKey } = attachmentKeys(bytes(key));
    const ivBytes = bytes(iv);
    if (ivBytes.length !== 16) throw badRequest('attachment iv must be 16 bytes');
    const cipher = createCipheriv('aes-256-cbc', aesKey, ivBytes);
    const body = Buffer.concat([ivBytes, cipher.update(bytes(plaintext)), cipher.final()]);
    const ciphertext = Buffer.concat([body, createHmac('sha256', macKey).update(body).digest()]);
    return { ciphertext: b64(ciphertext), digest: b64(createHash('sha256').update(ciphertext).digest()) };
  },

  attachmentDecrypt: ({ key, ciphertext, digest }) => {
    const { aesKey, macKey } = attachmentKeys(bytes(key));
    const data = Buffer.from(bytes(ciphertext));
    if (data.length < 16 + 16 + 32) throw new HarnessError('BadAttachment', 'attachment too short');
    const body = data.subarray(0, data.length - 32);
    const mac = data.subarray(data.length - 32);
    // Both checks run in constant time and before any decryption.
    if (!timingSafeEqual(mac, createHmac('sha256', macKey).update(body).digest())) {
      throw new HarnessError('BadMac', 'attachment MAC mismatch');
    }
    const expectedDigest = Buffer.from(bytes(digest));
    const actualDigest = createHash('sha256').update(data).digest();
    if (expectedDigest.length !== 32 || !timingSafeEqual(expectedDigest, actualDigest)) {
      throw new HarnessError('BadDigest', 'attachment digest mismatch');
    }
    const decipher = createDecipheriv('aes-256-cbc', aesKey, body.subarray(0, 16));
    const plaintext = Buffer.concat([decipher.update(body.subarray(16)), decipher.final()]);
    return { plaintext: b64(plaintext) };
  },
};

// SessionRecord has no version accessor, so read it from the serialized
// RecordStructure: field 1 (current_session, a SessionStructure) whose field 1
// is session_version. prost writes fields in order, so both come first.
function sessionVersion(record) {
  let at = 0;
  const varint = () => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = record[at++] ?? 0; // a truncated record ends the varint
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
  };
  if (record[at++] !== 0x0a) return undefined;
  varint(); // length of current_session
  return record[at++] === 0x08 ? varint() : undefined;
}

// 64-byte attachment key: AES-256 key, then HMAC-SHA256 key.
function attachmentKeys(key) {
  if (key.length !== 64) throw badRequest('attachment key must be 64 bytes');
  return { aesKey: key.subarray(0, 32), macKey: key.subarray(32) };
}

// libsignal errors carry a numeric `code`; report its ErrorCode name
// ("DuplicatedMessage", "UntrustedIdentity", ...; "Generic" for most protocol
// failures). Anything else reports its class (or harness) name.
function describe(err) {
  if (err instanceof signal.LibSignalErrorBase) {
    return { kind: signal.ErrorCode[err.code] ?? err.name, message: err.message, operation: err.operation };
  }
  return { kind: err?.name ?? 'Error', message: String(err?.message ?? err) };
}

async function handle(line) {
  let id = null;
  try {
    const req = JSON.parse(line);
    id = req.id ?? null;
    const op = Object.hasOwn(ops, req.op) ? ops[req.op] : undefined;
    if (!op) throw badRequest(`unknown op ${JSON.stringify(req.op)}`);
    return { id, ok: true, ...(await op(req)) };
  } catch (err) {
    return { id, ok: false, error: describe(err) };
  }
}

// Requests run strictly one at a time, in order, so responses never reorder.
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === '') continue;
  process.stdout.write(`${JSON.stringify(await handle(line))}\n`);
}
