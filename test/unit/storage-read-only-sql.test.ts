import { describe, expect, it } from 'vitest';
import { QueryRejectedError, checkReadOnlySql } from '../../services/storage/read-only-sql.ts';

function rejection(sql: string): string {
  try {
    checkReadOnlySql(sql);
  } catch (err) {
    expect(err).toBeInstanceOf(QueryRejectedError);
    expect((err as QueryRejectedError).code).toBe('query_rejected');
    expect((err as QueryRejectedError).retriable).toBe(false);
    return (err as Error).message;
  }
  throw new Error(`accepted: ${sql}`);
}

describe('checkReadOnlySql', () => {
  it('accepts reads and strips the trailing semicolon and comments', () => {
    expect(checkReadOnlySql('SELECT 1;')).toBe('SELECT 1');
    expect(checkReadOnlySql('  select count() from events FINAL ; -- done\n')).toBe('select count() from events FINAL');
    expect(checkReadOnlySql('/* why */ WITH x AS (SELECT 1) SELECT * FROM x')).toBe('WITH x AS (SELECT 1) SELECT * FROM x');
    expect(checkReadOnlySql('(SELECT 1) UNION ALL (SELECT 2)')).toBe('(SELECT 1) UNION ALL (SELECT 2)');
    for (const sql of ['SHOW TABLES', 'DESCRIBE TABLE events', 'DESC events', 'EXPLAIN SELECT 1', 'EXISTS TABLE events']) {
      expect(checkReadOnlySql(sql)).toBe(sql);
    }
  });

  it('names the statement it refuses', () => {
    expect(rejection('INSERT INTO events VALUES (1)')).toMatch(/read-only: `INSERT` statements are not allowed; use SELECT/);
    expect(rejection('drop table events')).toMatch(/`DROP` statements/);
    expect(rejection('ALTER TABLE events DELETE WHERE 1')).toMatch(/`ALTER` statements/);
    expect(rejection('KILL QUERY WHERE 1')).toMatch(/`KILL`/);
    expect(rejection('SYSTEM FLUSH LOGS')).toMatch(/`SYSTEM`/);
    expect(rejection('  ')).toMatch(/empty/);
  });

  it('refuses several statements, wherever the second one hides', () => {
    expect(rejection('SELECT 1; DROP TABLE events')).toMatch(/one statement/);
    expect(rejection("SELECT 'a''b'; DROP TABLE events")).toMatch(/one statement/);
    expect(rejection("SELECT 'a\\'; DROP TABLE x'; DROP TABLE events")).toMatch(/one statement/);
    expect(rejection('SELECT 1 /* a /* nested */ still comment */; DROP TABLE events')).toMatch(/one statement/);
  });

  it('does not mistake quoted or commented text for statements', () => {
    expect(checkReadOnlySql("SELECT '; DROP TABLE events' AS s")).toBe("SELECT '; DROP TABLE events' AS s");
    expect(checkReadOnlySql('SELECT `a;b` FROM t -- ; DROP TABLE events')).toBe('SELECT `a;b` FROM t');
    expect(checkReadOnlySql('SELECT "INTO OUTFILE" FROM t')).toBe('SELECT "INTO OUTFILE" FROM t');
    expect(checkReadOnlySql('SELECT format, type FROM events')).toBe('SELECT format, type FROM events');
  });

  it('treats # as a comment only where ClickHouse does', () => {
    expect(checkReadOnlySql('SELECT 1 # note ; DROP TABLE x')).toBe('SELECT 1');
    expect(rejection("SELECT 1 #x\n INTO OUTFILE '/tmp/x'")).toMatch(/INTO OUTFILE/);
  });

  it('refuses INTO OUTFILE (chDB writes the file even in readonly mode) and FORMAT', () => {
    expect(rejection("SELECT * FROM events INTO OUTFILE '/tmp/x.csv'")).toMatch(/INTO OUTFILE/);
    expect(rejection('SELECT * FROM events FORMAT CSV')).toMatch(/FORMAT clause/);
  });

  it('refuses unterminated literals and comments', () => {
    expect(rejection("SELECT 'abc")).toMatch(/unterminated string/);
    expect(rejection('SELECT `abc')).toMatch(/unterminated quoted identifier/);
    expect(rejection('SELECT 1 /* open')).toMatch(/unterminated/);
  });
});
