/**
 * Which repository server names an entitlement covers:
 * - `rm.example.com`: that host exactly (case-insensitive, as DNS names are);
 * - `*.example.com`: any name ending in `.example.com` with at least one label before it
 *   (`a.example.com`, `a.b.example.com`), but not `example.com` itself;
 * - `*`: every server.
 * A name may carry a `:port`. Labels are letters, digits, `-` and `_`.
 */
const LABELS = String.raw`[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*`;
const HOST_RE = new RegExp(`^${LABELS}(?::\\d{1,5})?$`);
const GLOB_RE = new RegExp(`^\\*\\.${LABELS}(?::\\d{1,5})?$`);

export function serverPatternProblem(pattern: string): string | undefined {
  if (pattern === '*') return undefined;
  if (pattern.length > 255) return 'is longer than 255 characters';
  if (HOST_RE.test(pattern) || GLOB_RE.test(pattern)) return undefined;
  return "must be a host name (rm.example.com), a '*.domain' pattern or '*'";
}

export type ServerMatcher = (server: string) => boolean;

export function compileServerPattern(pattern: string): ServerMatcher {
  if (pattern === '*') return () => true;
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(1).toLowerCase();
    return (server) => server.length > suffix.length && server.toLowerCase().endsWith(suffix);
  }
  const exact = pattern.toLowerCase();
  return (server) => server.length === exact.length && server.toLowerCase() === exact;
}
