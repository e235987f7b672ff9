import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import request from 'supertest';
import { serviceFixture, AUTH } from '../helpers/service.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('who may call the check', () => {
  const closed = serviceFixture({ ENTGATE_CHECK_ALLOWED_CALLERS: '10.0.0.0/8' });

  it('refuses a caller outside the allow-list with 403, records it, and leaves the rest of the API alone', async () => {
    const api = () => request(closed.svc.server);
    const res = await api().get('/?server=rm.example.com;key=anything');
    assert.equal(res.status, 403);
    assert.equal(res.text, 'this address may not ask for entitlement checks\n');
    assert.equal((await api().get('/rus/check?server=rm.example.com;key=anything')).status, 403);
    assert.equal((await api().get('/admin/v1/entitlements').set(AUTH)).status, 200);
    let events: { reason: string }[] = [];
    for (let i = 0; i < 50 && events.length < 2; i++) {
      await sleep(20);
      events = (await api().get('/admin/v1/audit?decision=invalid').set(AUTH)).body.items;
    }
    assert.deepEqual(events.map((e) => e.reason), ['caller_not_allowed', 'caller_not_allowed']);
  });
});

describe('who may call the check, behind a trusted proxy', () => {
  const proxied = serviceFixture({ ENTGATE_CHECK_ALLOWED_CALLERS: '10.1.0.0/16', ENTGATE_TRUSTED_PROXIES: '127.0.0.1,::1' });

  it('takes the caller from X-Forwarded-For only because the peer is a trusted proxy', async () => {
    const api = () => request(proxied.svc.server);
    assert.equal((await api().get('/?server=rm.example.com;key=anything').set('X-Forwarded-For', '10.1.2.3')).status, 404, 'allowed: an unknown key');
    assert.equal((await api().get('/?server=rm.example.com;key=anything').set('X-Forwarded-For', '8.8.8.8')).status, 403);
    assert.equal((await api().get('/?server=rm.example.com;key=anything').set('X-Forwarded-For', '10.1.2.3, 8.8.8.8')).status, 403, 'the proxy appended the real client');
    assert.equal((await api().get('/?server=rm.example.com;key=anything')).status, 403, 'the proxy itself is not a rUS host');
  });
});

describe('the concurrency cap', () => {
  const capped = serviceFixture({ ENTGATE_MAX_CONCURRENT_REQUESTS: '2' });

  it('answers a fast 503 past a door\'s cap, to that door only, and serves again once requests end', async () => {
    const { port } = new URL(capped.svc.url);
    // Two slow clients: headers promise a body that never comes.
    const slow: Socket[] = [];
    for (let i = 0; i < 2; i++) {
      const s = connect(Number(port), '127.0.0.1');
      await new Promise((r) => s.once('connect', r));
      s.write('POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"po');
      slow.push(s);
    }
    await sleep(100);
    const started = Date.now();
    const busy = await fetch(`${capped.svc.url}/v1/leases`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
    assert.equal(busy.status, 503);
    assert.equal(busy.headers.get('retry-after'), '1');
    assert.ok(Date.now() - started < 2000, 'answered at once');
    // Other doors have budgets of their own.
    assert.equal((await fetch(`${capped.svc.url}/healthz`)).status, 200);
    assert.equal((await fetch(`${capped.svc.url}/?server=rm.example.com;key=anything`)).status, 404);
    for (const s of slow) s.destroy();
    await sleep(100);
    assert.equal((await fetch(`${capped.svc.url}/v1/leases`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' })).status, 400);
  });
});
