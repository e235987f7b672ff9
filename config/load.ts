import { settings, type Config, type SettingName } from './settings.ts';
import { ConfigError } from '../src/lib/errors.ts';

/**
 * Validates the environment against the settings table. Every bad value is reported in one
 * message, each naming its variable (secrets are not echoed); the result is frozen.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [name, setting] of Object.entries(settings) as [SettingName, (typeof settings)[SettingName]][]) {
    if ('cliOnly' in setting && setting.cliOnly) continue;
    const raw = env[setting.env];
    const value = raw === undefined || raw === '' ? ('default' in setting ? setting.default : undefined) : raw;
    const parsed = setting.schema.safeParse(value);
    if (parsed.success) {
      out[name] = parsed.data;
    } else {
      const shown = 'secret' in setting && setting.secret ? '(hidden)' : JSON.stringify(value);
      const reason = parsed.error.issues.map((i) => i.message).join('; ');
      problems.push(`${setting.env}=${shown}: ${reason}`);
    }
  }
  // Relations between settings each valid on its own (Node refuses a server with these reversed).
  if (typeof out.headersTimeoutMs === 'number' && typeof out.requestTimeoutMs === 'number' && out.headersTimeoutMs > out.requestTimeoutMs) {
    problems.push(
      `ENTGATE_HEADERS_TIMEOUT_MS=${out.headersTimeoutMs} must not exceed ENTGATE_REQUEST_TIMEOUT_MS=${out.requestTimeoutMs} (the whole request, headers included)`,
    );
  }
  if (problems.length > 0) {
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  return Object.freeze(out) as Config;
}
