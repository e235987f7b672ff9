import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import request from 'supertest';
import { z } from 'zod';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import ajvFormats from 'ajv-formats';
import { routeTable } from '../../src/http/route-table.ts';
import { SCOPES } from '../../src/auth/scopes.ts';
import { loadOpenApi, type OpenApiDocument } from '../../src/ops/openapi.ts';
import type { RunningService } from '../../src/service.ts';
import { settings } from '../../config/settings.ts';
import * as admin from '../../src/admin/schemas.ts';
import * as leases from '../../src/leases/schemas.ts';
import { mintBody } from '../../src/ses/mint-routes.ts';
import * as licensing from '../../src/licensing/routes.ts';
import { databaseTargets, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { startTestService, AUTH } from '../helpers/service.ts';

/**
 * docs/openapi.yaml against the code: a sound OpenAPI 3.1 document, every route the server
 * answers documented and nothing documented that it does not answer, every example valid
 * against its schema, request schemas equal to the zod schemas the code validates with, and
 * real answers of a running service valid against the documented responses.
 */

type Json = Record<string, unknown>;
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

// OPENAPI_TEST_FILE: check an edited copy instead (to see a check fail without touching the file).
const doc: OpenApiDocument = loadOpenApi(process.env.OPENAPI_TEST_FILE ? pathToFileURL(process.env.OPENAPI_TEST_FILE) : undefined);

// ---------------------------------------------------------------------------------------------
// Walking the document

const escapePointer = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');
const pointer = (...parts: (string | number)[]) => `#/${parts.map((p) => escapePointer(String(p))).join('/')}`;

function at(ref: string): unknown {
  assert.ok(ref.startsWith('#/'), `only local references are used: ${ref}`);
  let node: unknown = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || !(key in (node as Json))) return undefined;
    node = (node as Json)[key];
  }
  return node;
}

/** A Reference Object followed to its target (and that target's pointer). */
function deref(node: unknown, where: string): { node: Json; where: string } {
  let seen = 0;
  while (node && typeof node === 'object' && typeof (node as Json).$ref === 'string' && Object.keys(node as Json).length <= 3) {
    where = (node as Json).$ref as string;
    node = at(where);
    assert.ok(++seen < 10, `reference loop at ${where}`);
  }
  assert.ok(node && typeof node === 'object', `${where} is not an object`);
  return { node: node as Json, where };
}

interface Operation {
  method: string;
  path: string;
  op: Json;
  where: string;
}

function operations(): Operation[] {
  const out: Operation[] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
    for (const method of HTTP_METHODS) {
      if (item[method]) out.push({ method: method.toUpperCase(), path, op: item[method] as Json, where: pointer('paths', path, method) });
    }
  }
  return out;
}

/** `{name}` and `:name` become `{}`: the code and the document may name a parameter differently. */
const shape = (method: string, path: string) =>
  `${method.toUpperCase()} ${path.replace(/:[A-Za-z0-9_]+/g, '{}').replace(/\{[^}]+\}/g, '{}').replace(/(.)\/$/, '$1')}`;

/** Every parameter of an operation (path-level ones first), dereferenced. */
function parametersOf(o: Operation): { node: Json; where: string }[] {
  const item = doc.paths[o.path] as Json;
  const list = [
    ...((item.parameters as unknown[] | undefined) ?? []).map((p, i) => deref(p, `${pointer('paths', o.path, 'parameters')}/${i}`)),
    ...((o.op.parameters as unknown[] | undefined) ?? []).map((p, i) => deref(p, `${o.where}/parameters/${i}`)),
  ];
  return list;
}

const SCHEMA_MAPS = ['properties', 'patternProperties', '$defs', 'dependentSchemas'];
const SCHEMA_ARRAYS = ['allOf', 'anyOf', 'oneOf', 'prefixItems'];
const SCHEMA_SINGLE = ['items', 'not', 'if', 'then', 'else', 'additionalProperties', 'propertyNames', 'contains', 'unevaluatedProperties', 'unevaluatedItems'];

/** Every schema object below (and including) one, with its pointer. */
function* schemasBelow(schema: unknown, where: string): Generator<{ schema: Json; where: string }> {
  if (!schema || typeof schema !== 'object') return;
  const s = schema as Json;
  yield { schema: s, where };
  for (const k of SCHEMA_MAPS) {
    for (const [name, sub] of Object.entries((s[k] as Json | undefined) ?? {})) yield* schemasBelow(sub, `${where}/${k}/${escapePointer(name)}`);
  }
  for (const k of SCHEMA_ARRAYS) {
    for (const [i, sub] of ((s[k] as unknown[] | undefined) ?? []).entries()) yield* schemasBelow(sub, `${where}/${k}/${i}`);
  }
  for (const k of SCHEMA_SINGLE) yield* schemasBelow(s[k], `${where}/${k}`);
}

interface ExampleSite {
  /** Where the example is written. */
  where: string;
  /** The schema it must satisfy. */
  schemaAt: string;
  value: unknown;
}

