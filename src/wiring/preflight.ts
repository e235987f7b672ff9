import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Config } from '../../config/settings.ts';
import { ConfigError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import { compileCidrs, type IpRange } from '../lib/ip.ts';
import { planResolvers, type ResolverPlan } from '../resolvers/loader.ts';
import { crmOptionsSchema } from '../resolvers/crm.ts';
import { rusOptionsSchema } from '../resolvers/rus.ts';
import { loadKeyRing, type RingKey } from '../lib/key-ring.ts';
import { algorithmOf, trustKeys, type TrustedKey } from '../domain/licence.ts';

/** The built-in resolvers and their options schemas (`wiring/check.ts` builds each of them). */
export const BUILTIN_RESOLVER_OPTIONS = { postgres: undefined, crm: crmOptionsSchema, rus: rusOptionsSchema } as const;

/** Everything start-up reads from settings and files, read and checked before anything opens. */
export interface Preflight {
  tls: { cert: Buffer; key: Buffer } | undefined;
  trustedProxies: IpRange[];
  allowedCallers: IpRange[];
  resolvers: ResolverPlan[];
  ses: {
    signingKeys: RingKey[];
    decryptionKeys: RingKey[];
    requireEncrypted: boolean;
    mintSigningKey: RingKey | undefined;
    mintEncryptionKey: RingKey | undefined;
  };
  /** The vendor keys licences are verified with (ENTGATE_LICENCE_PUBLIC_KEYS). */
  licenceKeys: TrustedKey[];
}

/**
 * Checks every setting that can be wrong and reads every file start-up needs (TLS pair, SES
 * key rings, resolver options and plugin modules), before the database is opened or a port
 * bound: a refused start has nothing to undo, and says why at once. Warns about settings that
 * are allowed but weak.
 */
export async function preflight(config: Config, logger: Logger): Promise<Preflight> {
  const tls = readTls(config);
  const ses = await sesKeys(config);
  const resolvers = await planResolvers(config, logger, BUILTIN_RESOLVER_OPTIONS);
  const licenceKeys = await licenceTrust(config);
  warn(config, logger, ses.signingKeys.length);
  return {
    licenceKeys,
    tls,
    trustedProxies: compileCidrs(config.trustedProxies),
    allowedCallers: compileCidrs(config.checkAllowedCallers),
    resolvers,
    ses,
  };
}

function readTls(config: Config): Preflight['tls'] {
  if (config.tlsCertFile === undefined && config.tlsKeyFile === undefined) return undefined;
  if (config.tlsCertFile === undefined || config.tlsKeyFile === undefined) {
    throw new ConfigError('invalid configuration: TLS_CERT_FILE and TLS_KEY_FILE go together');
  }
  const read = (setting: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError(`invalid configuration: ${setting}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const pair = { cert: read('TLS_CERT_FILE', config.tlsCertFile), key: read('TLS_KEY_FILE', config.tlsKeyFile) };
  try {
    // Parses both and checks that the key is the certificate's, as the HTTPS server would.
    createSecureContext({ ...pair, minVersion: 'TLSv1.2' });
  } catch (err) {
    throw new ConfigError(`invalid configuration: TLS_CERT_FILE / TLS_KEY_FILE: ${(err as Error).message}`);
  }
  return pair;
}

async function sesKeys(config: Config): Promise<Preflight['ses']> {
  const signingKeys = await loadKeyRing(config.sesSigningKeys, 'public', 'ENTGATE_SES_SIGNING_KEYS');
  const decryptionKeys = await loadKeyRing(config.sesDecryptionKeys, 'private', 'ENTGATE_SES_DECRYPTION_KEYS');
  const one = async (path: string | undefined, kind: 'public' | 'private', setting: string) =>
    path ? (await loadKeyRing([path], kind, setting))[0] : undefined;
  return {
    signingKeys,
    decryptionKeys,
    requireEncrypted: config.sesRequireEncrypted === 'auto' ? decryptionKeys.length > 0 : config.sesRequireEncrypted === 'true',
    mintSigningKey: await one(config.sesMintSigningKey, 'private', 'ENTGATE_SES_MINT_SIGNING_KEY'),
    mintEncryptionKey: await one(config.sesMintEncryptionKey, 'public', 'ENTGATE_SES_MINT_ENCRYPTION_KEY'),
  };
}

async function licenceTrust(config: Config): Promise<TrustedKey[]> {
  const ring = await loadKeyRing(config.licencePublicKeys, 'public', 'ENTGATE_LICENCE_PUBLIC_KEYS');
  for (const k of ring) {
    try {
      algorithmOf(k.key);
    } catch (err) {
      throw new ConfigError(`ENTGATE_LICENCE_PUBLIC_KEYS: ${k.source}: ${(err as Error).message}`);
    }
  }
  return trustKeys(ring.map((k) => k.key));
}

function warn(config: Config, logger: Logger, signingKeys: number): void {
  if (config.keySecret === undefined) {
    logger.warn(
      'ENTGATE_KEY_SECRET is not set: virtual keys are hashed with a secret kept in the database. ' +
        'A secret held outside the database (a secret store, the environment) is stronger: whoever reads the database cannot then test guesses offline.',
    );
  }
  if (config.adminToken === undefined) logger.warn('ENTGATE_ADMIN_TOKEN is not set: the admin API accepts only API credentials created earlier (none at first start)');
  if (config.guessBudget === 0) logger.warn('ENTGATE_GUESS_BUDGET=0: nothing limits how many virtual keys one address may try');
  if (config.checkAllowedCallers.some((c) => c === '0.0.0.0/0' || c === '::/0')) {
    logger.warn(
      { allowedCallers: config.checkAllowedCallers },
      'ENTGATE_CHECK_ALLOWED_CALLERS lets any address ask for entitlement checks: real keys go to whoever guesses a virtual key. List your rUS hosts instead.',
    );
  }
  if (config.sesRequireSigned && signingKeys === 0) {
    logger.warn('ENTGATE_SES_SIGNING_KEYS is not set: every software entitlement token is denied');
  } else if (config.tlsCertFile === undefined && !config.sesAllowHttp) {
    logger.warn(
      'TLS_CERT_FILE is not set: software entitlement tokens are accepted on plain HTTP, readable on the way. ' +
        'Serve HTTPS (TLS_CERT_FILE, TLS_KEY_FILE), or set ENTGATE_SES_ALLOW_HTTP=true if TLS ends in front of entgate.',
    );
  }
}
