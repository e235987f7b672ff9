import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { renderEnvExample, replaceSettingsTable } from '../../../config/settings-docs.ts';

const root = new URL('../../../', import.meta.url);

it('.env.example lists every setting as config/settings.ts defines it (run npm run docs:settings)', () => {
  assert.equal(readFileSync(new URL('.env.example', root), 'utf8'), renderEnvExample());
});

it('the README settings table matches config/settings.ts (run npm run docs:settings)', () => {
  const readme = readFileSync(new URL('README.md', root), 'utf8');
  assert.equal(replaceSettingsTable(readme), readme);
});
