import { readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';

/**
 * Summarises a V8 `.cpuprofile` (from `node --import tsx --cpu-prof ...`): the functions with the
 * most self time, each with its TypeScript `file:line`.
 *
 * tsx compiles every module to whitespace-minified JavaScript, so V8's positions all point at
 * line 2 of the generated code. The source maps tsx produced sit in its transform cache
 * (`<tmpdir>/tsx-<uid>/`), one JSON file per module holding `code` and `map`; this module reads
 * them to map each function's generated position back to its source line. Modules not found in
 * the cache keep their generated position.
 *
 * Usage: `node --import tsx services/bench/cpuprofile-summary.ts FILE.cpuprofile [TOP]`
 */

const CallFrameSchema = z.object({
  functionName: z.string(),
  url: z.string(),
  lineNumber: z.number(),
  columnNumber: z.number(),
});
const CpuProfileSchema = z.object({
  nodes: z.array(z.object({ id: z.number(), callFrame: CallFrameSchema, children: z.array(z.number()).optional() })),
  samples: z.array(z.number()),
  timeDeltas: z.array(z.number()),
});
type CallFrame = z.infer<typeof CallFrameSchema>;

/** One row of the summary. */
export interface HotSpot {
  /** `name file:line`, the line in the original source when it could be mapped. */
  location: string;
  selfMs: number;
  /** Share of all sampled time, percent. */
  percent: number;
}

/** Self time per function, largest first. */
export function summarizeCpuProfile(profile: unknown, resolve: (frame: CallFrame) => string = plainLocation): { totalMs: number; top: HotSpot[] } {
  const p = CpuProfileSchema.parse(profile);
  const frames = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const selfUs = new Map<string, number>();
  let totalUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const frame = frames.get(p.samples[i] as number);
    const dt = p.timeDeltas[i] ?? 0;
    totalUs += dt;
    if (!frame) continue;
    const key = resolve(frame);
    selfUs.set(key, (selfUs.get(key) ?? 0) + dt);
  }
  const top = [...selfUs]
    .sort((a, b) => b[1] - a[1])
    .map(([location, us]) => ({ location, selfMs: us / 1000, percent: totalUs > 0 ? (100 * us) / totalUs : 0 }));
  return { totalMs: totalUs / 1000, top };
}

/**
 * Inclusive time per source file: a sample counts once for every file on its stack, so the rows
 * answer "how much time was spent in (or under) code of this file". Node internals and native
 * frames are left out; files are shortened relative to the working directory.
 */
export function inclusiveByFile(profile: unknown): { totalMs: number; files: Array<{ file: string; ms: number; percent: number }> } {
  const p = CpuProfileSchema.parse(profile);
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const frames = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const filesOf = new Map<number, Set<string>>();
  const stackFiles = (id: number): Set<string> => {
    const known = filesOf.get(id);
    if (known) return known;
    const up = parent.get(id);
    const files = new Set(up === undefined ? [] : stackFiles(up));
    const url = frames.get(id)?.url ?? '';
    if (url.startsWith('file://')) files.add(shortUrl(url));
    filesOf.set(id, files);
    return files;
  };
  const ms = new Map<string, number>();
  let totalUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    totalUs += dt;
    for (const f of stackFiles(p.samples[i] as number)) ms.set(f, (ms.get(f) ?? 0) + dt / 1000);
  }
  const files = [...ms]
    .sort((a, b) => b[1] - a[1])
    .map(([file, v]) => ({ file, ms: v, percent: totalUs > 0 ? (100 * v * 1000) / totalUs : 0 }));
  return { totalMs: totalUs / 1000, files };
}

function shortUrl(url: string): string {
  if (url === '') return '';
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const cwd = `${process.cwd()}/`;
  return path.startsWith(cwd) ? path.slice(cwd.length) : path;
}

function plainLocation(f: CallFrame): string {
  return `${f.functionName || '(anonymous)'} ${shortUrl(f.url)}:${f.lineNumber + 1}`;
}

// ---------------------------------------------------------------------------------------------
// Source maps from tsx's cache
// ---------------------------------------------------------------------------------------------

const TsxCacheEntrySchema = z.object({
  code: z.string(),
  map: z.object({ mappings: z.string(), sources: z.array(z.string()).optional() }).passthrough().optional(),
});

/** Per generated line: segments [generatedColumn, sourceLine] sorted by column. */
type LineIndex = Array<Array<[number, number]>>;

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const BASE64_VALUE = new Map([...BASE64].map((c, i) => [c, i]));

