import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import express from 'express';
import { pino } from 'pino';
import request from 'supertest';
import { errorHandler } from '../../../src/http/app.ts';
import { AppError } from '../../../src/lib/errors.ts';
import { databaseFault, DatabaseUnavailableError } from '../../../src/lib/db-faults.ts';
import { openDatabase, type Database } from '../../../src/store/db.ts';
import { recordingLogger } from '../../helpers/service.ts';

/** A TCP server on loopback that does `behaviour` with each connection: a database that cannot answer. */
async function tcpServer(behaviour: (socket: Socket) => void): Promise<{ port: number; server: Server; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    behaviour(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, server, sockets };
}

async function failureOf(db: Database): Promise<unknown> {
  try {
    await db.knex.raw('select 1');
  } catch (err) {
    return err;
  } finally {
    await db.close();
  }
  assert.fail('expected the query to fail');
}

describe('databaseFault: what the real driver and pool say when the database cannot answer', () => {
  const servers: Server[] = [];
  const sockets: Set<Socket>[] = [];
  const open = (port: number) =>
    openDatabase({ databaseUrl: `postgres://u@127.0.0.1:${port}/db`, dataDir: '/nonexistent', poolMax: 1, connectTimeoutMs: 300, queryTimeoutMs: 300, logger: pino({ level: 'silent' }) });
  after(() => {
    for (const set of sockets) for (const s of set) s.destroy();
    for (const s of servers) s.close();
  });

  it('when nothing listens, then the refused connection is a fault', async () => {
    const { port, server } = await tcpServer(() => {});
    await new Promise<void>((r) => server.close(() => r()));
    assert.equal(databaseFault(await failureOf(await open(port))), 'ECONNREFUSED');
  });

  it('when the server accepts and never answers (frozen), then the connect or acquire timeout is a fault', async () => {
    const silent = await tcpServer(() => {});
    servers.push(silent.server);
    sockets.push(silent.sockets);
    assert.ok(databaseFault(await failureOf(await open(silent.port))));
  });

  it('when the server cuts the connection, then that is a fault', async () => {
    const cutting = await tcpServer((s) => s.destroy());
    servers.push(cutting.server);
    assert.ok(databaseFault(await failureOf(await open(cutting.port))));
  });

  it('when PostgreSQL says it is shutting down, starting, out of connections or cancelled the statement, then those are faults', () => {
    for (const code of ['57P01', '57P02', '57P03', '53300', '08006', '57014']) assert.equal(databaseFault({ code, message: 'x' }), code);
  });

  it('when the request itself is wrong (unique violation, bad input, syntax), then it is not a fault', () => {
    for (const code of ['23505', '22P02', '42601', '40001']) assert.equal(databaseFault({ code, message: 'x' }), undefined);
    assert.equal(databaseFault(new Error('boom')), undefined);
    assert.equal(databaseFault(undefined), undefined);
    assert.equal(databaseFault('ECONNREFUSED'), undefined);
  });

  it("when knex puts the statement before the driver's words, then the fault is the driver's words only (no SQL, no bindings)", () => {
    const err = new Error("select * from admin_tokens where token_hash = 'secret-hash' - Query read timeout");
    assert.equal(databaseFault(err), 'Query read timeout');
    assert.equal(databaseFault(new Error('Connection terminated unexpectedly')), 'Connection terminated unexpectedly');
  });

  it('when the fault is wrapped (cause, AggregateError of several addresses), then it is found', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED ::1:5432'), { code: 'ECONNREFUSED' });
    assert.equal(databaseFault(new AggregateError([new Error('other'), refused])), 'ECONNREFUSED');
    assert.equal(databaseFault(new Error('outer', { cause: refused })), 'ECONNREFUSED');
  });
});

describe('the express error handler: a database fault is 503 database_unavailable with Retry-After', () => {
  const recording = recordingLogger();
  const app = express();
  let next: unknown;
  app.get('/', () => {
    throw next;
  });
  app.use(errorHandler(recording.logger));
  const answer = async (err: unknown) => {
    next = err;
    return request(app).get('/');
  };

  it('when a handler fails because the database cannot answer, then 503, a stable code, Retry-After and nothing of the SQL', async () => {
    const res = await answer(new Error("insert into leases values ('lease-secret') - Query read timeout"));
    assert.equal(res.status, 503);
    assert.equal(res.body.code, 'database_unavailable');
    assert.match(res.headers['retry-after'] ?? '', /^[1-9]\d*$/);
    assert.doesNotMatch(JSON.stringify(res.body), /lease-secret|insert/);
    assert.doesNotMatch(JSON.stringify(recording.lines()), /lease-secret/);
    assert.ok(recording.lines().some((l) => l.msg === 'database unavailable: answered 503'));
  });

  it('when the pool gives up waiting (KnexTimeoutError), then 503 too', async () => {
    const err = Object.assign(new Error('Knex: Timeout acquiring a connection. The pool is probably full.'), { name: 'KnexTimeoutError' });
    assert.equal((await answer(err)).status, 503);
  });

  it('when a DatabaseUnavailableError is thrown on purpose, then it keeps its header', async () => {
    const res = await answer(new DatabaseUnavailableError(new Error('x')));
    assert.equal(res.status, 503);
    assert.ok(res.headers['retry-after']);
  });

  it('when the error is not a database fault, then 500 internal_error without Retry-After, and AppErrors keep their status', async () => {
    const res = await answer(Object.assign(new Error('duplicate key'), { code: '23505' }));
    assert.equal(res.status, 500);
    assert.equal(res.body.code, 'internal_error');
    assert.equal(res.headers['retry-after'], undefined);
    assert.equal((await answer(new AppError(409, 'pool_exists', 'exists'))).status, 409);
  });
});
