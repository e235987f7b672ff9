import { writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { Option, type Command } from 'commander';
import { parseIp } from '../lib/ip.ts';
import { SDK_DEFAULT_AUDIENCE, SDK_DEFAULT_ISSUER } from '../ses/defaults.ts';
import { deprecatedGroup } from './deprecated.ts';
import { loadKeys, readText } from './files.ts';
import { LICENSING_ALGORITHMS, writeLicensingKeys, type LicensingAlgorithm } from './licence-commands.ts';
import { CliError, EXIT_USAGE } from './output.ts';

// The crypto (jose; node-forge, for certificates only) is loaded by the commands that use it,
// each loading only its own, so that the rest of the CLI starts fast.

/** `entgate ses-token verify` exits with this when the token does not entitle (0 when it does). */
export const EXIT_DENIED = 3;

const list = (value: string) =>
  value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
const collect = (value: string, previous: string[] = []) => [...previous, value];

function time(flag: string) {
  return (value: string) => {
    const ms = Date.parse(value);
    if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(ms)) throw new CliError(`${flag} must be an ISO-8601 time, not '${value}'`);
    return new Date(ms);
  };
}

/** The machine's own addresses, as `sestest generate` defaults to. */
function machineAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((i): i is NonNullable<typeof i> => i !== undefined)
    .map((i) => i.address);
}

function readToken(token: string | undefined, file: string | undefined): string {
  if ((token === undefined) === (file === undefined)) throw new CliError('give the token, or --token-file <path>');
  if (token !== undefined) return token.trim();
  return readText(file!).trim();
}

/**
 * `entgate ses-token mint|verify`, `entgate keys generate`, `entgate dev-certs`: the sestest jobs;
 * and `entgate token generate|verify`, the deprecated spelling of `ses-token`.
 */
export function addSesTokenCommands(program: Command): void {
  addGroup(program.command('ses-token').description('software entitlement tokens (Azure Batch SES): mint and verify, offline'), 'mint');
  addGroup(deprecatedGroup(program, 'token', 'ses-token'), 'generate');

  program
    .command('keys')
    .description('key pairs: for software entitlement tokens, or (--licensing) for signing licences')
    .command('generate [dir]')
    .description(
      'write a token signing and a token encryption key pair to <dir>, each with a self-signed certificate; ' +
        'or, with --licensing <dir> instead, the vendor\'s licence signing key pair',
    )
    .option('--licensing <dir>', 'write licensing-private.pem (PKCS#8, mode 0600) and licensing-public.pem (SPKI) here; never overwrites')
    .addOption(new Option('--algorithm <name>', 'with --licensing: the key type (default Ed25519; ES256: a P-256 key)').choices(LICENSING_ALGORITHMS))
    .action(async (dir: string | undefined, o: { licensing?: string; algorithm?: LicensingAlgorithm }) => {
      if ((dir === undefined) === (o.licensing === undefined)) {
        throw new CliError('give either <dir> (software entitlement token keys) or --licensing <dir> (licence signing keys)', EXIT_USAGE);
      }
      if (o.licensing !== undefined) return writeLicensingKeys(o.licensing, o.algorithm ?? 'Ed25519');
      if (o.algorithm !== undefined) throw new CliError('--algorithm goes with --licensing', EXIT_USAGE);
      const { createTokenKeys } = await import('../ses/certs.ts');
      const f = createTokenKeys(dir!);
      process.stdout.write(
        `token signing:    ${f.signingKey} (ses-token mint --sign), ${f.signingCert} (ENTGATE_SES_SIGNING_KEYS)\n` +
          `token encryption: ${f.encryptionCert} (ses-token mint --encrypt), ${f.encryptionKey} (ENTGATE_SES_DECRYPTION_KEYS)\n`,
      );
    });

  program
    .command('dev-certs <dir>')
    .description('write a local root CA, an intermediate and a server certificate for localhost/127.0.0.1, for HTTPS tests')
    .action(async (dir: string) => {
      const { createDevCertificates } = await import('../ses/certs.ts');
      const c = createDevCertificates(dir);
      process.stdout.write(
        `TLS_CERT_FILE=${c.chainFile}\nTLS_KEY_FILE=${c.keyFile}\n` +
          `root CA (trust it in the client): ${c.rootFile}\n` +
          `intermediate to pin: thumbprint ${c.intermediateThumbprint}, common name "${c.intermediateCommonName}"\n`,
      );
    });
}

