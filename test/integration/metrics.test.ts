import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { serviceFixture, AUTH } from '../helpers/service.ts';
import { tempDir } from '../helpers/databases.ts';
import { testVendor } from '../helpers/vendor.ts';

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|[Nn][Aa][Nn]|[+-]?[Ii]nf)$/;
// (Prometheus reads special values ignoring case, as Go's ParseFloat does: prom-client writes "Nan".)

/** Parses Prometheus text exposition strictly enough to fail on anything malformed. */
function parse(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = SAMPLE.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    samples.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return samples;
}

describe('metrics', () => {
  const vendor = testVendor(tempDir());
  const fixture = serviceFixture(vendor.env);
  const api = () => request(fixture.svc.server);
  const scrape = async () => {
    const res = await api().get('/metrics');
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'] ?? '', /^text\/plain; version=0\.0\.4/);
    return parse(res.text);
  };

  it('parses as Prometheus text and moves when checks, leases and caches do', async () => {
    const before = await scrape();
    assert.ok(before.has('entgate_process_cpu_user_seconds_total'), 'process metrics');
    const ent = await api().post('/admin/v1/entitlements').set(AUTH).send({ server: 'rm.example.com', key: 'real' });
    await api().post('/admin/v1/virtual-keys').set(AUTH).send({ entitlementId: ent.body.id, key: 'metric-key' }).expect(201);
    await api().get('/?server=rm.example.com;key=metric-key').expect(200);
    await api().get('/?server=rm.example.com;key=metric-key').expect(200);
    await api().get('/?server=rm.example.com;key=nobody').expect(404);
    await api().get('/?key=x').expect(400);
    await api().post('/admin/v1/pools').set(AUTH).send({ name: 'metered', seats: 3, anonymous: true }).expect(201);
    await api().post('/v1/leases').send({ pool: 'metered', clientId: 'a' }).expect(201);
    await api().post('/softwareEntitlements?api-version=2017-05-01.5.0').send({ token: 'a.b.c', applicationId: 'x' });

    const after = await scrape();
    const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);
    assert.equal(delta('entgate_checks_total{decision="granted",reason="none"}'), 2);
    assert.equal(delta('entgate_checks_total{decision="denied",reason="unknown_key"}'), 1);
    assert.equal(delta('entgate_checks_total{decision="invalid",reason="parameter server is required"}'), 1);
    assert.equal(delta('entgate_check_duration_seconds_count{decision="granted"}'), 2);
    assert.ok(delta('entgate_key_cache_hits_total') >= 1);
    assert.ok(delta('entgate_key_cache_misses_total') >= 1);
    assert.equal(after.get('entgate_leases_in_use{pool="metered"}'), 1);
    assert.equal(after.get('entgate_lease_pool_seats{pool="metered"}'), 3);
    assert.equal(delta('entgate_token_requests_total{operation="approve",outcome="invalid"}') + delta('entgate_token_requests_total{operation="approve",outcome="denied"}'), 1);
    assert.ok((after.get('entgate_db_pool_connections{state="free"}') ?? -1) >= 0);
    assert.ok(after.has('entgate_check_events_queued'));
    assert.equal(after.get('entgate_log_lines_dropped_total'), 0);
  });

  it('follows the licence: its expiry, each capacity against its limit, claims by outcome', async () => {
    const expiresAt = new Date(Date.now() + 3_600_000);
    assert.equal((await scrape()).get('entgate_licence_expires_at_seconds'), 0, 'no licence yet');
    const token = await vendor.issue({ features: ['rec'], capacities: { 'assigned:users': 1 }, expiresAt });
    await api().put('/admin/v1/licence').set(AUTH).type('application/jwt').send(token).expect(201);
    await api().post('/v1/capacities/assigned:users/claims').set(AUTH).send({ id: 'alice' }).expect(201);
    await api().post('/v1/capacities/assigned:users/claims').set(AUTH).send({ id: 'alice' }).expect(200);
    await api().post('/v1/capacities/assigned:users/claims').set(AUTH).send({ id: 'bob' }).expect(409);
    const m = await scrape();
    assert.equal(m.get('entgate_licence_expires_at_seconds'), Math.floor(expiresAt.getTime() / 1000));
    assert.equal(m.get('entgate_licence_capacity_limit{capacity="assigned:users"}'), 1);
    assert.equal(m.get('entgate_licence_capacity_in_use{capacity="assigned:users"}'), 1);
    assert.equal(m.get('entgate_licence_capacity_limit{capacity="feature:rec"}'), -1, 'a feature granted without a limit');
    assert.equal(m.get('entgate_capacity_claims_total{kind="assigned",outcome="created"}'), 1);
    assert.equal(m.get('entgate_capacity_claims_total{kind="assigned",outcome="existing"}'), 1);
    assert.equal(m.get('entgate_capacity_claims_total{kind="assigned",outcome="capacity_exceeded"}'), 1);
    assert.equal(m.get('entgate_licence_stream_subscribers'), 0);
  });
});

describe('metrics on a port of their own', () => {
  const fixture = serviceFixture({ METRICS_PORT: '0' });

  it('serves /metrics only there', async () => {
    const { svc } = fixture;
    assert.match(svc.metricsUrl ?? '', /^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${svc.metricsUrl}/metrics`);
    assert.equal(res.status, 200);
    parse(await res.text());
    assert.equal((await fetch(`${svc.metricsUrl}/healthz`)).status, 404);
    assert.equal((await request(svc.server).get('/metrics')).status, 404);
  });
});