/** Decodes source map `mappings` (VLQ) into generated-column -> source-line segments. */
function decodeMappings(mappings: string): LineIndex {
  const lines: LineIndex = [];
  let srcLine = 0;
  for (const lineText of mappings.split(';')) {
    const segs: Array<[number, number]> = [];
    let genCol = 0;
    for (const seg of lineText.split(',')) {
      if (seg === '') continue;
      const fields: number[] = [];
      let value = 0;
      let shift = 0;
      for (const ch of seg) {
        const digit = BASE64_VALUE.get(ch) ?? 0;
        value += (digit & 31) << shift;
        if (digit & 32) {
          shift += 5;
        } else {
          fields.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      genCol += fields[0] ?? 0;
      if (fields.length >= 4) {
        srcLine += fields[2] ?? 0;
        segs.push([genCol, srcLine]);
      }
    }
    lines.push(segs);
  }
  return lines;
}

/** Maps frames of tsx-compiled modules back to their source lines using tsx's transform cache. */
export function tsxSourceResolver(cacheDir = join(tmpdir(), `tsx-${userInfo().uid}`)): (frame: CallFrame) => string {
  const byFile = new Map<string, { mtime: number; index: LineIndex; prefixLines: number }>();
  let names: string[] = [];
  try {
    names = readdirSync(cacheDir);
  } catch {
    // No cache (tsx not used, or another tmpdir): positions stay as V8 reported them.
  }
  for (const name of names) {
    const path = join(cacheDir, name);
    let entry: z.infer<typeof TsxCacheEntrySchema>;
    try {
      const parsed = TsxCacheEntrySchema.safeParse(JSON.parse(readFileSync(path, 'utf8')));
      if (!parsed.success || !parsed.data.map) continue;
      entry = parsed.data;
    } catch {
      continue;
    }
    // tsx prefixes CommonJS-wrapped code with `__filename="...";(()=>{` on a line of its own.
    const m = /^__filename="([^"]+)"/.exec(entry.code);
    const file = m?.[1] ?? entry.map?.sources?.[0];
    if (file === undefined || !entry.map) continue;
    const mtime = statSync(path).mtimeMs;
    const prev = byFile.get(file);
    if (prev && prev.mtime >= mtime) continue;
    byFile.set(file, { mtime, index: decodeMappings(entry.map.mappings), prefixLines: 0 });
  }
  return (f) => {
    const url = f.url.startsWith('file://') ? fileURLToPath(f.url) : f.url;
    const mapped = byFile.get(url);
    const segs = mapped?.index[f.lineNumber - (mapped?.prefixLines ?? 0)];
    if (!mapped || !segs || segs.length === 0) return plainLocation(f);
    let line = -1;
    for (const [col, src] of segs) {
      if (col > f.columnNumber) break;
      line = src;
    }
    if (line < 0) line = (segs[0] as [number, number])[1];
    return `${f.functionName || '(anonymous)'} ${shortUrl(f.url)}:${line + 1}`;
  };
}

function main(argv: readonly string[]): void {
  const [file, topArg] = argv;
  if (!file) {
    process.stderr.write('usage: node --import tsx services/bench/cpuprofile-summary.ts FILE.cpuprofile [TOP]\n');
    process.exitCode = 2;
    return;
  }
  const top = topArg === undefined ? 30 : Number(topArg);
  if (!Number.isInteger(top) || top < 1) {
    process.stderr.write(`TOP must be a positive integer, got "${topArg}"\n`);
    process.exitCode = 2;
    return;
  }
  const summary = summarizeCpuProfile(JSON.parse(readFileSync(file, 'utf8')), tsxSourceResolver());
  process.stdout.write(`total sampled ${summary.totalMs.toFixed(0)} ms\n  self%   self ms  function location\n`);
  for (const h of summary.top.slice(0, top)) {
    process.stdout.write(`${h.percent.toFixed(1).padStart(6)}% ${h.selfMs.toFixed(0).padStart(8)}  ${h.location}\n`);
  }
  const byFile = inclusiveByFile(JSON.parse(readFileSync(file, 'utf8')));
  process.stdout.write(`\ninclusive time by file (a sample counts for every file on its stack)\n  incl%   incl ms  file\n`);
  for (const f of byFile.files.filter((x) => !x.file.includes('node_modules/tsx')).slice(0, top)) {
    process.stdout.write(`${f.percent.toFixed(1).padStart(6)}% ${f.ms.toFixed(0).padStart(8)}  ${f.file}\n`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main(process.argv.slice(2));