/** The mint and verify commands of a group; `mint` names the first (`generate` under the deprecated `token`). */
function addGroup(group: Command, mint: 'mint' | 'generate'): void {
  group
    .command(mint)
    .description('mint a token, as sestest generate does; prints it (or writes --token-file)')
    .requiredOption('--application-id <ids>', 'application ids the token entitles, comma-separated', list)
    .option('--address <ips>', "addresses it may be used from, comma-separated (default: this machine's)", list)
    .option('--not-before <time>', 'ISO-8601 (default: now)', time('--not-before'))
    .option('--not-after <time>', 'ISO-8601 (default: now + 7 days)', time('--not-after'))
    .option('--vmid <id>', 'the virtual machine id claim')
    .option('--sign <file>', 'PEM private key (with its certificate, for kid/x5t) to sign with; unsigned when left out')
    .option('--encrypt <file>', 'PEM certificate or public key to encrypt to; not encrypted when left out')
    .option('--audience <aud>', 'aud claim', SDK_DEFAULT_AUDIENCE)
    .option('--issuer <iss>', 'iss claim', SDK_DEFAULT_ISSUER)
    .option('--token-file <path>', 'write the token here instead of printing it')
    .action(async (o: {
      applicationId: string[];
      address?: string[];
      notBefore?: Date;
      notAfter?: Date;
      vmid?: string;
      sign?: string;
      encrypt?: string;
      audience: string;
      issuer: string;
      tokenFile?: string;
    }) => {
      if (o.applicationId.length === 0) throw new CliError('--application-id names no application');
      const addresses = o.address ?? machineAddresses();
      const bad = addresses.find((a) => parseIp(a) === undefined);
      if (bad !== undefined) throw new CliError(`--address: '${bad}' is not an IP address`);
      const notBefore = o.notBefore ?? new Date();
      const notAfter = o.notAfter ?? new Date(notBefore.getTime() + 7 * 86_400_000);
      if (notAfter <= notBefore) throw new CliError('--not-after must be later than --not-before');
      const signingKey = o.sign ? (await loadKeys([o.sign], 'private', '--sign'))[0] : undefined;
      const encryptionKey = o.encrypt ? (await loadKeys([o.encrypt], 'public', '--encrypt'))[0] : undefined;
      const { mintToken } = await import('../ses/minter.ts');
      const minted = await mintToken({
        applications: o.applicationId,
        addresses,
        notBefore,
        notAfter,
        vmid: o.vmid,
        issuer: o.issuer,
        audience: o.audience,
        signingKey,
        encryptionKey,
      });
      if (o.tokenFile) writeFileSync(o.tokenFile, `${minted}\n`, { mode: 0o600 });
      else process.stdout.write(`${minted}\n`);
    });

  group
    .command('verify [token]')
    .description(`check a token as the server would; prints the decision (exit 0 entitled, ${EXIT_DENIED} denied)`)
    .option('--token-file <path>', 'read the token from this file')
    .requiredOption('--application-id <id>', 'the application asking')
    .requiredOption('--address <ip>', 'the address it asks from')
    .option('--signing-key <file>', 'certificate, public key or JWKS the token is signed with (repeatable)', collect)
    .option('--decryption-key <file>', 'private key (PEM or JWKS) the token is encrypted to (repeatable)', collect)
    .option('--audience <aud>', 'expected aud', SDK_DEFAULT_AUDIENCE)
    .option('--issuer <iss>', 'expected iss', SDK_DEFAULT_ISSUER)
    .option('--allow-unsigned', 'accept a token without a signature')
    .action(async (given: string | undefined, o: {
      tokenFile?: string;
      applicationId: string;
      address: string;
      signingKey?: string[];
      decryptionKey?: string[];
      audience: string;
      issuer: string;
      allowUnsigned?: boolean;
    }) => {
      const text = readToken(given, o.tokenFile);
      const caller = parseIp(o.address);
      if (!caller) throw new CliError(`--address: '${o.address}' is not an IP address`);
      const { decideGrant, TokenVerifier } = await import('../ses/verifier.ts');
      const decryptionKeys = await loadKeys(o.decryptionKey ?? [], 'private', '--decryption-key');
      const verifier = new TokenVerifier({
        issuer: o.issuer,
        audience: o.audience,
        signingKeys: await loadKeys(o.signingKey ?? [], 'public', '--signing-key'),
        decryptionKeys,
        requireSigned: !o.allowUnsigned,
        requireEncrypted: decryptionKeys.length > 0,
        clockSkewSeconds: 60,
        cacheMaxEntries: 0,
      });
      const result = await verifier.verify(text);
      if (!result.ok) {
        process.stdout.write(`denied: ${result.reason}\n`);
        process.exitCode = EXIT_DENIED;
        return;
      }
      const grant = decideGrant(result.claims, o.applicationId, caller);
      if (!grant.granted) {
        process.stdout.write(`denied: ${grant.reason}\n`);
        process.exitCode = EXIT_DENIED;
        return;
      }
      const c = result.claims;
      process.stdout.write(
        `entitled: token ${c.id} grants ${o.applicationId} from ${caller.toString()} until ${c.expires.toISOString()}` +
          `${c.vmid !== null ? ` (vmid ${c.vmid})` : ''}\n`,
      );
    });
}
