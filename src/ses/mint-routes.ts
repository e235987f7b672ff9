import type { Router } from 'express';
import { z } from 'zod';
import { AppError } from '../lib/errors.ts';
import { scopedRouter } from '../auth/scoped-router.ts';
import { parseIp } from '../lib/ip.ts';
import { validate } from '../lib/http/validate.ts';
import type { RingKey } from '../lib/key-ring.ts';
import { mintToken } from './minter.ts';

export interface MintConfig {
  issuer: string;
  audience: string;
  signingKey: RingKey | undefined;
  encryptionKey: RingKey | undefined;
}

const address = z.string().refine((v) => parseIp(v) !== undefined, { message: 'not an IP address' });
const time = z.iso.datetime({ offset: true }).transform((v) => new Date(v));

export const mintBody = z
  .strictObject({
    applicationIds: z.array(z.string().min(1).max(256)).min(1).max(100),
    addresses: z.array(address).min(1).max(100),
    notBefore: time.optional(),
    notAfter: time.optional(),
    vmid: z.string().min(1).max(256).optional(),
  })
  .refine((b) => !(b.notBefore && b.notAfter && b.notAfter <= b.notBefore), { message: 'notAfter must be later than notBefore', path: ['notAfter'] });

/**
 * `POST /admin/v1/tokens`: a scheduler that is not Azure Batch mints the token it hands a job.
 * Signed with ENTGATE_SES_MINT_SIGNING_KEY, encrypted to ENTGATE_SES_MINT_ENCRYPTION_KEY when set.
 */
export function mintRoutes(config: MintConfig): Router {
  const r = scopedRouter();
  r.post('/tokens', 'tokens:mint', async (req, res) => {
    if (!config.signingKey) {
      throw new AppError(409, 'minting_not_configured', 'set ENTGATE_SES_MINT_SIGNING_KEY to mint tokens through the admin API');
    }
    const body = validate(mintBody, req.body);
    const notBefore = body.notBefore ?? new Date();
    const notAfter = body.notAfter ?? new Date(notBefore.getTime() + 7 * 86_400_000);
    const id = `token-${crypto.randomUUID()}`;
    const token = await mintToken({
      id,
      applications: body.applicationIds,
      addresses: body.addresses,
      notBefore,
      notAfter,
      vmid: body.vmid,
      issuer: config.issuer,
      audience: config.audience,
      signingKey: config.signingKey,
      encryptionKey: config.encryptionKey,
    });
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json({ id, token, notBefore: notBefore.toISOString(), notAfter: notAfter.toISOString() });
  });
  return r.router;
}