/** Every `example` / `examples` of the document, with the schema each must satisfy. */
function exampleSites(): ExampleSite[] {
  const sites: ExampleSite[] = [];
  // Parameter, header and media type objects: `example`, or `examples` (a map of Example objects).
  const holder = (node: Json, where: string) => {
    if (node.schema === undefined) return;
    if ('example' in node) sites.push({ where: `${where}/example`, schemaAt: `${where}/schema`, value: node.example });
    for (const [name, ex] of Object.entries((node.examples as Json | undefined) ?? {})) {
      const target = deref(ex, `${where}/examples/${escapePointer(name)}`);
      assert.ok('value' in target.node, `${target.where}: an Example object needs a value (externalValue is not used here)`);
      sites.push({ where: target.where, schemaAt: `${where}/schema`, value: target.node.value });
    }
  };
  const content = (node: Json, where: string) => {
    for (const [type, media] of Object.entries((node.content as Json | undefined) ?? {})) holder(media as Json, `${where}/content/${escapePointer(type)}`);
  };
  const response = (r: unknown, where: string) => {
    const { node, where: w } = deref(r, where);
    if (w !== where) return; // visited under components
    content(node, w);
    for (const [name, h] of Object.entries((node.headers as Json | undefined) ?? {})) {
      const header = deref(h, `${w}/headers/${escapePointer(name)}`);
      if (header.where === `${w}/headers/${escapePointer(name)}`) holder(header.node, header.where);
    }
  };
  const components = (doc.components ?? {}) as Record<string, Json>;
  for (const [name, p] of Object.entries(components.parameters ?? {})) holder(p as Json, pointer('components', 'parameters', name));
  for (const [name, h] of Object.entries(components.headers ?? {})) holder(h as Json, pointer('components', 'headers', name));
  for (const [name, r] of Object.entries(components.responses ?? {})) response(r, pointer('components', 'responses', name));
  for (const [name, b] of Object.entries(components.requestBodies ?? {})) content(b as Json, pointer('components', 'requestBodies', name));
  for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
    for (const [i, p] of ((item.parameters as unknown[] | undefined) ?? []).entries()) {
      if (!(p as Json).$ref) holder(p as Json, `${pointer('paths', path, 'parameters')}/${i}`);
    }
  }
  for (const o of operations()) {
    for (const [i, p] of ((o.op.parameters as unknown[] | undefined) ?? []).entries()) {
      if (!(p as Json).$ref) holder(p as Json, `${o.where}/parameters/${i}`);
    }
    if (o.op.requestBody && !(o.op.requestBody as Json).$ref) content(o.op.requestBody as Json, `${o.where}/requestBody`);
    for (const [status, r] of Object.entries((o.op.responses as Json | undefined) ?? {})) response(r, `${o.where}/responses/${status}`);
  }
  // Schema objects: `examples` (JSON Schema's, an array) and the deprecated `example`.
  const roots: { schema: unknown; where: string }[] = Object.entries(components.schemas ?? {}).map(([name, s]) => ({
    schema: s,
    where: pointer('components', 'schemas', name),
  }));
  const collectSchemaRoots = (node: unknown, where: string) => {
    if (!node || typeof node !== 'object') return;
    for (const [k, v] of Object.entries(node as Json)) {
      const w = `${where}/${escapePointer(k)}`;
      if (k === 'schema' && v && typeof v === 'object') roots.push({ schema: v, where: w });
      else if (k !== 'components' || where !== '#') collectSchemaRoots(v, w);
    }
  };
  collectSchemaRoots(doc.paths, pointer('paths'));
  for (const section of ['parameters', 'headers', 'responses', 'requestBodies']) collectSchemaRoots(components[section], pointer('components', section));
  for (const root of roots) {
    for (const { schema, where } of schemasBelow(root.schema, root.where)) {
      for (const [i, ex] of ((schema.examples as unknown[] | undefined) ?? []).entries()) sites.push({ where: `${where}/examples/${i}`, schemaAt: where, value: ex });
      if ('example' in schema) sites.push({ where: `${where}/example`, schemaAt: where, value: schema.example });
    }
  }
  return sites;
}

// ---------------------------------------------------------------------------------------------
// Validation with the document's own schemas (JSON Schema 2020-12, as OpenAPI 3.1 uses)

const DOC_ID = 'entgate-openapi.json';
// OpenAPI's own keywords inside schemas, and the document's top-level fields (the document is
// added as one schema resource below); any other unknown keyword is an error (strict mode).
// (`required` naming properties defined elsewhere, and `type` given in an `allOf`, are OpenAPI's
// usual style: those two strict checks are off.)
const ajv = new Ajv2020({ strict: true, strictRequired: false, strictTypes: false, allowUnionTypes: true, allErrors: true });
ajv.addVocabulary(['discriminator', 'xml', 'externalDocs', 'example']);
ajv.addVocabulary(['openapi', 'info', 'jsonSchemaDialect', 'servers', 'paths', 'webhooks', 'components', 'security', 'tags']);
// ajv-formats is CommonJS: its default export arrives as module.exports or as .default.
const addFormats = ((ajvFormats as unknown as { default?: typeof ajvFormats }).default ?? ajvFormats) as unknown as (a: Ajv2020) => void;
addFormats(ajv);
// The whole document as one schema resource, so that every `#/components/...` resolves; only the
// parts that are schemas are ever compiled.
ajv.addSchema({ ...(doc as Json), $id: DOC_ID }, undefined, undefined, false);
const compiled = new Map<string, ValidateFunction>();

function validatorAt(where: string): ValidateFunction {
  let v = compiled.get(where);
  if (!v) {
    const fragment = where.slice(1).split('/').map(encodeURIComponent).join('/');
    v = ajv.compile({ $ref: `${DOC_ID}#${fragment}` });
    compiled.set(where, v);
  }
  return v;
}

function problems(where: string, value: unknown): string | undefined {
  const v = validatorAt(where);
  return v(value) ? undefined : ajv.errorsText(v.errors, { separator: '; ' });
}

// ---------------------------------------------------------------------------------------------
// The code's routes

/** Every (method, path) the running service's express app answers, from its router stack. */
function expressRoutes(): string[] {
  const found = routeTable(svc.app).map((r) => shape(r.method, r.path));
  assert.ok(found.length > 20, `the router walk found only ${found.length} routes: has express changed its router?`);
  return found;
}

// ---------------------------------------------------------------------------------------------
// The zod schemas the code validates requests with

