import { RuntrailError } from '../../shared/errors.ts';

/**
 * Pre-flight check of analyst SQL for `Store.querySql`. The engine enforces read-only access
 * (`readonly = 1` on the query's own session); this check exists for what the engine does not
 * cover or reports badly:
 * - chDB runs every statement of a multi-statement string, so only one statement is accepted;
 * - `INTO OUTFILE` writes a file on the Runtrail host under chDB even in readonly mode;
 * - `KILL QUERY` and `SYSTEM ...` are not writes to ClickHouse but have no place here;
 * - an INSERT/DROP/ALTER gets a message that says what is allowed instead of "readonly mode".
 *
 * The tokenizer mirrors ClickHouse's lexer for everything that can hide text (string literals
 * with backslash and doubled-quote escapes, quoted identifiers, `--`, `# `/`#!` and nested
 * block comments), so it never sees less than the engine does.
 */

/** An analyst query was refused before or by the engine. Not retriable; the message says why. */
export class QueryRejectedError extends RuntrailError {
  constructor(message: string, cause?: unknown) {
    super('query_rejected', message, { retriable: false, cause });
  }
}

/** Leading keywords of statements that only read. */
export const READ_ONLY_KEYWORDS: ReadonlySet<string> = new Set(['SELECT', 'WITH', 'SHOW', 'DESCRIBE', 'DESC', 'EXPLAIN', 'EXISTS']);

interface Token {
  /** Upper-cased word, a punctuation character, or `'` for any quoted literal/identifier. */
  text: string;
  start: number;
  end: number;
}

/** Splits SQL into tokens, skipping comments and collapsing quoted text. Throws on unterminated text. */
function tokenize(sql: string): Token[] {
  const out: Token[] = [];
  const n = sql.length;
  let i = 0;
  while (i < n) {
    const c = sql[i] as string;
    const start = i;
    const next = sql[i + 1];
    if (/\s/.test(c)) {
      i++;
    } else if ((c === '-' && next === '-') || (c === '#' && (next === ' ' || next === '!'))) {
      while (i < n && sql[i] !== '\n') i++;
    } else if (c === '/' && next === '*') {
      let depth = 0;
      while (i < n) {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          depth--;
          i += 2;
          if (depth === 0) break;
        } else {
          i++;
        }
      }
      if (depth !== 0) throw new QueryRejectedError('unterminated /* comment');
    } else if (c === "'" || c === '"' || c === '`') {
      i++;
      let closed = false;
      while (i < n) {
        const d = sql[i];
        if (d === '\\') {
          i += 2;
        } else if (d === c) {
          if (sql[i + 1] === c) {
            i += 2;
          } else {
            i++;
            closed = true;
            break;
          }
        } else {
          i++;
        }
      }
      if (!closed) throw new QueryRejectedError(`unterminated ${c === "'" ? 'string literal' : 'quoted identifier'}`);
      out.push({ text: "'", start, end: i });
    } else if (/[A-Za-z_]/.test(c)) {
      while (i < n && /[A-Za-z0-9_]/.test(sql[i] as string)) i++;
      out.push({ text: sql.slice(start, i).toUpperCase(), start, end: i });
    } else {
      i++;
      out.push({ text: c, start, end: i });
    }
  }
  return out;
}

/**
 * Returns the statement to run (one statement, trailing `;` and comments removed) or throws
 * {@link QueryRejectedError} naming what is not allowed.
 */
export function checkReadOnlySql(sql: string): string {
  const tokens = tokenize(sql);
  const statements: Token[][] = [[]];
  for (const t of tokens) {
    if (t.text === ';') statements.push([]);
    else (statements[statements.length - 1] as Token[]).push(t);
  }
  const nonEmpty = statements.filter((s) => s.length > 0);
  if (nonEmpty.length === 0) throw new QueryRejectedError('the query is empty');
  if (nonEmpty.length > 1) throw new QueryRejectedError('send one statement per query (found several separated by `;`)');
  const stmt = nonEmpty[0] as Token[];

  const first = stmt.find((t) => t.text !== '(');
  const keyword = first?.text ?? '';
  if (!READ_ONLY_KEYWORDS.has(keyword)) {
    const what = /^[A-Z_]+$/.test(keyword) ? `\`${keyword}\` statements are` : 'this statement is';
    throw new QueryRejectedError(
      `queries are read-only: ${what} not allowed; use ${[...READ_ONLY_KEYWORDS].join(', ')}`,
    );
  }
  for (let i = 0; i + 1 < stmt.length; i++) {
    if (stmt[i]?.text === 'INTO' && stmt[i + 1]?.text === 'OUTFILE') {
      throw new QueryRejectedError('queries are read-only: `INTO OUTFILE` is not allowed');
    }
  }
  if (stmt.length >= 2 && stmt[stmt.length - 2]?.text === 'FORMAT') {
    throw new QueryRejectedError('remove the FORMAT clause: results are returned as JSON rows');
  }
  return sql.slice((stmt[0] as Token).start, (stmt[stmt.length - 1] as Token).end);
}
