import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../../src/lib/logger.ts';
import { ResolverChain, type ChainResolver, type ResolverChainOptions } from '../../../src/resolvers/chain.ts';
import { ResolverFailure, type Resolution, type ResolveRequest } from '../../../src/resolvers/resolver.ts';

const request: ResolveRequest = { server: 'repo.example.com', key: 'cust-1' };

/** A resolver answering from a script, counting its calls. */
function scripted(name: string, answer: (call: number) => Resolution | Promise<Resolution>): ChainResolver & { calls: number } {
  const r = {
    name,
    calls: 0,
    resolve: async () => answer(++r.calls),
  };
  return r;
}

function chain(resolvers: ChainResolver[], extra: Partial<ResolverChainOptions> = {}): ResolverChain {
  return new ResolverChain({
    resolvers,
    logger: createLogger('silent'),
    cacheMaxEntries: 100,
    ttlMs: 60_000,
    negativeTtlMs: 60_000,
    timeoutMs: 200,
    failurePolicy: 'deny',
    staleGraceMs: 60_000,
    ...extra,
  });
}

const entitled: Resolution = { outcome: 'entitled', class: 'gold', key: 'real-key' };

describe('ResolverChain', () => {
  it('when the first resolver passes, then the next decides; when all pass, then the key is unknown', async () => {
    const first = scripted('first', () => ({ outcome: 'pass' }));
    const second = scripted('second', () => entitled);
    assert.deepEqual(await chain([first, second]).resolve(request, 'h1'), {
      granted: true, class: 'gold', key: 'real-key', timeout: null, expiresAt: null, dependsOnAddress: false, resolver: 'second', virtualKeyId: null, reason: null,
    });
    const none = chain([scripted('a', () => ({ outcome: 'pass' })), scripted('b', () => ({ outcome: 'pass' }))]);
    assert.deepEqual(await none.resolve(request, 'h1'), { granted: false, reason: 'unknown_key', resolver: null, virtualKeyId: null });
  });

  it('when a pass carries no TTL, then it is cached; with ttlSeconds 0, then the resolver is asked every time', async () => {
    const cachedPass = scripted('p', () => ({ outcome: 'pass' }));
    const c1 = chain([cachedPass]);
    await c1.resolve(request, 'h1');
    await c1.resolve(request, 'h1');
    assert.equal(cachedPass.calls, 1);

    const uncachedPass = scripted('p', () => ({ outcome: 'pass', ttlSeconds: 0 }));
    const c2 = chain([uncachedPass]);
    await c2.resolve(request, 'h1');
    await c2.resolve(request, 'h1');
    assert.equal(uncachedPass.calls, 2);
    assert.equal(c2.getStats().cacheEntries, 0);
  });

  it('when many identical checks arrive together, then the resolver is called once', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = scripted('slow', async () => (await gate, entitled));
    const c = chain([slow]);
    const all = Array.from({ length: 50 }, () => c.resolve(request, 'h1'));
    release();
    const outcomes = await Promise.all(all);
    assert.equal(slow.calls, 1);
    assert.ok(outcomes.every((o) => o.granted));
  });

  it('when a resolver answers outside the contract, then the check is denied as a failure, never granted', async () => {
    for (const bad of [
      { outcome: 'entitled', class: null, key: 'a<b' },
      { outcome: 'entitled', class: null, key: '' },
      { outcome: 'denied', reason: 'Has Spaces' },
      { outcome: 'maybe' },
      { outcome: 'pass', ttlSeconds: -1 },
      null,
    ]) {
      const outcome = await chain([scripted('bad', () => bad as unknown as Resolution)]).resolve(request, 'h1');
      assert.deepEqual(outcome, { granted: false, reason: 'resolver_failed:invalid_answer', resolver: 'bad', virtualKeyId: null }, JSON.stringify(bad));
    }
  });

  it('when a resolver never answers, then the check is denied at the deadline', async () => {
    const hung = scripted('hung', () => new Promise<Resolution>(() => {}));
    const started = Date.now();
    const outcome = await chain([hung], { timeoutMs: 50 }).resolve(request, 'h1');
    assert.deepEqual(outcome, { granted: false, reason: 'resolver_failed:timeout', resolver: 'hung', virtualKeyId: null });
    assert.ok(Date.now() - started < 5_000);
  });

  it('when stale-if-error is set, then a failure serves the last grant for the same question, and denies once the key is evicted', async () => {
    const flaky = scripted('crm', (call) => {
      if (call === 1) return { ...entitled, ttlSeconds: 0 } as Resolution;
      throw new ResolverFailure('http_5xx', 'CRM answered 503');
    });
    const c = chain([flaky], { failurePolicy: 'stale-if-error', staleGraceMs: 10_000 });
    assert.equal((await c.resolve(request, 'h1')).granted, true);
    const stale = await c.resolve(request, 'h1');
    assert.deepEqual([stale.granted, stale.reason], [true, 'stale_if_error']);
    // Another question (another client address) has no stale grant of its own.
    const other = await c.resolve({ ...request, remoteIp: '192.0.2.1' }, 'h1');
    assert.deepEqual([other.granted, other.reason], [false, 'resolver_failed:http_5xx']);
    c.evict(['h1']);
    assert.deepEqual([(await c.resolve(request, 'h1')).granted], [false]);
  });

  it('when the cache is evicted for a key, then its next check asks the resolver again', async () => {
    const r = scripted('r', () => entitled);
    const c = chain([r]);
    await c.resolve(request, 'h1');
    await c.resolve(request, 'h2');
    c.evict(['h1']);
    await c.resolve(request, 'h1');
    await c.resolve(request, 'h2');
    assert.equal(r.calls, 3);
  });
});