const ZOD_BODIES: Record<string, z.ZodType> = {
  'POST /v1/leases': leases.acquireBody,
  'POST /v1/leases/{}/heartbeat': leases.heartbeatBody,
  'POST /v1/capacities/{}/claims': licensing.claimBody,
  'POST /v1/capacities/{}/claims/{}/heartbeat': licensing.heartbeatBody,
  'DELETE /v1/leases/{}': leases.releaseBody,
  'POST /admin/v1/entitlements': admin.entitlementCreate,
  'PATCH /admin/v1/entitlements/{}': admin.entitlementPatch,
  'POST /admin/v1/virtual-keys': admin.virtualKeyCreate,
  'PATCH /admin/v1/virtual-keys/{}': admin.virtualKeyPatch,
  'POST /admin/v1/virtual-keys/lookup': admin.virtualKeyLookup,
  'PUT /admin/v1/products/{}': admin.productMap,
  'POST /admin/v1/pools': leases.poolCreate,
  'PATCH /admin/v1/pools/{}': leases.poolPatch,
  'POST /admin/v1/client-keys': leases.clientKeyCreate,
  'POST /admin/v1/tokens': mintBody,
  'POST /admin/v1/admin-tokens': admin.credentialCreate,
  'PUT /admin/v1/bootstrap-token': admin.bootstrapCredentialPut,
};
const ZOD_QUERIES: Record<string, z.ZodType> = {
  'GET /admin/v1/virtual-keys': admin.virtualKeyListQuery,
  'GET /admin/v1/audit': admin.auditQuery,
  'GET /admin/v1/lease-events': leases.leaseEventsQuery,
  'GET /admin/v1/licence/events': licensing.licenceEventsQuery,
  'DELETE /admin/v1/pools/{}': leases.poolDeleteQuery,
  'GET /admin/v1/client-keys': leases.clientKeyListQuery,
  'GET /admin/v1/admin-tokens': admin.credentialListQuery,
  'GET /admin/v1/admin-events': admin.adminEventsQuery,
};

// ---------------------------------------------------------------------------------------------
// Scopes

/** The bearer scheme of admin tokens; an operation's scopes are its role names. */
const ADMIN_SCHEME = 'adminToken';

/**
 * The scopes an operation documents: the role names of the admin scheme in its own `security`,
 * one requirement per scope (the requirements are alternatives); undefined when it has no
 * `security` of its own. Breaches of that convention are added to `problems`.
 */
function documentedScopes(o: Operation, problems: string[]): string[] | undefined {
  const requirements = o.op.security as Json[] | undefined;
  if (requirements === undefined) return undefined;
  const scopes = new Set<string>();
  for (const [i, req] of requirements.entries()) {
    const at = `${o.method} ${o.path}: security/${i}`;
    const names = Object.keys(req);
    if (!names.includes(ADMIN_SCHEME)) continue;
    const roles = req[ADMIN_SCHEME] as unknown[];
    if (names.length !== 1 || roles.length !== 1) problems.push(`${at}: name one scope of ${ADMIN_SCHEME} per requirement (requirements are alternatives, the roles of one are all required)`);
    for (const r of roles) {
      if (!(SCOPES as readonly unknown[]).includes(r)) problems.push(`${at}: ${String(r)} is not a scope`);
      scopes.add(String(r));
    }
  }
  return [...scopes].sort();
}

/** Properties, required properties and closedness of an object schema (allOf merged). */
function objectShape(schema: Json, where: string): { properties: string[]; required: string[]; closed: boolean } {
  const properties = new Set<string>();
  const required = new Set<string>();
  let closed = schema.additionalProperties === false || schema.unevaluatedProperties === false;
  const add = (s: Json) => {
    for (const p of Object.keys((s.properties as Json | undefined) ?? {})) properties.add(p);
    for (const r of (s.required as string[] | undefined) ?? []) required.add(r);
  };
  add(schema);
  for (const [i, sub] of ((schema.allOf as unknown[] | undefined) ?? []).entries()) {
    const d = deref(sub, `${where}/allOf/${i}`).node;
    add(d);
    if (d.additionalProperties === false) closed = true;
  }
  return { properties: [...properties].sort(), required: [...required].sort(), closed };
}

function zodShape(schema: z.ZodType): { properties: string[]; required: string[]; closed: boolean } {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Json;
  return {
    properties: Object.keys((json.properties as Json | undefined) ?? {}).sort(),
    required: [...((json.required as string[] | undefined) ?? [])].sort(),
    closed: json.additionalProperties === false,
  };
}

// ---------------------------------------------------------------------------------------------
// Answers against the document

/** Checks a real answer against the operation's documented response for its status. */
function checkAnswer(method: string, path: string, res: request.Response): void {
  const item = doc.paths[path] as Json | undefined;
  assert.ok(item, `${path} is not documented`);
  const op = item[method.toLowerCase()] as Json | undefined;
  assert.ok(op, `${method} ${path} is not documented`);
  const responses = op.responses as Json;
  const status = String(res.status);
  const key = status in responses ? status : `${status[0]}XX` in responses ? `${status[0]}XX` : 'default';
  assert.ok(key in responses, `${method} ${path} answered ${res.status}, which is not documented: ${res.text}`);
  const { node: response, where } = deref(responses[key], `${pointer('paths', path, method.toLowerCase(), 'responses')}/${key}`);
  for (const [name, h] of Object.entries((response.headers as Json | undefined) ?? {})) {
    const actual = res.headers[name.toLowerCase()];
    if (actual === undefined) continue;
    const header = deref(h, `${where}/headers/${escapePointer(name)}`);
    if (header.node.schema) {
      // A header is text; a schema of a number describes its value as read.
      const schemaAt = `${header.where}/schema`;
      const p = problems(schemaAt, actual) && (/^-?\d+(\.\d+)?$/.test(String(actual)) ? problems(schemaAt, Number(actual)) : problems(schemaAt, actual));
      assert.equal(p, undefined, `${method} ${path} ${status}: header ${name}: ${String(actual)}: ${p}`);
    }
  }
  const content = response.content as Json | undefined;
  const contentType = (res.headers['content-type'] as string | undefined)?.split(';')[0]?.trim();
  const hasBody = res.text !== undefined && res.text !== '';
  if (!content) {
    assert.ok(!hasBody, `${method} ${path} ${status} has a body, but none is documented: ${res.text}`);
    return;
  }
  if (!hasBody && method === 'HEAD') return;
  assert.ok(contentType && contentType in content, `${method} ${path} ${status}: Content-Type ${String(contentType)} is not documented (${Object.keys(content).join(', ')})`);
  const value = contentType === 'application/json' ? JSON.parse(res.text) : res.text;
  const p = problems(`${where}/content/${escapePointer(contentType)}/schema`, value);
  assert.equal(p, undefined, `${method} ${path} ${status}: the body does not match the documented schema: ${p}\n${res.text.slice(0, 500)}`);
}

