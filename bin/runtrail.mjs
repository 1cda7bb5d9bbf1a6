#!/usr/bin/env node
// Entry point for `npx runtrail` / `npm start`. Runs the TypeScript sources directly through
// tsx's loader, so users need no build step and a stale build can never diverge from the source.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../services/cli/main.ts');
const code = await main(process.argv.slice(2));
process.exitCode = code;
