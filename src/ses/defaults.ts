/** The SDK's defaults for `iss` and `aud` (kept apart from jose so the CLI starts fast). */
export const SDK_DEFAULT_ISSUER = 'https://batch.azure.test/software-entitlement';
export const SDK_DEFAULT_AUDIENCE = 'https://batch.azure.test/software-entitlement';