const V1 = '2017-05-01.5.0';
const V2 = '2018-08-01.7.0';
const LATEST = '9999-09-09.99.99';

// ---------------------------------------------------------------------------------------------
// A running service

let svc: RunningService;
let db: TestDatabase;
const api = () => request(svc.server);

/**
 * The plain node:http routes, asked: on each rUS check path every method that is not answered
 * 405; on the SES paths every method that is not answered the protocol's catch-all 404.
 */
async function probedRoutes(): Promise<string[]> {
  const found: string[] = [];
  const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
  // The default ENTGATE_CHECK_PATHS (each also answers with a trailing slash, not a route of its own).
  for (const path of settings.checkPaths.default.split(',')) {
    for (const m of methods) {
      const res = await api()[m.toLowerCase() as 'get'](`${path}?server=rm.example.com&key=probe`);
      if (res.status !== 405) found.push(shape(m, path));
    }
  }
  // A live entitlement, so that renew and release answer 2xx rather than a 404 like the catch-all's.
  const token = await mint(['probeapp']);
  const acquired = await api().post(`/softwareEntitlements?api-version=${LATEST}`).send({ token, applicationId: 'probeapp', duration: 'PT5M' });
  assert.equal(acquired.status, 200, acquired.text);
  const id = acquired.body.entitlementId as string;
  for (const [path, doc] of [
    ['/softwareEntitlements', '/softwareEntitlements'],
    ['/softwareEntitlements/', '/softwareEntitlements'],
    [`/softwareEntitlements/${id}`, '/softwareEntitlements/{}'],
    [`/softwareEntitlements/${id}/more`, '/softwareEntitlements/{}/more'],
  ] as const) {
    for (const m of methods) {
      const req = api()[m.toLowerCase() as 'get'](`${path}?api-version=${LATEST}`);
      const res = m === 'POST' ? await req.send({ duration: 'PT5M' }) : await req;
      if (res.status !== 404) found.push(shape(m, doc));
      else if (m !== 'HEAD') assert.equal(res.body?.message?.value, 'No such resource.', `${m} ${path}: ${res.text}`);
    }
  }
  return found;
}

async function mint(applicationIds: string[], extra: Json = {}): Promise<string> {
  const res = await api().post('/admin/v1/tokens').set(AUTH).send({ applicationIds, addresses: ['127.0.0.1'], ...extra });
  assert.equal(res.status, 201, res.text);
  checkAnswer('POST', '/admin/v1/tokens', res);
  return res.body.token as string;
}

