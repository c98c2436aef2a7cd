// Loads one of the pinned libsignal-client versions (package.json) and hides
// the differences of their 1:1 session API from the harness and the bench.
//
// - 0.90.0 (`@signalapp/libsignal-client`): sessions negotiate SPQR with
//   fallback allowed (min_version V0); the session functions take only the
//   peer's address.
// - 0.103.0 (`libsignal-0103`, an npm alias): SPQR is required (min_version
//   V1); processPreKeyBundle, signalEncrypt, signalDecrypt and
//   signalDecryptPreKey also take the local address, which PreKey messages
//   bind into their MAC when both names are service ids.

import { readFileSync } from 'node:fs';

import { makeStores } from './stores.mjs';

export const VERSIONS = {
  '0.90.0': { pkg: '@signalapp/libsignal-client', takesLocalAddress: false },
  '0.103.0': { pkg: 'libsignal-0103', takesLocalAddress: true },
};

export const DEFAULT_VERSION = '0.90.0';

// Reads `--libsignal VERSION` (or `--libsignal=VERSION`) out of argv, and
// returns the remaining arguments and the chosen version.
export function takeVersionArg(argv) {
  const rest = [];
  let version = DEFAULT_VERSION;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--libsignal') {
      if (i + 1 >= argv.length) throw new Error('--libsignal needs a version');
      version = argv[++i];
    } else if (arg.startsWith('--libsignal=')) {
      version = arg.slice('--libsignal='.length);
    } else {
      rest.push(arg);
    }
  }
  if (!Object.hasOwn(VERSIONS, version)) {
    throw new Error(`unknown libsignal version ${version}; pinned: ${Object.keys(VERSIONS).join(', ')}`);
  }
  return { version, rest };
}

export async function loadLibsignal(version) {
  const { pkg, takesLocalAddress } = VERSIONS[version];
  const signal = await import(pkg);
  const installed = JSON.parse(
    readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url), 'utf8'),
  ).version;
  if (installed !== version) {
    throw new Error(`${pkg} is ${installed}, expected ${version}; run npm ci`);
  }
  const local = (me) => (takesLocalAddress ? [me.address] : []);
  const stores = makeStores(signal);
  return {
    signal,
    version: installed,
    ...stores,
    processPreKeyBundle: (me, bundle, peer, now = new Date()) =>
      signal.processPreKeyBundle(bundle, peer, ...local(me), me.sessions, me.identities, now),
    signalEncrypt: (me, plaintext, peer, now = new Date()) =>
      signal.signalEncrypt(plaintext, peer, ...local(me), me.sessions, me.identities, now),
    signalDecrypt: (me, message, peer) =>
      signal.signalDecrypt(message, peer, ...local(me), me.sessions, me.identities),
    signalDecryptPreKey: (me, message, peer) =>
      signal.signalDecryptPreKey(
        message,
        peer,
        ...local(me),
        me.sessions,
        me.identities,
        me.preKeys,
        me.signedPreKeys,
        me.kyberPreKeys,
      ),
  };
}
