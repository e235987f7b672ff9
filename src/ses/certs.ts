import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';

/**
 * Certificates for local work, made with node's own key generation and node-forge's X.509
 * builder: a TLS chain for HTTPS (root CA -> intermediate -> server for localhost), and the
 * key pairs that sign and encrypt SES tokens.
 */

interface Issued {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
  keyPem: string;
}

const DAY = 86_400_000;

function keyPair(): { publicKey: forge.pki.rsa.PublicKey; privateKey: forge.pki.rsa.PrivateKey; keyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return {
    publicKey: forge.pki.publicKeyFromPem(publicKey) as forge.pki.rsa.PublicKey,
    privateKey: forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey,
    keyPem: privateKey,
  };
}

function issue(
  commonName: string,
  days: number,
  extensions: object[],
  issuer?: Issued,
): Issued {
  const pair = keyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = pair.publicKey;
  // A positive serial: 0x01 then 15 random bytes.
  cert.serialNumber = `01${randomBytes(15).toString('hex')}`;
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + days * DAY);
  const subject = [{ name: 'commonName', value: commonName }, { name: 'organizationName', value: 'entgate development' }];
  cert.setSubject(subject);
  cert.setIssuer(issuer ? issuer.cert.subject.attributes : subject);
  cert.setExtensions([
    ...extensions,
    { name: 'subjectKeyIdentifier' },
    ...(issuer ? [{ name: 'authorityKeyIdentifier', keyIdentifier: issuer.cert.generateSubjectKeyIdentifier().getBytes() }] : []),
  ]);
  cert.sign(issuer?.key ?? pair.privateKey, forge.md.sha256.create());
  return { cert, key: pair.privateKey, keyPem: pair.keyPem };
}

const pem = (c: Issued) => forge.pki.certificateToPem(c.cert);

export interface DevCertificates {
  rootFile: string;
  intermediateFile: string;
  /** The server certificate followed by the intermediate: what TLS_CERT_FILE takes. */
  chainFile: string;
  keyFile: string;
  intermediateThumbprint: string;
  intermediateCommonName: string;
}

/**
 * A root CA, an intermediate and a server certificate for localhost, 127.0.0.1 and ::1, as
 * `entgate dev-certs` writes them. The SES client pins the intermediate: its SHA-1 thumbprint
 * and common name are what a vendor passes to the client's `AddSslCertificate`.
 */
export function createDevCertificates(dir: string): DevCertificates {
  mkdirSync(dir, { recursive: true });
  const ca = [
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ];
  const root = issue('entgate development root CA', 3650, ca);
  const intermediateCommonName = 'entgate development intermediate CA';
  const intermediate = issue(
    intermediateCommonName,
    1825,
    [
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    ],
    root,
  );
  const server = issue(
    'localhost',
    397,
    [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
    intermediate,
  );
  const files = {
    rootFile: join(dir, 'root-ca.pem'),
    intermediateFile: join(dir, 'intermediate-ca.pem'),
    chainFile: join(dir, 'server-chain.pem'),
    keyFile: join(dir, 'server.key'),
  };
  writeFileSync(files.rootFile, pem(root));
  writeFileSync(files.intermediateFile, pem(intermediate));
  writeFileSync(files.chainFile, pem(server) + pem(intermediate));
  writeFileSync(files.keyFile, server.keyPem, { mode: 0o600 });
  return { ...files, intermediateThumbprint: sha1Thumbprint(pem(intermediate)), intermediateCommonName };
}

/** SHA-1 thumbprint as Windows and the SES client show it: upper-case hex without separators. */
export function sha1Thumbprint(certPem: string): string {
  return new X509Certificate(certPem).fingerprint.replaceAll(':', '').toUpperCase();
}

export interface TokenKeyFiles {
  /** Signing certificate: what the server verifies with (ENTGATE_SES_SIGNING_KEYS). */
  signingCert: string;
  /** Signing private key with its certificate: what `token generate --sign` takes. */
  signingKey: string;
  /** Encryption certificate: what `token generate --encrypt` takes. */
  encryptionCert: string;
  /** Encryption private key with its certificate: what the server decrypts with (ENTGATE_SES_DECRYPTION_KEYS). */
  encryptionKey: string;
}

/** Two self-signed key pairs, one to sign tokens and one to encrypt them, as `entgate keys generate` writes them. */
export function createTokenKeys(dir: string): TokenKeyFiles {
  mkdirSync(dir, { recursive: true });
  const usage = (purpose: 'sign' | 'encrypt') => [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', ...(purpose === 'sign' ? { digitalSignature: true } : { keyEncipherment: true }), critical: true },
  ];
  const signing = issue('entgate token signing', 730, usage('sign'));
  const encryption = issue('entgate token encryption', 730, usage('encrypt'));
  const files: TokenKeyFiles = {
    signingCert: join(dir, 'signing-cert.pem'),
    signingKey: join(dir, 'signing-key.pem'),
    encryptionCert: join(dir, 'encryption-cert.pem'),
    encryptionKey: join(dir, 'encryption-key.pem'),
  };
  writeFileSync(files.signingCert, pem(signing));
  writeFileSync(files.signingKey, signing.keyPem + pem(signing), { mode: 0o600 });
  writeFileSync(files.encryptionCert, pem(encryption));
  writeFileSync(files.encryptionKey, encryption.keyPem + pem(encryption), { mode: 0o600 });
  return files;
}