before(async () => {
  const dir = tempDir();
  const signing = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const mintKeyFile = join(dir, 'mint-key.pem');
  writeFileSync(mintKeyFile, signing.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  const verifyFile = join(dir, 'signing-public.pem');
  writeFileSync(verifyFile, signing.publicKey.export({ format: 'pem', type: 'spki' }) as string);
  db = await databaseTargets[0]!.create();
  svc = await startTestService(db, { ENTGATE_SES_SIGNING_KEYS: verifyFile, ENTGATE_SES_MINT_SIGNING_KEY: mintKeyFile });
});
after(async () => {
  await svc?.close();
  await db?.drop();
});

// ---------------------------------------------------------------------------------------------

describe('docs/openapi.yaml', () => {
  it('is OpenAPI 3.1 in substance: version, resolvable references, operations with responses, declared parameters and tags', () => {
    assert.match(doc.openapi, /^3\.1\.\d+$/);
    const info = doc.info as Json;
    assert.equal(typeof info.title, 'string');
    assert.equal(typeof info.version, 'string');
    for (const s of (doc.servers as Json[] | undefined) ?? []) {
      assert.match(String(s.url), /^\//, `servers name no host: ${String(s.url)}`);
    }

    // Every $ref, anywhere, is local and resolves.
    let refs = 0;
    const visit = (node: unknown, where: string) => {
      if (!node || typeof node !== 'object') return;
      for (const [k, v] of Object.entries(node as Json)) {
        if (k === '$ref') {
          refs++;
          assert.equal(typeof v, 'string', `${where}: $ref is not a string`);
          assert.notEqual(at(v as string), undefined, `${where}: $ref ${String(v)} does not resolve`);
        } else visit(v, `${where}/${escapePointer(k)}`);
      }
    };
    visit(doc, '#');
    assert.ok(refs > 100, `only ${refs} references found`);

    const tags = new Set(((doc.tags as Json[] | undefined) ?? []).map((t) => t.name));
    const schemes = new Set(Object.keys(((doc.components as Json).securitySchemes as Json | undefined) ?? {}));
    const ids = new Set<string>();
    const ops = operations();
    assert.ok(ops.length > 40);
    for (const o of ops) {
      const name = `${o.method} ${o.path}`;
      const responses = o.op.responses as Json | undefined;
      assert.ok(responses && Object.keys(responses).length > 0, `${name} has no responses`);
      for (const [status, r] of Object.entries(responses)) {
        assert.match(status, /^([1-5](\d\d|XX)|default)$/, `${name}: response key ${status}`);
        assert.equal(typeof deref(r, `${o.where}/responses/${status}`).node.description, 'string', `${name} ${status} has no description`);
      }
      assert.equal(typeof o.op.operationId, 'string', `${name} has no operationId`);
      assert.ok(!ids.has(o.op.operationId as string), `operationId ${String(o.op.operationId)} is used twice`);
      ids.add(o.op.operationId as string);
      for (const t of (o.op.tags as string[] | undefined) ?? []) assert.ok(tags.has(t), `${name}: tag ${t} is not declared`);
      for (const req of (o.op.security as Json[] | undefined) ?? (doc.security as Json[] | undefined) ?? []) {
        for (const s of Object.keys(req)) assert.ok(schemes.has(s), `${name}: security scheme ${s} is not declared`);
      }
      // Path template names and path parameters agree, each required.
      const params = parametersOf(o);
      const inPath = params.filter((p) => p.node.in === 'path');
      const templated = [...o.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
      assert.deepEqual(inPath.map((p) => p.node.name).sort(), templated, `${name}: path parameters`);
      for (const p of inPath) assert.equal(p.node.required, true, `${name}: path parameter ${String(p.node.name)} must be required`);
      for (const p of params) {
        assert.ok(['query', 'header', 'path', 'cookie'].includes(p.node.in as string), `${p.where}: in`);
        assert.ok(p.node.schema || p.node.content, `${p.where}: a parameter needs a schema`);
      }
      const body = o.op.requestBody ? deref(o.op.requestBody, `${o.where}/requestBody`).node : undefined;
      if (body) assert.ok(body.content && Object.keys(body.content as Json).length > 0, `${name}: a request body needs content`);
    }
    // Every schema compiles (strict mode: an unknown or misspelt keyword is an error).
    for (const name of Object.keys(((doc.components as Json).schemas as Json | undefined) ?? {})) validatorAt(pointer('components', 'schemas', name));
  });

  it('documents every route the code serves, and no route it does not (express app; rUS check and SES probed in the service)', async () => {
    const documented = new Set(operations().map((o) => shape(o.method, o.path)));
    const served = new Set(expressRoutes());
    for (const r of await probedRoutes()) served.add(r);
    const undocumented = [...served].filter((r) => !documented.has(r)).sort();
    const stale = [...documented].filter((r) => !served.has(r)).sort();
    assert.deepEqual(
      { undocumented, stale },
      { undocumented: [], stale: [] },
      `served but not in docs/openapi.yaml:\n  ${undocumented.join('\n  ') || '-'}\nin docs/openapi.yaml but not served:\n  ${stale.join('\n  ') || '-'}`,
    );
  });

  it('has examples that validate against their schemas', (t) => {
    const sites = exampleSites();
    t.diagnostic(`${sites.length} examples checked`);
    assert.ok(sites.length > 40, `only ${sites.length} examples found: is the walk broken?`);
    const bad = sites.map((s) => ({ s, p: problems(s.schemaAt, s.value) })).filter((x) => x.p !== undefined);
    assert.deepEqual(
      bad.map((b) => `${b.s.where}: ${b.p}`),
      [],
    );
    // Every operation that takes a body shows one.
    for (const o of operations()) {
      if (!o.op.requestBody) continue;
      const body = deref(o.op.requestBody, `${o.where}/requestBody`);
      const shown = Object.values(body.node.content as Record<string, Json>).some((m) => 'example' in m || Object.keys((m.examples as Json | undefined) ?? {}).length > 0);
      assert.ok(shown, `${o.method} ${o.path}: the request body has no example`);
    }
  });

  it('describes each JSON request body and query exactly as the zod schema the code validates it with', () => {
    const mapped = new Set<string>();
    for (const o of operations()) {
      const key = shape(o.method, o.path);
      const body = o.op.requestBody ? deref(o.op.requestBody, `${o.where}/requestBody`) : undefined;
      const media = (body?.node.content as Record<string, Json> | undefined)?.['application/json'];
      const zodBody = ZOD_BODIES[key];
      if (media && (o.path.startsWith('/v1/') || o.path.startsWith('/admin/'))) {
        assert.ok(zodBody, `${key}: takes JSON, but the test maps no zod schema to it (add it to ZOD_BODIES)`);
      }
      if (zodBody) {
        mapped.add(key);
        assert.ok(media, `${key}: the code validates a JSON body, the document shows none`);
        const documented = deref(media.schema, `${body!.where}/content/application~1json/schema`);
        assert.deepEqual(objectShape(documented.node, documented.where), zodShape(zodBody), `${key}: documented body schema vs zod`);
        const examples = [
          ...('example' in media ? [media.example] : []),
          ...Object.entries((media.examples as Json | undefined) ?? {}).map(([n, e]) => deref(e, n).node.value),
        ];
        assert.ok(examples.length > 0, `${key}: no example`);
        for (const e of examples) {
          const parsed = zodBody.safeParse(e);
          assert.ok(parsed.success, `${key}: the example ${JSON.stringify(e)} is refused by the code: ${parsed.error?.message}`);
        }
      }
      const zodQuery = ZOD_QUERIES[key];
      const query = parametersOf(o).filter((p) => p.node.in === 'query');
      if (zodQuery) {
        mapped.add(key);
        const expected = zodShape(zodQuery);
        assert.deepEqual(query.map((p) => p.node.name as string).sort(), expected.properties, `${key}: documented query parameters vs zod`);
        assert.deepEqual(query.filter((p) => p.node.required === true).map((p) => p.node.name as string).sort(), expected.required, `${key}: required query parameters`);
      } else if (query.length > 0 && (o.path.startsWith('/v1/') || o.path.startsWith('/admin/'))) {
        assert.fail(`${key}: takes query parameters, but the test maps no zod schema to them (add it to ZOD_QUERIES)`);
      }
    }
    const unmapped = [...Object.keys(ZOD_BODIES), ...Object.keys(ZOD_QUERIES)].filter((k) => !mapped.has(k));
    assert.deepEqual(unmapped, [], 'mapped zod schemas whose operation is not documented');
  });
});

describe('docs/openapi.yaml against the scopes of the code', () => {
  it('lists on every operation that needs an admin token exactly the scopes its route declares', () => {
    const problems: string[] = [];
    const scoped = routeTable(svc.app).filter((r) => r.scopes !== undefined);
    assert.ok(scoped.length > 30, `the router walk found only ${scoped.length} routes with scopes`);
    const declared = new Map(scoped.map((r) => [shape(r.method, r.path), [...new Set(r.scopes)].sort()]));
    const ops = new Map(operations().map((o) => [shape(o.method, o.path), o]));
    for (const [key, want] of declared) {
      const o = ops.get(key);
      if (!o) continue; // undocumented: the route test says so
      const got = documentedScopes(o, problems);
      if (got === undefined || got.length === 0) problems.push(`${key}: documents no scopes; the code lets ${want.join(', ')} call it`);
      else if (got.join(' ') !== want.join(' ')) problems.push(`${key}: documents the scopes ${got.join(', ')}; the code declares ${want.join(', ')}`);
    }
    // Every documented admin operation (and any that needs a token) names its scopes, and only
    // operations whose route checks scopes document any.
    const rootNeedsToken = ((doc.security as Json[] | undefined) ?? []).length > 0;
    for (const [key, o] of ops) {
      const scopes = documentedScopes(o, []);
      const needsToken = o.path.startsWith('/admin/') || (o.op.security === undefined ? rootNeedsToken : (o.op.security as Json[]).length > 0);
      if (needsToken && (scopes === undefined || scopes.length === 0)) problems.push(`${key}: an admin operation that documents no scopes`);
      if (scopes !== undefined && scopes.length > 0 && !declared.has(key)) problems.push(`${key}: documents scopes, but its route checks none`);
    }
    assert.deepEqual(problems, []);
  });

  it('names every scope in the Scope schema and in the admin scheme\'s description', () => {
    const schemes = (doc.components as Json).securitySchemes as Record<string, Json>;
    const description = String(schemes[ADMIN_SCHEME]?.description ?? '');
    for (const s of SCOPES) assert.ok(description.includes(`| \`${s}\` |`), `the ${ADMIN_SCHEME} scheme's description has no row for ${s}`);
    const scope = ((doc.components as Json).schemas as Record<string, Json>).Scope!;
    assert.deepEqual([...(scope.enum as string[])].sort(), [...SCOPES].sort());
  });
});

describe('a running service against docs/openapi.yaml', () => {
  it('serves the document at GET /openapi.json: public, cacheable, equal to the YAML', async () => {
    const res = await api().get('/openapi.json');
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'] as string, /^application\/json\b/);
    assert.match(res.headers['cache-control'] as string, /^public, max-age=\d+$/);
    assert.deepEqual(res.body, JSON.parse(JSON.stringify(doc)));
    checkAnswer('GET', '/openapi.json', res);
  });

  it('answers health, metrics, leases and the admin API as documented', async () => {
    checkAnswer('GET', '/healthz', await api().get('/healthz'));
    checkAnswer('GET', '/readyz', await api().get('/readyz'));
    checkAnswer('GET', '/metrics', await api().get('/metrics'));

    const admin = (m: 'get' | 'post' | 'patch' | 'put' | 'delete', path: string) => api()[m](`/admin/v1${path}`).set(AUTH);
    checkAnswer('GET', '/admin/v1/entitlements', await api().get('/admin/v1/entitlements'));
    checkAnswer('POST', '/admin/v1/entitlements', await admin('post', '/entitlements').send({ server: 'rm.example.com', key: 'no&good' }));
    const ent = await admin('post', '/entitlements').send({ server: 'rm.example.com', class: 'myProduct', key: 'real-key-1' });
    assert.equal(ent.status, 201);
    checkAnswer('POST', '/admin/v1/entitlements', ent);
    checkAnswer('GET', '/admin/v1/entitlements', await admin('get', '/entitlements'));
    checkAnswer('GET', '/admin/v1/entitlements/{id}', await admin('get', `/entitlements/${ent.body.id}`));
    checkAnswer('GET', '/admin/v1/entitlements/{id}', await admin('get', '/entitlements/999999'));
    checkAnswer('PATCH', '/admin/v1/entitlements/{id}', await admin('patch', `/entitlements/${ent.body.id}`).send({ class: null }));

    const vk = await admin('post', '/virtual-keys').send({ entitlementId: ent.body.id, key: 'cust-42', maxConcurrentLeases: 1 });
    assert.equal(vk.status, 201, vk.text);
    checkAnswer('POST', '/admin/v1/virtual-keys', vk);
    checkAnswer('GET', '/admin/v1/virtual-keys', await admin('get', '/virtual-keys?limit=1'));
    checkAnswer('POST', '/admin/v1/virtual-keys/lookup', await admin('post', '/virtual-keys/lookup').send({ key: 'cust-42' }));
    checkAnswer('PUT', '/admin/v1/products/{code}', await admin('put', '/products/SKU-1').send({ entitlementId: ent.body.id }));
    checkAnswer('GET', '/admin/v1/products', await admin('get', '/products'));
    const csv = await admin('post', '/virtual-keys/import').set('Content-Type', 'text/csv').send(`key,entitlement_id\nimported-1,${ent.body.id}\n`);
    assert.equal(csv.status, 201, csv.text);
    checkAnswer('POST', '/admin/v1/virtual-keys/import', csv);

    // The rUS check.
    const granted = await api().get('/?server=rm.example.com;key=cust-42');
    assert.equal(granted.status, 200);
    checkAnswer('GET', '/', granted);
    checkAnswer('GET', '/rus/check', await api().get('/rus/check?server=rm.example.com&key=nope'));
    checkAnswer('GET', '/rus/check', await api().get('/rus/check?server=rm.example.com'));
    checkAnswer('GET', '/', await api().post('/?server=rm.example.com&key=cust-42'));

    // Leases.
    const pool = await admin('post', '/pools').send({ name: 'render-farm', seats: 1 });
    checkAnswer('POST', '/admin/v1/pools', pool);
    checkAnswer('GET', '/admin/v1/pools', await admin('get', '/pools'));
    const lease = await api().post('/v1/leases').set(AUTH).send({ pool: 'render-farm', clientId: 'ws-1', ttlSeconds: 60, metadata: { app: 'renderer' } });
    assert.equal(lease.status, 201, lease.text);
    checkAnswer('POST', '/v1/leases', lease);
    checkAnswer('POST', '/v1/leases', await api().post('/v1/leases').set(AUTH).send({ pool: 'render-farm', clientId: 'ws-1' }));
    const full = await api().post('/v1/leases').set(AUTH).send({ pool: 'render-farm', clientId: 'ws-2' });
    assert.equal(full.status, 409);
    checkAnswer('POST', '/v1/leases', full);
    checkAnswer('POST', '/v1/leases', await api().post('/v1/leases').send({ virtualKey: 'cust-42', clientId: 'ws-9' }));
    checkAnswer('POST', '/v1/leases', await api().post('/v1/leases').set(AUTH).send({ pool: 'render-farm' }));
    const anonymous = await api().post('/v1/leases').send({ pool: 'render-farm', clientId: 'ws-3' });
    assert.equal(anonymous.status, 401);
    checkAnswer('POST', '/v1/leases', anonymous);
    checkAnswer('GET', '/admin/v1/pools/{name}', await admin('get', '/pools/render-farm'));
    checkAnswer('GET', '/v1/pools/{name}', await api().get('/v1/pools/render-farm').set(AUTH));
    checkAnswer('GET', '/v1/pools/{name}', await api().get('/v1/pools/render-farm'));
    const hb = await api().post(`/v1/leases/${lease.body.leaseId}/heartbeat`).set(AUTH).send({ ttlSeconds: 30 });
    assert.equal(hb.status, 200, hb.text);
    checkAnswer('POST', '/v1/leases/{leaseId}/heartbeat', hb);
    checkAnswer('DELETE', '/v1/leases/{leaseId}', await api().delete(`/v1/leases/${lease.body.leaseId}`).set(AUTH));
    checkAnswer('POST', '/v1/leases/{leaseId}/heartbeat', await api().post(`/v1/leases/${lease.body.leaseId}/heartbeat`).set(AUTH).send({}));
    checkAnswer('DELETE', '/admin/v1/leases/{leaseId}', await admin('delete', `/leases/${randomUUID()}`));
    checkAnswer('GET', '/admin/v1/lease-events', await admin('get', '/lease-events?pool=render-farm'));
    checkAnswer('PATCH', '/admin/v1/pools/{name}', await admin('patch', '/pools/render-farm').send({ seats: 2 }));

    // The check's audit trail (events are written off the request path).
    let audit: request.Response | undefined;
    for (let i = 0; i < 50; i++) {
      audit = await admin('get', '/audit?limit=10');
      if ((audit.body.items as unknown[]).length >= 3) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok((audit!.body.items as unknown[]).length >= 3, audit!.text);
    checkAnswer('GET', '/admin/v1/audit', audit!);
    checkAnswer('GET', '/admin/v1/audit', await admin('get', '/audit?cursor=5&after=1'));
  });

  it('answers the SES protocol as documented, and its examples get documented answers', async () => {
    const post = (path: string, body: unknown) => api().post(path).set('Content-Type', 'application/json; odata=minimalmetadata').send(JSON.stringify(body));
    const token = await mint(['contosoapp'], { vmid: 'vm-42' });
    for (const version of [V1, '2017-06-01.5.1', '2017-09-01.6.0', V2]) {
      const res = await post(`/softwareEntitlements?api-version=${version}`, { token, applicationId: 'contosoapp' });
      assert.equal(res.status, 200, res.text);
      checkAnswer('POST', '/softwareEntitlements', res);
    }
    const acquired = await post(`/softwareEntitlements/?api-version=${LATEST}`, { token, applicationId: 'ContosoApp', duration: 'PT5M' });
    assert.equal(acquired.status, 200, acquired.text);
    checkAnswer('POST', '/softwareEntitlements', acquired);
    const one = `/softwareEntitlements/${acquired.body.entitlementId}`;
    const renewed = await post(`${one}?api-version=${LATEST}`, { duration: 'PT10M' });
    assert.equal(renewed.status, 200, renewed.text);
    checkAnswer('POST', '/softwareEntitlements/{entitlementId}', renewed);
    const released = await api().delete(`${one}?api-version=${LATEST}`);
    assert.equal(released.status, 204);
    checkAnswer('DELETE', '/softwareEntitlements/{entitlementId}', released);
    const again = await post(`${one}?api-version=${LATEST}`, { duration: 'PT10M' });
    assert.equal(again.status, 409);
    checkAnswer('POST', '/softwareEntitlements/{entitlementId}', again);

    // Refusals.
    const refusals: [string, string, request.Response][] = [
      ['POST', '/softwareEntitlements', await post('/softwareEntitlements', { token, applicationId: 'contosoapp' })],
      ['POST', '/softwareEntitlements', await post('/softwareEntitlements?api-version=2016-01-01.1.0', { token, applicationId: 'contosoapp' })],
      ['POST', '/softwareEntitlements', await post(`/softwareEntitlements?api-version=${V1}`, { token, applicationId: 'otherapp' })],
      ['POST', '/softwareEntitlements', await post(`/softwareEntitlements?api-version=${V1}`, { token: 'not-a-token', applicationId: 'contosoapp' })],
      ['POST', '/softwareEntitlements', await post(`/softwareEntitlements?api-version=${LATEST}`, { token, applicationId: 'contosoapp', duration: 'P1Y' })],
      ['POST', '/softwareEntitlements', await post(`/softwareEntitlements?api-version=${V1}`, 'x'.repeat(70_000))],
      ['POST', '/softwareEntitlements', await post(`/softwareEntitlements?api-version=${V1}`, { token, applicationId: 'x'.repeat(257) })],
      ['POST', '/softwareEntitlements/{entitlementId}', await post(`/softwareEntitlements/not-a-uuid?api-version=${LATEST}`, 'x'.repeat(70_000))],
      ['POST', '/softwareEntitlements/{entitlementId}', await post(`/softwareEntitlements/${randomUUID()}?api-version=${LATEST}`, { duration: 'PT1M' })],
      ['POST', '/softwareEntitlements/{entitlementId}', await post(`${one}?api-version=${V2}`, { duration: 'PT1M' })],
      ['DELETE', '/softwareEntitlements/{entitlementId}', await api().delete(`/softwareEntitlements/not-a-uuid?api-version=${LATEST}`)],
    ];
    assert.deepEqual(
      refusals.map(([, , r]) => r.status),
      [400, 400, 403, 403, 400, 413, 400, 404, 404, 400, 404],
    );
    for (const [m, p, r] of refusals) checkAnswer(m, p, r);

    // The documented request examples, sent as they are (their token is signed by another key).
    for (const o of operations().filter((x) => x.path.startsWith('/softwareEntitlements'))) {
      if (!o.op.requestBody) continue;
      const media = (deref(o.op.requestBody, o.where).node.content as Record<string, Json>)['application/json']!;
      for (const [name, e] of Object.entries((media.examples as Json | undefined) ?? {})) {
        const value = deref(e, name).node.value;
        const path = o.path.replace('{entitlementId}', randomUUID());
        const version = o.path === '/softwareEntitlements' && !(value as Json).duration ? V1 : LATEST;
        const res = await post(`${path}?api-version=${version}`, value);
        assert.ok(res.status !== 200 || o.path !== '/softwareEntitlements', `${name}: the example token was accepted`);
        checkAnswer(o.method, o.path, res);
      }
    }
  });

  it('answers whoami, admin tokens, the bootstrap token, the admin audit and every refusal as documented', async () => {
    const as = (token: string) => ({ Authorization: `Bearer ${token}` });
    const call = (m: 'get' | 'post' | 'put' | 'delete', path: string, auth: Record<string, string> = AUTH) => api()[m](`/admin/v1${path}`).set(auth);
    const expect = (status: number, res: request.Response) => {
      assert.equal(res.status, status, res.text);
      return res;
    };

    checkAnswer('GET', '/admin/v1/whoami', expect(200, await call('get', '/whoami')));
    checkAnswer('GET', '/admin/v1/whoami', expect(401, await api().get('/admin/v1/whoami')));
    const reader = expect(201, await call('post', '/admin-tokens').send({ name: 'doc-reader', scopes: ['read'], expiresAt: '2099-01-01' }));
    checkAnswer('POST', '/admin/v1/admin-tokens', reader);
    const minter = expect(201, await call('post', '/admin-tokens').send({ name: 'doc-minter', scopes: ['tokens:mint'] })).body.token as string;
    checkAnswer('GET', '/admin/v1/whoami', expect(200, await call('get', '/whoami', as(reader.body.token))));
    checkAnswer('POST', '/admin/v1/admin-tokens', expect(409, await call('post', '/admin-tokens').send({ name: 'doc-reader', scopes: ['read'] })));
    checkAnswer('POST', '/admin/v1/admin-tokens', expect(400, await call('post', '/admin-tokens').send({ name: 'bootstrap', scopes: ['read'] })));
    checkAnswer('GET', '/admin/v1/admin-tokens', expect(200, await call('get', '/admin-tokens?all=true')));
    checkAnswer('GET', '/admin/v1/admin-tokens', expect(400, await call('get', '/admin-tokens?all=yes')));

    // Scope refusals, on an admin route of each kind and on /v1.
    const refused = expect(403, await call('post', '/entitlements', as(reader.body.token)).send({ server: 'rm.example.com', key: 'k' }));
    assert.equal(refused.body.code, 'insufficient_scope');
    checkAnswer('POST', '/admin/v1/entitlements', refused);
    checkAnswer('GET', '/admin/v1/admin-tokens', expect(403, await call('get', '/admin-tokens', as(reader.body.token))));
    checkAnswer('POST', '/admin/v1/tokens', expect(403, await call('post', '/tokens', as(reader.body.token)).send({})));
    checkAnswer('GET', '/admin/v1/pools/{name}', expect(403, await call('get', '/pools/render-farm', as(minter))));
    checkAnswer('GET', '/v1/pools/{name}', expect(403, await api().get('/v1/pools/render-farm').set(as(minter))));

    // Revocation.
    checkAnswer('DELETE', '/admin/v1/admin-tokens/{ref}', expect(204, await call('delete', '/admin-tokens/doc-reader')));
    checkAnswer('DELETE', '/admin/v1/admin-tokens/{ref}', expect(404, await call('delete', '/admin-tokens/doc-reader')));
    checkAnswer('DELETE', '/admin/v1/admin-tokens/{ref}', expect(400, await call('delete', '/admin-tokens/not%20a%20name')));
    checkAnswer('GET', '/admin/v1/whoami', expect(401, await call('get', '/whoami', as(reader.body.token))));

    // The bootstrap token: not off without an admin token; off, refused; on again.
    checkAnswer('GET', '/admin/v1/bootstrap-token', expect(200, await call('get', '/bootstrap-token')));
    checkAnswer('PUT', '/admin/v1/bootstrap-token', expect(409, await call('put', '/bootstrap-token').send({ enabled: false })));
    checkAnswer('PUT', '/admin/v1/bootstrap-token', expect(400, await call('put', '/bootstrap-token').send({ enabled: 'no' })));
    const admin = expect(201, await call('post', '/admin-tokens').send({ name: 'doc-admin', scopes: ['admin'] })).body.token as string;
    try {
      checkAnswer('PUT', '/admin/v1/bootstrap-token', expect(200, await call('put', '/bootstrap-token').send({ enabled: false })));
      const off = expect(401, await call('get', '/entitlements'));
      assert.equal(off.body.code, 'bootstrap_token_disabled');
      checkAnswer('GET', '/admin/v1/entitlements', off);
    } finally {
      checkAnswer('PUT', '/admin/v1/bootstrap-token', expect(200, await call('put', '/bootstrap-token', as(admin)).send({ enabled: true })));
    }

    // The admin audit trail (written off the request path).
    let events: request.Response | undefined;
    for (let i = 0; i < 100; i++) {
      events = expect(200, await call('get', '/admin-events?limit=1000'));
      if ((events.body.items as { status: number }[]).some((e) => e.status === 403)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok((events!.body.items as { status: number }[]).some((e) => e.status === 403), events!.text);
    checkAnswer('GET', '/admin/v1/admin-events', events!);
    checkAnswer('GET', '/admin/v1/admin-events', expect(200, await call('get', '/admin-events?actor=doc-admin&since=2020-01-01&limit=1')));
    checkAnswer('GET', '/admin/v1/admin-events', expect(400, await call('get', '/admin-events?cursor=5&after=1')));
  });
});
