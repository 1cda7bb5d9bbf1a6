/**
 * Text helpers shared by value extraction and instruction scoring: decoding of doubly-encoded text
 * and a comparison form (lowercase, single spaces).
 */

/**
 * Undoes one level of string escaping that tool outputs and echoed arguments often carry (`\\n`,
 * `\\t`, `\\"`), so that sentences, blocks and values are found in the text as a reader would see it.
 * Lengths may change; callers work on the decoded text only.
 */
export function decodeEscapes(text: string): string {
  if (!text.includes('\\')) return text;
  return text.replace(/\\+(n|r|t|"|')/g, (_m, c: string) => (c === 'n' || c === 'r' ? '\n' : c === 't' ? '\t' : c));
}

/** Comparison form: lowercase, whitespace runs collapsed to one space, trimmed. */
export function squash(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim();
}

/** Comparison form without trimming (for text adjacent to a value, where edge spaces matter). */
export function squashInner(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ');
}

/** Strips quotes, brackets and spaces around a sentence, so a copied sentence matches without them. */
export function stripEdges(text: string): string {
  return text.replace(/^[\s'"`(\[{<>]+|[\s'"`)\]}<>]+$/g, '');
}

/** Escapes a literal for use inside a regular expression. */
export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Tool-name globs compile like every other glob in the policy. */
export { globToRegExp } from '../../shared/glob.ts';
