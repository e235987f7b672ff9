import { readFileSync } from 'node:fs';
import type { RequestHandler } from 'express';
import { parse } from 'yaml';
import type { Logger } from '../lib/logger.ts';
import { packageFile } from '../lib/package-files.ts';

/** The human-edited API description, shipped with the code: `docs/openapi.yaml`. */
export const OPENAPI_FILE = packageFile('docs/openapi.yaml');

export type OpenApiDocument = Record<string, unknown> & { openapi: string; paths: Record<string, unknown> };

/** Reads and parses an OpenAPI document; throws an Error naming the file and the problem. */
export function loadOpenApi(file: URL = OPENAPI_FILE): OpenApiDocument {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${file.pathname}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try {
    // Strict YAML: a duplicated key or a syntax error is an error, not a guess.
    doc = parse(text, { prettyErrors: true, uniqueKeys: true });
  } catch (err) {
    throw new Error(`${file.pathname} is not valid YAML: ${(err as Error).message}`);
  }
  const d = doc as Partial<OpenApiDocument> | null;
  if (d === null || typeof d !== 'object' || typeof d.openapi !== 'string' || !/^3\.1\.\d+$/.test(d.openapi) || typeof d.paths !== 'object') {
    throw new Error(`${file.pathname} is not an OpenAPI 3.1 document (no openapi: 3.1.x, or no paths)`);
  }
  return d as OpenApiDocument;
}

type Loaded = { body: string } | { problem: string };
let loaded: Loaded | undefined;

/** Once per process: the document as JSON text, or why it could not be had. */
function loadOnce(): Loaded {
  if (loaded === undefined) {
    try {
      loaded = { body: JSON.stringify(loadOpenApi()) };
    } catch (err) {
      loaded = { problem: (err as Error).message };
    }
  }
  return loaded;
}

/**
 * `GET /openapi.json`: `docs/openapi.yaml` as JSON, public and cacheable. The file is read and
 * parsed here, when the app is built (once per process), so that no request pays for parsing
 * on the event loop the rUS check shares. A missing or broken file is logged at start and
 * answered `500 openapi_unavailable`, but does not stop the gateway: the API description
 * is documentation, and the checks and leases do not depend on it.
 */
export function openApiRoute(logger: Logger): RequestHandler {
  const doc = loadOnce();
  if ('problem' in doc) logger.error({ err: doc.problem }, 'the OpenAPI document cannot be served');
  return (_req, res) => {
    if ('problem' in doc) {
      res.status(500).json({
        code: 'openapi_unavailable',
        message: 'the API description could not be loaded (see the server log)',
        requestId: res.locals.requestId,
      });
      return;
    }
    res.setHeader('Cache-Control', 'public, max-age=300');
    res.type('application/json').send(doc.body);
  };
}
