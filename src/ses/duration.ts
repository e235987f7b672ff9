/**
 * Parses an ISO 8601 duration as the SES protocol sends it (`PT5M`, `PT1H30M`, `P1D`, `P1W`)
 * into whole seconds (fractions round up). Years and months are refused (their length
 * depends on the calendar), as is a zero or empty duration. Undefined when unparseable.
 */
export function parseDurationSeconds(text: string): number | undefined {
  const m = /^P(?:(\d{1,6})W)?(?:(\d{1,6})D)?(?:T(?:(\d{1,6})H)?(?:(\d{1,6})M)?(?:(\d{1,9}(?:[.,]\d{1,9})?)S)?)?$/.exec(text);
  if (!m || text === 'P' || text.endsWith('T')) return undefined;
  const [, w, d, h, min, s] = m;
  const seconds =
    Number(w ?? 0) * 604_800 + Number(d ?? 0) * 86_400 + Number(h ?? 0) * 3_600 + Number(min ?? 0) * 60 + Number((s ?? '0').replace(',', '.'));
  const whole = Math.ceil(seconds);
  return whole >= 1 && Number.isSafeInteger(whole) ? whole : undefined;
}
