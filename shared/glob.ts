/** Compiles a name glob (`*` any run, `?` one character) to an anchored, case-insensitive RegExp. */
export function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
}

/** Compiled globs per list; policy lists are frozen objects cached per agent, so compile once. */
const compiled = new WeakMap<readonly string[], RegExp[]>();

/** True when `value` matches any glob of the list (compiled once per list object). */
export function matchesAnyGlob(globs: readonly string[], value: string): boolean {
  let res = compiled.get(globs);
  if (!res) compiled.set(globs, (res = globs.map(globToRegExp)));
  return res.some((r) => r.test(value));
}
