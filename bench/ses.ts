/**
 * The SES scenarios of `npm run bench` (also runnable alone: `node --import tsx bench/ses.ts`):
 * approve requests per second with fresh tokens (each verified from scratch: RSA-OAEP decrypt
 * plus RS512 verify) and with repeated tokens (the verified-token cache), against the crypto
 * limit measured in the same run: one jose decrypt+verify of the same token in a loop, in this
 * process, one at a time. Every answer must be 200.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { compactDecrypt, jwtVerify } from 'jose';
import { mintToken, SDK_DEFAULT_AUDIENCE, SDK_DEFAULT_ISSUER } from '../src/ses/minter.ts';
import { LatencyHistogram } from './lib/load.ts';
import { startServer, type ServerProcess } from './lib/processes.ts';
import { runStandalone } from './lib/standalone.ts';
import { Databases } from './lib/database.ts';

export interface SesBenchResult {
  cryptoPerSecond: number;
  fresh: Run;
  repeated: Run;
  markdown: string;
  valid: boolean;
}

interface Run {
  name: string;
  rps: number;
  p50: number;
  p99: number;
  responses: number;
  statuses: Record<string, number>;
  valid: boolean;
}

const APPROVE_PATH = '/softwareEntitlements?api-version=2018-08-01.7.0';

function drivePost(name: string, url: string, connections: number, bodies: () => string, opts: { amount?: number; duration?: number }): Promise<Run> {
  const histogram = new LatencyHistogram();
  const statuses: Record<string, number> = {};
  let responses = 0;
  let wrong = 0;
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        connections,
        ...(opts.amount !== undefined ? { amount: opts.amount } : { duration: opts.duration ?? 10 }),
        timeout: 20,
        requests: [
          {
            method: 'POST',
            path: APPROVE_PATH,
            headers: { 'content-type': 'application/json; odata=minimalmetadata' },
            setupRequest: (req: autocannon.Request) => ({ ...req, body: bodies() }),
          },
        ],
      },
      (err, result) => {
        if (err) return reject(err instanceof Error ? err : new Error(String(err)));
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        resolve({
          name,
          rps: responses / seconds,
          p50: histogram.percentile(50),
          p99: histogram.percentile(99),
          responses,
          statuses,
          valid: wrong === 0 && result.errors + result.timeouts === 0 && responses > 0,
        });
      },
    );
    instance.on('response', (_c: unknown, status: number, _b: number, ms: number) => {
      responses++;
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status !== 200) wrong++;
      histogram.record(ms);
    });
  });
}

/** Runs the SES scenarios; `seconds` bounds each measured phase. */
export async function sesScenarios(seconds: number, adminUrl: string): Promise<SesBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'entgate-bench-ses-'));
  const databases = new Databases(adminUrl);
  let server: ServerProcess | undefined;
  try {
    const sign = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const enc = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(dir, 'sign.pem'), sign.publicKey.export({ format: 'pem', type: 'spki' }));
    writeFileSync(join(dir, 'enc.pem'), enc.privateKey.export({ format: 'pem', type: 'pkcs8' }));
    const mint = () =>
      mintToken({
        applications: ['contosoapp'],
        addresses: ['127.0.0.1'],
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 3_600_000),
        issuer: SDK_DEFAULT_ISSUER,
        audience: SDK_DEFAULT_AUDIENCE,
        signingKey: { key: sign.privateKey, kids: [], source: 'bench' },
        encryptionKey: { key: enc.publicKey, kids: [], source: 'bench' },
      });

    // The crypto limit: what the server must do for a fresh token, nothing else, one at a time.
    const sample = await mint();
    const cryptoOnce = async () => {
      const { plaintext } = await compactDecrypt(sample, enc.privateKey, { keyManagementAlgorithms: ['RSA-OAEP'] });
      await jwtVerify(new TextDecoder().decode(plaintext), sign.publicKey, {
        issuer: SDK_DEFAULT_ISSUER,
        audience: SDK_DEFAULT_AUDIENCE,
        algorithms: ['RS512'],
      });
    };
    for (let i = 0; i < 50; i++) await cryptoOnce();
    let ops = 0;
    const cryptoStarted = process.hrtime.bigint();
    const cryptoEnd = Date.now() + Math.min(seconds, 5) * 1000;
    while (Date.now() < cryptoEnd) {
      await cryptoOnce();
      ops++;
    }
    const cryptoPerSecond = ops / (Number(process.hrtime.bigint() - cryptoStarted) / 1e9);

    // Enough fresh tokens for the measured phase at the crypto limit, plus the warm-up.
    const freshCount = Math.ceil(cryptoPerSecond * (seconds + 1) * 1.2) + 200;
    process.stdout.write(`ses: crypto limit ${cryptoPerSecond.toFixed(0)}/s; minting ${freshCount} tokens...\n`);
    const tokens: string[] = [];
    for (let i = 0; i < freshCount; i++) tokens.push(await mint());
    const repeatedTokens = tokens.slice(0, 100);

    server = await startServer(
      'entgate (ses)',
      ['src/cli/entgate-dev.js', 'serve'],
      {
        DATA_DIR: join(dir, 'data'),
        DATABASE_URL: await databases.create(),
        LOG_LEVEL: 'warn',
        ENTGATE_SES_SIGNING_KEYS: join(dir, 'sign.pem'),
        ENTGATE_SES_DECRYPTION_KEYS: join(dir, 'enc.pem'),
      },
      '/readyz',
    );
    let next = 0;
    const freshBody = () => JSON.stringify({ applicationId: 'contosoapp', token: tokens[next++ % tokens.length] });
    let r = 0;
    const repeatedBody = () => JSON.stringify({ applicationId: 'contosoapp', token: repeatedTokens[r++ % repeatedTokens.length] });

    // Warm-up on tokens that the fresh run will not use again.
    next = tokens.length - 150;
    await drivePost('warm-up', server.url, 4, freshBody, { amount: 150 });
    next = 0;
    const fresh = await drivePost('fresh tokens', server.url, 4, freshBody, { amount: Math.min(tokens.length - 150, Math.ceil(cryptoPerSecond * seconds)) });
    const repeated = await drivePost('repeated tokens (100, cached)', server.url, 50, repeatedBody, { duration: seconds });

    const freshRatio = fresh.rps / cryptoPerSecond;
    const repeatedRatio = repeated.rps / fresh.rps;
    const valid = fresh.valid && repeated.valid;
    const row = (name: string, run: Run, ratio: string, target: string, pass: boolean) =>
      `| ${name} | ${run.rps.toFixed(0)} | ${run.p50.toFixed(2)} | ${run.p99.toFixed(2)} | ${ratio} | ${target} | ${run.valid ? (pass ? 'PASS' : 'FAIL') : 'INVALID'} |`;
    const markdown = [
      'Software entitlement tokens (`POST /softwareEntitlements`, api-version 2018-08-01.7.0, RSA-OAEP + A256CBC-HS512 around RS512, 2048-bit keys; one entgate process on PostgreSQL):',
      '',
      '| Scenario | req/s | p50 ms | p99 ms | ratio | target | result |',
      '|---|---:|---:|---:|---:|---|---|',
      `| crypto limit: jose decrypt + verify of one token, in a loop, one at a time | ${cryptoPerSecond.toFixed(0)} | | | 1.000 | | |`,
      row(`fresh tokens (each new, 4 connections, ${fresh.responses} requests)`, fresh, `${freshRatio.toFixed(3)} of crypto`, '≥ 0.70 of the crypto limit', freshRatio >= 0.7),
      row('repeated tokens (100 tokens cycled, 50 connections)', repeated, `${repeatedRatio.toFixed(1)}× fresh`, '≥ 5× fresh', repeatedRatio >= 5),
      '',
    ].join('\n');
    return { cryptoPerSecond, fresh, repeated, markdown, valid };
  } finally {
    await server?.stop();
    await databases.dropAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

runStandalone(import.meta.url, sesScenarios);
