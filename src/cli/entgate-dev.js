#!/usr/bin/env node
// `entgate` straight from the TypeScript sources, through tsx, with no build: what the tests
// and the benchmarks run (so that a stale dist/ never hides a change) and `npm run dev`.
// The package's own `entgate` (its bin, `npm start`, the container) is the build:
// dist/src/cli/main.js.
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
