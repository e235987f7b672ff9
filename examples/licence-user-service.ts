// The seed's per-user rule, end to end: a user service whose users are active only while the
// licence allows. A user is created ACTIVE when its `assigned:users` claim succeeds and DISABLED
// when the claim is refused (capacity_exceeded: the licence's users are all taken); deactivating
// a user releases its claim, and activating one claims again. The reports page is open only
// while the licence grants the feature `reports` (checked locally, offline too).
//
//   entgate credential create user-service --scope capacities     # prints ENTGATE_CLIENT_TOKEN
//   ENTGATE_URL=http://127.0.0.1:8080 ENTGATE_CLIENT_TOKEN=egt_... \
//   ENTGATE_LICENCE_PUBLIC_KEY=vendor/licensing-public.pem LICENCE_FILE=/var/lib/users/licence.jwt PORT=3000 \
//   npx tsx examples/licence-user-service.ts
//
//   curl -s -X POST localhost:3000/users -d '{"id":"alice","name":"Alice"}'   # {"id":"alice",...,"state":"active"}
//   curl -s -X POST localhost:3000/users/alice/deactivate                      # frees alice's seat
//
// In your own project: `import { LicenceClient, CapacityExceededError } from 'entgate'`.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { ClaimNotHeldError, LicenceClient, LicenceRequestError } from '../src/index.ts';

const USERS = 'assigned:users';

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    console.error(`set ${name}`);
    process.exit(2);
  }
  return value;
}

const licences = new LicenceClient({
  baseUrl: process.env.ENTGATE_URL ?? 'http://127.0.0.1:8080',
  token: required('ENTGATE_CLIENT_TOKEN'),
  // The vendor's public key: every licence is verified here, whatever entgate says.
  publicKeys: [readFileSync(required('ENTGATE_LICENCE_PUBLIC_KEY'), 'utf8')],
  // Kept up to date here, and read at start: the service starts even when entgate is down.
  file: process.env.LICENCE_FILE ?? 'licence.jwt',
  onError: (err) => console.error(`licence: ${err.message}`),
});
licences.on('licence', (licence, info) => {
  console.error(`licence ${licence.id} for ${licence.tenant}: ${info.status} until ${licence.expiresAt.toISOString()}, ${licences.limit(USERS)} users (from the ${info.source})`);
});
console.error(`licence status at start: ${await licences.start()}`);

interface User {
  id: string;
  name: string;
  state: 'active' | 'disabled';
  /** Why a user is disabled: the refusal's code (capacity_exceeded, licence_expired, ...) or `deactivated`. */
  reason: string | null;
}
const users = new Map<string, User>();

/** Claims a seat for the user: active when granted, disabled when refused. Unreachable entgate: throws, nothing changes. */
async function activate(user: User): Promise<void> {
  try {
    await licences.claim(USERS, user.id, { metadata: { name: user.name } });
    user.state = 'active';
    user.reason = null;
  } catch (err) {
    // A refusal (409 capacity_exceeded, 403 licence_expired, 404 ...) decides; a failure does not.
    if (!(err instanceof LicenceRequestError) || err.status === 0 || err.status >= 500) throw err;
    user.state = 'disabled';
    user.reason = err.code;
  }
}

async function deactivate(user: User): Promise<void> {
  try {
    await licences.release(USERS, user.id);
  } catch (err) {
    if (!(err instanceof ClaimNotHeldError)) throw err;
  }
  user.state = 'disabled';
  user.reason = 'deactivated';
}

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const send = (status: number, body: unknown): void => void res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
  const url = new URL(req.url ?? '/', 'http://localhost');
  const action = /^\/users\/([^/]+)\/(activate|deactivate)$/.exec(url.pathname);
  if (req.method === 'POST' && url.pathname === '/users') {
    let body: { id?: unknown; name?: unknown };
    try {
      body = JSON.parse(await text(req)) as typeof body;
    } catch {
      return send(400, { error: 'send JSON {"id": "...", "name": "..."}' });
    }
    if (typeof body.id !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(body.id)) return send(400, { error: 'id: 1 to 64 of A-Z a-z 0-9 . _ -' });
    if (users.has(body.id)) return send(409, { error: `user ${body.id} exists` });
    const user: User = { id: body.id, name: typeof body.name === 'string' ? body.name : body.id, state: 'disabled', reason: null };
    await activate(user);
    users.set(user.id, user);
    return send(201, user);
  }
  if (req.method === 'POST' && action) {
    const user = users.get(decodeURIComponent(action[1]!));
    if (!user) return send(404, { error: 'no such user' });
    await (action[2] === 'activate' ? activate(user) : deactivate(user));
    return send(200, user);
  }
  if (req.method === 'GET' && url.pathname === '/users') return send(200, [...users.values()]);
  if (req.method === 'GET' && url.pathname === '/reports') {
    if (!licences.hasFeature('reports')) return send(403, { error: `the licence does not grant reports (licence ${licences.status})` });
    return send(200, { active: [...users.values()].filter((u) => u.state === 'active').length, limit: licences.limit(USERS) });
  }
  send(404, { error: 'not found' });
}

function text(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

const server = createServer((req, res) => {
  route(req, res).catch((err: Error) => {
    console.error(`error: ${err.message}`);
    if (!res.headersSent) res.writeHead(503, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: `licensing is unavailable: ${err.message}` }));
  });
});
server.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? '127.0.0.1', () => {
  console.log(`user service listening on http://127.0.0.1:${(server.address() as AddressInfo).port}`);
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    server.close();
    void licences.close();
  });
}
