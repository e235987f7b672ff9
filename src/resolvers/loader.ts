import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ZodType } from 'zod';
import type { Config } from '../../config/settings.ts';
import { ConfigError } from '../lib/errors.ts';
import type { Logger } from '../lib/logger.ts';
import { describeIssues } from '../lib/zod-issues.ts';
import type { ChainResolver } from './chain.ts';

/** A resolver entgate ships: its options schema and how to build it. */
export interface BuiltinResolver {
  optionsSchema?: ZodType;
  create(options: unknown): ChainResolver | Promise<ChainResolver>;
}

/** A resolver entgate ships: its options schema (checked before start-up opens anything). */
export type BuiltinSchemas = Record<string, ZodType | undefined>;

/** One resolver of the chain, its options validated and its module loaded, not built yet. */
export interface ResolverPlan {
  readonly name: string;
  build(builtins: Record<string, BuiltinResolver>): Promise<ChainResolver>;
}

/**
 * Plans the resolver chain named in ENTGATE_RESOLVERS: built-in names, or module specifiers
 * (a path starting with `.` or `/`, resolved against the working directory, or a package name)
 * whose default export is a resolver factory. Every section of the options file is validated
 * by its resolver's schema and every plugin module is loaded here, before start-up opens the
 * database; the resolvers themselves are built later (`build`), when what they use exists.
 * Anything that does not fit stops start-up with a ConfigError that names the resolver.
 */
export async function planResolvers(config: Config, logger: Logger, builtins: BuiltinSchemas, cwd = process.cwd()): Promise<ResolverPlan[]> {
  const allOptions = readOptionsFile(config.resolverOptionsFile, cwd);
  for (const name of Object.keys(allOptions)) {
    if (!config.resolvers.includes(name)) {
      throw new ConfigError(`${config.resolverOptionsFile}: options for '${name}', which ENTGATE_RESOLVERS does not name`);
    }
  }
  const plans: ResolverPlan[] = [];
  for (const name of config.resolvers) {
    const raw = allOptions[name];
    if (name in builtins) {
      const options = validateOptions(name, builtins[name], raw);
      plans.push({ name, build: async (made) => made[name]!.create(options) });
    } else {
      const { factory, options } = await loadPlugin(name, raw, cwd);
      plans.push({ name, build: async () => buildPlugin(name, factory, options, config, logger) });
    }
  }
  return plans;
}

/** Plans and builds the chain in one step (the resolver contract suite, tools). */
export async function loadResolvers(
  config: Config,
  logger: Logger,
  builtins: Record<string, BuiltinResolver>,
  cwd = process.cwd(),
): Promise<ChainResolver[]> {
  const schemas = Object.fromEntries(Object.entries(builtins).map(([name, b]) => [name, b.optionsSchema]));
  const plans = await planResolvers(config, logger, schemas, cwd);
  const chain: ChainResolver[] = [];
  for (const plan of plans) chain.push(await plan.build(builtins));
  return chain;
}

function readOptionsFile(file: string | undefined, cwd: string): Record<string, unknown> {
  if (file === undefined) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(resolve(cwd, file), 'utf8'));
  } catch (err) {
    throw new ConfigError(`ENTGATE_RESOLVER_OPTIONS_FILE ${file}: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(`ENTGATE_RESOLVER_OPTIONS_FILE ${file}: must be a JSON object keyed by resolver name`);
  }
  return parsed as Record<string, unknown>;
}

function validateOptions(name: string, schema: unknown, raw: unknown): unknown {
  if (schema === undefined) return raw ?? {};
  const s = schema as ZodType;
  if (typeof s?.safeParse !== 'function') throw new ConfigError(`resolver ${name}: optionsSchema must be a zod schema`);
  const parsed = s.safeParse(raw ?? {});
  if (!parsed.success) throw new ConfigError(`resolver ${name}: invalid options: ${describeIssues(parsed.error).join('; ')}`);
  return parsed.data;
}

type Factory = (options: unknown, context: { config: Config; logger: Logger }) => unknown;

async function loadPlugin(name: string, raw: unknown, cwd: string): Promise<{ factory: Factory; options: unknown }> {
  const isPath = name.startsWith('.') || isAbsolute(name);
  if (!isPath && !/^(@[\w.-]+\/)?[\w.-]+(\/[\w.-]+)*$/.test(name)) {
    throw new ConfigError(`resolver ${name}: not a built-in (postgres, crm, rus), a path (./x.js) or a package name`);
  }
  let mod: Record<string, unknown>;
  try {
    const specifier = isPath ? pathToFileURL(resolve(cwd, name)).href : name;
    mod = (isPath && TYPESCRIPT_FILE.test(name) ? await importTypeScript(specifier) : await import(specifier)) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`resolver ${name}: cannot load the module: ${(err as Error).message.split('\n')[0]}`);
  }
  const factory = mod.default;
  if (typeof factory !== 'function') {
    throw new ConfigError(`resolver ${name}: the module's default export must be a factory function (options, { config, logger }) => resolver`);
  }
  return { factory: factory as Factory, options: validateOptions(name, mod.optionsSchema, raw) };
}

async function buildPlugin(name: string, factory: Factory, options: unknown, config: Config, logger: Logger): Promise<ChainResolver> {
  let resolver: unknown;
  try {
    resolver = await factory(options, { config, logger: logger.child({ resolver: name }) });
  } catch (err) {
    throw new ConfigError(`resolver ${name}: its factory failed: ${(err as Error).message}`);
  }
  const r = resolver as Partial<ChainResolver> | null;
  if (r === null || typeof r !== 'object' || typeof r.resolve !== 'function' || typeof r.name !== 'string' || r.name === '') {
    throw new ConfigError(`resolver ${name}: the factory must return an object with a non-empty name and an async resolve(request, context) method`);
  }
  if (r.close !== undefined && typeof r.close !== 'function') throw new ConfigError(`resolver ${name}: close must be a function`);
  // Only built-ins may answer synchronously from their own cache.
  return { name: r.name, resolve: r.resolve.bind(r), ...(r.close && { close: r.close.bind(r) }) };
}

const TYPESCRIPT_FILE = /\.[cm]?tsx?$/i;

/**
 * A plugin written in TypeScript (`./plugins/acme.ts`). entgate runs compiled JavaScript, and
 * Node 20 cannot load a .ts module by itself, so such a plugin is loaded through tsx, which is
 * imported here and only then: from wherever Node finds it (entgate's own devDependency in a
 * clone; `npm install tsx` beside an installed entgate). tsx's `tsImport` compiles this one
 * module and its own imports, without registering a loader for the rest of the process.
 */
async function importTypeScript(url: string): Promise<unknown> {
  let tsImport: (specifier: string, parentURL: string) => Promise<unknown>;
  try {
    ({ tsImport } = await import('tsx/esm/api'));
  } catch {
    throw new Error('a TypeScript plugin is loaded through tsx, which is not installed: npm install tsx, or compile the plugin to JavaScript');
  }
  const mod = (await tsImport(url, import.meta.url)) as { default?: unknown };
  // Outside a "type": "module" package a .ts file is CommonJS: its exports come as the default.
  const cjs = mod.default as { __esModule?: boolean } | null | undefined;
  return typeof cjs === 'object' && cjs !== null && cjs.__esModule === true ? cjs : mod;
}
