/**
 * What a value must look like to survive Conary's entitlement parser unchanged (see
 * shared/reference/conary-client.md): the parser keeps only the last chunk of character data
 * (expat splits at entity references and newlines), converts with Python 2 `str()` (any
 * non-ASCII character raises), and keeps whitespace inside an element as part of the value.
 * So a stored class or key must be printable ASCII without `& < > " '` and without leading
 * or trailing whitespace, 1 to 255 characters. Refusing such values when they are stored is
 * what keeps a customer from being locked out later.
 */
export const CONARY_MAX_LENGTH = 255;

/** Returns why `value` would be mangled by Conary's parser, or undefined when it is safe. */
export function conaryValueProblem(value: string): string | undefined {
  if (value.length === 0) return 'is empty';
  if (value.length > CONARY_MAX_LENGTH) return `is longer than ${CONARY_MAX_LENGTH} characters`;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return 'contains a control character or newline';
    if (c > 0x7f) return 'contains a non-ASCII character';
    if (c === 0x26 || c === 0x3c || c === 0x3e || c === 0x22 || c === 0x27) {
      return `contains ${String.fromCharCode(c)}, which Conary's parser mangles`;
    }
  }
  if (value.trim() !== value) return 'has leading or trailing whitespace, which Conary keeps as part of the value';
  return undefined;
}

export function isConarySafe(value: string): boolean {
  return conaryValueProblem(value) === undefined;
}
