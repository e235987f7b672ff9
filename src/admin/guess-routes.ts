import { z } from 'zod';
import { NotFoundError } from '../lib/errors.ts';
import { validate } from '../lib/http/validate.ts';
import type { GuessBudgetsRepo } from '../store/guess-budgets.ts';
import type { Invalidation } from '../store/invalidation-bus.ts';
import { scopedRouter } from '../auth/scoped-router.ts';

/** A subject as guessSubject() writes it: an address, an IPv6 /64, or `caller <address>`. */
const subject = z.string().min(1).max(80).regex(/^(caller )?[0-9A-Fa-f.:]+(\/64)?$/, 'an address, an IPv6 /64 or "caller <address>"');

/**
 * Addresses cooling down after too many unknown keys: listed (`read`), and lifted early
 * (`write`) on every instance.
 */
export function guessRoutes(budgets: GuessBudgetsRepo, publish: (change: Invalidation) => void) {
  const r = scopedRouter();
  r.get('/guess-blocks', 'read', async (_req, res) => {
    res.json({ items: await budgets.listBlocks() });
  });
  r.delete('/guess-blocks/:subject', 'write', async (req, res) => {
    const s = validate(subject, req.params.subject, 'subject');
    const cleared = await budgets.clear(s);
    publish({ guessSubjects: [s] });
    if (!cleared) throw new NotFoundError(`guessing budget of ${s}`);
    res.status(204).end();
  });
  return r.router;
}
