// In-memory libsignal stores, shared by the interop harness (harness.mjs)
// and the benchmark (bench.mjs). `makeStores(signal)` builds them on one
// loaded libsignal-client (see libsignal.mjs): each version's native bridge
// calls stores derived from its own abstract classes.

const addrKey = (address) => `${address.name()}.${address.deviceId()}`;

export function makeStores(signal) {
  // The stores mirror libsignal's own in-memory reference stores (rust/protocol
  // src/storage/inmem.rs and node/ts/test/protocol/TestStores.ts): records are
  // kept serialized so no native handle is ever shared between calls.

  class Identities extends signal.IdentityKeyStore {
    constructor(keyPair, registrationId) {
      super();
      this.keyPair = keyPair;
      this.registrationId = registrationId;
      this.known = new Map();
    }
    async getIdentityKey() {
      return this.keyPair.privateKey;
    }
    async getLocalRegistrationId() {
      return this.registrationId;
    }
    async saveIdentity(address, key) {
      const previous = this.known.get(addrKey(address));
      this.known.set(addrKey(address), key);
      return previous && !previous.equals(key)
        ? signal.IdentityChange.ReplacedExisting
        : signal.IdentityChange.NewOrUnchanged;
    }
    // Trust on first use, in both directions: a changed identity is refused
    // (UntrustedIdentity) until `trustIdentity` saves the new one.
    async isTrustedIdentity(address, key, _direction) {
      const known = this.known.get(addrKey(address));
      return known === undefined || known.equals(key);
    }
    async getIdentity(address) {
      return this.known.get(addrKey(address)) ?? null;
    }
  }

  class Sessions extends signal.SessionStore {
    records = new Map();
    async saveSession(address, record) {
      this.records.set(addrKey(address), record.serialize());
    }
    async getSession(address) {
      const record = this.records.get(addrKey(address));
      return record ? signal.SessionRecord.deserialize(record) : null;
    }
    async getExistingSessions(addresses) {
      return addresses.map((address) => {
        const record = this.records.get(addrKey(address));
        if (!record) throw new Error(`no session for ${addrKey(address)}`);
        return signal.SessionRecord.deserialize(record);
      });
    }
  }

  class PreKeys extends signal.PreKeyStore {
    records = new Map();
    async savePreKey(id, record) {
      this.records.set(id, record.serialize());
    }
    async getPreKey(id) {
      const record = this.records.get(id);
      if (!record) throw new Error(`pre-key ${id} not found`);
      return signal.PreKeyRecord.deserialize(record);
    }
    async removePreKey(id) {
      this.records.delete(id);
    }
  }

  class SignedPreKeys extends signal.SignedPreKeyStore {
    records = new Map();
    async saveSignedPreKey(id, record) {
      this.records.set(id, record.serialize());
    }
    async getSignedPreKey(id) {
      const record = this.records.get(id);
      if (!record) throw new Error(`signed pre-key ${id} not found`);
      return signal.SignedPreKeyRecord.deserialize(record);
    }
  }

  // Kyber prekeys behave as last-resort keys (never removed), so, like
  // libsignal's reference store, a (kyber id, signed id, base key) triple may be
  // used only once: that is what rejects a replayed PreKey message.
  class KyberPreKeys extends signal.KyberPreKeyStore {
    records = new Map();
    baseKeysSeen = new Map();
    async saveKyberPreKey(id, record) {
      this.records.set(id, record.serialize());
    }
    async getKyberPreKey(id) {
      const record = this.records.get(id);
      if (!record) throw new Error(`kyber pre-key ${id} not found`);
      return signal.KyberPreKeyRecord.deserialize(record);
    }
    async markKyberPreKeyUsed(id, signedPreKeyId, baseKey) {
      const key = `${id}/${signedPreKeyId}`;
      const seen = this.baseKeysSeen.get(key) ?? [];
      if (seen.some((k) => k.equals(baseKey))) throw new Error('reused base key');
      this.baseKeysSeen.set(key, [...seen, baseKey]);
    }
  }

  class SenderKeys extends signal.SenderKeyStore {
    records = new Map();
    async saveSenderKey(sender, distributionId, record) {
      this.records.set(`${addrKey(sender)}/${distributionId}`, record.serialize());
    }
    async getSenderKey(sender, distributionId) {
      const record = this.records.get(`${addrKey(sender)}/${distributionId}`);
      return record ? signal.SenderKeyRecord.deserialize(record) : null;
    }
  }

  // A device: its address, identity and stores. A new identity unless one is
  // given.
  class Party {
    constructor(name, registrationId, deviceId, identityKeyPair = signal.IdentityKeyPair.generate()) {
      this.address = signal.ProtocolAddress.new(name, deviceId);
      this.registrationId = registrationId;
      this.identityKeyPair = identityKeyPair;
      this.identities = new Identities(this.identityKeyPair, registrationId);
      this.sessions = new Sessions();
      this.preKeys = new PreKeys();
      this.signedPreKeys = new SignedPreKeys();
      this.kyberPreKeys = new KyberPreKeys();
      this.senderKeys = new SenderKeys();
      this.nextId = { preKey: 1, signedPreKey: 1, kyberPreKey: 1 };
    }
  }

  return { Identities, Sessions, PreKeys, SignedPreKeys, KyberPreKeys, SenderKeys, Party };
}
