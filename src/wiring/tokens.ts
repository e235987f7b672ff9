import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Router } from 'express';
import { EventWriter } from '../store/check-events.ts';
import { TokenVerifier } from '../ses/verifier.ts';
import { SesService, type TokenEvent } from '../ses/service.ts';
import { TOKEN_EVENTS } from '../ses/events.ts';
import { createSesHandler } from '../ses/routes.ts';
import { mintRoutes } from '../ses/mint-routes.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { Foundation } from './foundation.ts';
import type { LeasesPart } from './leases.ts';
import type { Preflight } from './preflight.ts';

/** Software entitlement tokens (Azure Batch SES): its front door, the mint routes, its audit. */
export interface TokensPart {
  handle: (req: IncomingMessage, res: ServerResponse, path: string, query: string) => void;
  /** Mounted under /admin/v1 (scope tokens:mint). */
  mintRoutes: Router;
  events: EventWriter<TokenEvent>;
  stats: () => Record<string, unknown>;
}

export function wireTokens(base: Foundation, pre: Preflight, leases: LeasesPart, metrics: Metrics, isClosing: () => boolean): TokensPart {
  const { config, logger, life, db } = base;
  const events = new EventWriter<TokenEvent>(db.knex, logger, TOKEN_EVENTS, base.eventWriter);
  life.add('token events', () => events.close());
  const verifier = new TokenVerifier({
    issuer: config.sesIssuer,
    audience: config.sesAudience,
    signingKeys: pre.ses.signingKeys,
    decryptionKeys: pre.ses.decryptionKeys,
    requireSigned: config.sesRequireSigned,
    requireEncrypted: pre.ses.requireEncrypted,
    clockSkewSeconds: config.sesClockSkewSeconds,
    cacheMaxEntries: config.cacheMaxEntries,
  });
  const ses = new SesService({
    verifier,
    seats: leases.service.seats,
    events: {
      record: (event: TokenEvent) => {
        events.record(event);
        metrics.observeSesToken(event);
      },
    },
    logger,
  });
  // With TLS, SES is served on HTTPS only unless ENTGATE_SES_ALLOW_HTTP (decided per request from its socket).
  const handle = createSesHandler({ ses, trustedProxies: pre.trustedProxies, logger, isClosing, plainHttp: pre.tls === undefined || config.sesAllowHttp });
  return {
    handle,
    mintRoutes: mintRoutes({
      issuer: config.sesIssuer,
      audience: config.sesAudience,
      signingKey: pre.ses.mintSigningKey,
      encryptionKey: pre.ses.mintEncryptionKey,
    }),
    events,
    stats: () => ({ tokenEvents: events.getStats(), tokenCache: { entries: verifier.cacheSize } }),
  };
}
