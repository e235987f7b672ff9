import type { z } from 'zod';
import { ValidationError } from '../errors.ts';
import { describeIssues } from '../zod-issues.ts';

/** Parses a request part with a schema; a 400 `invalid_request` naming every problem otherwise. */
export function validate<S extends z.ZodType>(schema: S, value: unknown, what = 'request body'): z.output<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issues = describeIssues(parsed.error);
    throw new ValidationError(`invalid ${what}: ${issues.join('; ')}`, issues);
  }
  return parsed.data;
}

/** A page of a list by id: `nextCursor` is the last id when the page is full, else null (the end). */
export function pageOf<T extends { id: number }>(items: T[], limit: number): { items: T[]; nextCursor: number | null } {
  const last = items[items.length - 1];
  return { items, nextCursor: items.length === limit && last ? last.id : null };
}
