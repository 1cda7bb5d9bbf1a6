#!/usr/bin/env -S node --max-semi-space-size=64
// Entry point for `npx runtrail` / `npm start`. Runs the TypeScript sources directly through
// tsx's loader, so users need no build step and a stale build can never diverge from the source.
// --max-semi-space-size=64 (also in package.json's scripts and the Dockerfile): a pipeline keeps
// each event alive across a few batches, so with V8's default 16 MiB semi-spaces most of them are
// promoted and die in costly full collections. 64 MiB measured +7 to +29 % events/s in
// `runtrail bench` (docs/performance.md); it can only be set when Node starts, and NODE_OPTIONS
// may override it.
import { register } from 'tsx/esm/api';

register();
// A reader that stops early (`runtrail sql ... | head`) closes the pipe; stop quietly as Unix tools
// do instead of dying on an unhandled EPIPE with a stack trace.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});
const { main } = await import('../services/cli/main.ts');
const code = await main(process.argv.slice(2));
process.exitCode = code;
