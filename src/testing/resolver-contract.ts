/**
 * The resolver contract as tests, for integrators: run it against your plugin with Node's
 * test runner (`node --test`). It checks what entgate relies on; passing it means the chain
 * can use your resolver. See docs/plugins.md.
 *
 *   import { resolverContractTests } from 'entgate/testing';
 *   import createResolver from './my-crm.js';
 *   resolverContractTests({
 *     name: 'my-crm',
 *     create: () => createResolver({ url: 'http://127.0.0.1:9999' }, { config, logger }),
 *     entitled: { server: 'rm.example.com', key: 'CUSTOMER-1' },
 *     unknown: { server: 'rm.example.com', key: 'NO-SUCH-CUSTOMER' },
 *   });
 */
import { createHmac } from 'node:crypto';
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { validated } from '../resolvers/chain.ts';
import type { Resolution, ResolveContext, ResolveRequest, Resolver } from '../resolvers/resolver.ts';

export interface ContractSubject {
  /** Shown in the test names. */
  name: string;
  /** Builds the resolver under test (called once). */
  create(): Resolver | Promise<Resolver>;
  /** A request the resolver entitles. */
  entitled: ResolveRequest;
  /** A request about a key the resolver does not know: it must deny or pass. */
  unknown: ResolveRequest;
  /** Called after the suite, e.g. to stop a fake backend. */
  teardown?(): Promise<void>;
}

function context(key: string, signal = new AbortController().signal): ResolveContext {
  return {
    signal,
    logger: pino({ level: 'silent' }),
    keyHash: createHmac('sha256', 'contract-tests').update(key).digest('hex'),
  };
}

/** Resolves or rejects within `ms`, or fails the test as hanging. */
async function settles<T>(promise: Promise<T>, ms: number, what: string): Promise<{ value?: T; error?: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return { value: await Promise.race([promise, hang]) };
  } catch (error) {
    if (error instanceof Error && error.message.endsWith(`within ${ms} ms`)) throw error;
    return { error };
  } finally {
    clearTimeout(timer);
  }
}

export function resolverContractTests(subject: ContractSubject): void {
  describe(`resolver contract: ${subject.name}`, () => {
    let resolver: Resolver;
    const ask = (request: ResolveRequest): Promise<Resolution> => resolver.resolve(Object.freeze({ ...request }), context(request.key));

    before(async () => {
      resolver = await subject.create();
    });
    after(async () => {
      await resolver?.close?.();
      await subject.teardown?.();
    });

    it('has a name and a resolve method', () => {
      assert.equal(typeof resolver.name, 'string');
      assert.ok(resolver.name.length > 0);
      assert.equal(typeof resolver.resolve, 'function');
    });

    it('entitles the entitled request with a Conary-safe class and key', async () => {
      const answer = await ask(subject.entitled);
      assert.equal(answer.outcome, 'entitled', JSON.stringify(answer));
      assert.doesNotThrow(() => validated(answer));
    });

    it('denies with a snake_case reason, or passes, for an unknown key', async () => {
      const answer = await ask(subject.unknown);
      assert.ok(answer.outcome === 'denied' || answer.outcome === 'pass', JSON.stringify(answer));
      assert.doesNotThrow(() => validated(answer));
    });

    it('answers plain data that survives a JSON round trip', async () => {
      for (const request of [subject.entitled, subject.unknown]) {
        const answer = await ask(request);
        assert.deepEqual(JSON.parse(JSON.stringify(answer)), answer);
      }
    });

    it('does not modify the request (it is frozen)', async () => {
      await ask(subject.entitled);
      await ask(subject.unknown);
    });

    it('settles promptly once its signal is aborted', async () => {
      const controller = new AbortController();
      controller.abort(new Error('deadline'));
      await settles(resolver.resolve(subject.entitled, context(subject.entitled.key, controller.signal)), 2000, 'resolve() with an aborted signal');
    });

    it('gives concurrent requests the same answers as sequential ones', async () => {
      const sequential = [await ask(subject.entitled), await ask(subject.unknown)];
      const concurrent = await Promise.all(Array.from({ length: 20 }, (_, i) => ask(i % 2 === 0 ? subject.entitled : subject.unknown)));
      concurrent.forEach((answer, i) => assert.equal(answer.outcome, sequential[i % 2]!.outcome));
    });
  });
}
