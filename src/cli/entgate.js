#!/usr/bin/env node
// The `entgate` command. entgate runs its TypeScript sources through tsx (no build step).
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
