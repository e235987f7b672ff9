import { createHash } from 'node:crypto';
import * as openpgp from 'openpgp';
import { AppError } from './errors.ts';

/**
 * Signed lease requests (the seed's non-repudiation): the body is an OpenPGP clear-signed
 * message whose text is the request's JSON, carrying `ts` (milliseconds since the epoch).
 */
export interface SignedRequest {
  /** The JSON the message carries, not yet trusted. */
  payload: Record<string, unknown>;
  /** SHA-256 of the message as entgate re-armors it: the same for the same text and signature, however the client armored them. */
  digest: string;
  message: openpgp.CleartextMessage;
}

const MAX_MESSAGE = 64 * 1024;

/** Reads a clear-signed message; 400 `invalid_signed_message` for anything else. */
export async function parseSignedRequest(text: string): Promise<SignedRequest> {
  const invalid = (why: string) => new AppError(400, 'invalid_signed_message', `the body is not a usable OpenPGP clear-signed message: ${why}`);
  if (text.length > MAX_MESSAGE) throw invalid('it is longer than 64 KiB');
  let message: openpgp.CleartextMessage;
  try {
    message = await openpgp.readCleartextMessage({ cleartextMessage: text });
  } catch (err) {
    throw invalid((err as Error).message.split('\n')[0]!.slice(0, 200));
  }
  let payload: unknown;
  try {
    payload = JSON.parse(message.getText());
  } catch {
    throw invalid('the signed text is not JSON');
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) throw invalid('the signed text is not a JSON object');
  const ts = (payload as { ts?: unknown }).ts;
  if (typeof ts !== 'number' || !Number.isSafeInteger(ts) || ts < 0) throw invalid('the signed JSON has no `ts` (milliseconds since the epoch)');
  const digest = createHash('sha256').update(message.armor()).digest('hex');
  return { payload: payload as Record<string, unknown>, digest, message };
}

/**
 * Checks a signed request: its `ts` within `windowMs` of `now`, and a valid signature by one of
 * the client's registered keys. Answers what is wrong (undefined: nothing); the caller refuses
 * the request with it. Replays are the caller's to refuse (it remembers `digest`).
 */
export async function verifySignedRequest(request: SignedRequest, armoredKeys: string[], windowMs: number, now: number): Promise<SignatureProblem | undefined> {
  const ts = request.payload.ts as number;
  if (Math.abs(now - ts) > windowMs) {
    return { code: 'request_expired', message: `the signed request's ts is more than ${windowMs / 1000} s from the server's clock` };
  }
  if (armoredKeys.length === 0) return { code: 'unknown_client_key', message: 'no public key is registered for this clientId' };
  const verificationKeys = await Promise.all(armoredKeys.map((armoredKey) => openpgp.readKey({ armoredKey })));
  try {
    const { signatures } = await openpgp.verify({ message: request.message, verificationKeys, expectSigned: true });
    await signatures[0]!.verified;
  } catch {
    return { code: 'bad_signature', message: 'the request is not signed by a key registered for this clientId' };
  }
  return undefined;
}

/** Why a signed request is refused. */
export interface SignatureProblem {
  code: 'request_expired' | 'unknown_client_key' | 'bad_signature';
  message: string;
}

/** Reads a public key for registration; refuses private keys and anything unreadable. */
export async function readPublicKey(armoredKey: string): Promise<{ fingerprint: string; armored: string }> {
  let key: openpgp.Key;
  try {
    key = await openpgp.readKey({ armoredKey });
  } catch (err) {
    throw new AppError(400, 'invalid_public_key', `not an armored OpenPGP public key: ${(err as Error).message.split('\n')[0]!.slice(0, 200)}`);
  }
  if (key.isPrivate()) {
    throw new AppError(400, 'private_key_given', 'that is a private key: register the public key only (gpg --armor --export)');
  }
  return { fingerprint: key.getFingerprint(), armored: key.armor() };
}

/** Signs a request's JSON (with `ts` set to now) as a clear-signed message, for clients. */
export async function signRequest(payload: Record<string, unknown>, privateKey: openpgp.PrivateKey, now = Date.now()): Promise<string> {
  const message = await openpgp.createCleartextMessage({ text: JSON.stringify({ ...payload, ts: now }) });
  return openpgp.sign({ message, signingKeys: privateKey });
}
