/**
 * Generic value extraction: the things an attacker needs an agent to use verbatim (where money goes,
 * where data goes, which file, which account). Every extractor is a shape, never a list of known
 * values. Values are normalised so the same value matches however it is written (spacing in account
 * numbers, case in e-mail addresses, scheme and `www.` in URLs), and short or common-looking values are
 * dropped, since they would join unrelated events.
 */

/**
 * Kinds of values. `literal`: a quoted single token with a digit or symbol inside a directive (a
 * password, a code). `name`: two or more capitalised words inside a directive (a hotel, a company, a
 * product: "Book the Harbour Light Inn").
 */
export const VALUE_KINDS = ['account', 'email', 'url', 'phone', 'handle', 'path', 'uuid', 'digits', 'identifier', 'literal', 'name'] as const;
export type ValueKind = (typeof VALUE_KINDS)[number];

/** One value found in a text. */
export interface ExtractedValue {
  kind: ValueKind;
  /** As written. */
  raw: string;
  /** Normalised form; the join key is `${kind}:${norm}` (see {@link valueKey}). */
  norm: string;
  /** Offsets in the scanned text. */
  start: number;
  end: number;
}

/** Join key of a value. URLs also yield a host key, so a link and its bare host match. */
export function valueKey(kind: ValueKind, norm: string): string {
  return `${kind}:${norm}`;
}

/** Top-level domains accepted for bare domains (no scheme, no `www.`); file extensions are left out on purpose. */
const TLDS =
  'com|org|net|edu|gov|mil|int|io|ai|co|dev|app|info|biz|xyz|me|us|uk|de|fr|ch|nl|eu|ru|cn|jp|in|br|au|ca|es|it|se|no|fi|dk|at|be|ie|nz|ly|to|tv|cc|site|online|top|club|shop|cloud|tech|live|news|blog|page|link|click|store|space|website|email|zone|world|today|ws|gg|so|io'.split('|');

const RX = {
  url: /\b(?:https?:\/\/|ftp:\/\/|www\.)[^\s<>"'`)\]}|,;]+/gi,
  email: /\b[a-z0-9][a-z0-9._%+-]{0,63}@[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63}){0,8}\.[a-z]{2,24}\b/gi,
  account: /\b[A-Z]{2}\d{2}(?:[A-Z0-9]{10,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)\b/gi,
  uuid: /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi,
  domain: new RegExp(`\\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\\.){1,8}(?:${TLDS.join('|')})\\b(?:/[^\\s<>"'\`)\\]},;]*)?`, 'gi'),
  unixPath: /(?:^|(?<=[\s'"`(=:]))(?:~|\.{1,2})?\/(?:[\w.@-]{1,255}\/){0,32}[\w.@-]{1,255}\/?/g,
  winPath: /\b[a-z]:\\(?:[\w .-]{1,255}\\){0,32}[\w .-]{1,255}/gi,
  fileName: /\b[\w][\w-]{0,127}(?:\.[\w-]{1,64}){0,4}\.(?:txt|md|markdown|pdf|docx?|xlsx?|pptx?|csv|tsv|json|ya?ml|toml|xml|html?|env|pem|key|crt|p12|pfx|kdbx|sh|ps1|bat|py|js|mjs|ts|rb|go|java|sql|db|sqlite|zip|tar|tgz|gz|7z|rar|log|conf|cfg|ini|png|jpe?g|gif|svg|eml|msg|ics|vcf)\b/gi,
  phone: /(?<![\w+])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?!\w)/g,
  handle: /(?<![\w.@])@[a-z0-9_](?:[a-z0-9_.-]{1,38}[a-z0-9_])\b/gi,
  digits: /(?<![\w.-])\d{8,24}(?![\w-])/g,
  identifier: /(?<![\w.@/-])(?=[\w-]{0,80}[_\d])[a-z0-9]{1,40}(?:[_-][a-z0-9]{1,40}){1,8}(?![\w@])|(?<![\w.@/-])(?=[a-z]*\d)(?=\d*[a-z])[a-z0-9]{8,40}(?![\w@])/gi,
  name: /\b[A-Z][\w'&.-]{0,40}(?:[ \t]{1,3}(?:(?:of|the|and|de|la|le|von|van|&)[ \t]{1,3})?[A-Z][\w'&.-]{0,40}){1,6}/g,
  quoted: /'([^'\s]{6,80})'|"([^"\s]{6,80})"|`([^`\s]{6,80})`|«([^»\s]{6,80})»|“([^”\s]{6,80})”/g,
} as const;

const DATE_LIKE = /^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d{4}-\d{2}-\d{2}t[\d:.]+z?|\d{1,2}:\d{2}(?::\d{2})?)$/i;
const VERSION_LIKE = /^v?\d+(?:[._-]\d+)+$/i;

/** Options of {@link extractValues}. */
export interface ExtractOptions {
  /** Minimum normalised length. */
  minLength: number;
  /** Extract quoted literals and capitalised names (only inside directives). */
  literals?: boolean;
  /** Normalised values never returned (lowercase). */
  ignore?: ReadonlySet<string>;
}

function normUrl(raw: string): { url: string; host: string } {
  let s = raw.toLowerCase().replace(/^[a-z]+:\/\//, '').replace(/^www\./, '');
  s = s.replace(/[.,;:!?)\]}'"]+$/, '').replace(/\/+$/, '');
  const host = s.split(/[/?#]/)[0] ?? s;
  return { url: s, host };
}

/** Normalises a raw value of a kind (also used on argument values). */
export function normalizeValue(kind: ValueKind, raw: string): string {
  switch (kind) {
    case 'account':
      return raw.replace(/\s+/g, '').toUpperCase();
    case 'email':
    case 'handle':
      return raw.toLowerCase();
    case 'url':
      return normUrl(raw).url;
    case 'phone': {
      const d = raw.replace(/\D/g, '');
      return raw.trim().startsWith('+') ? `+${d}` : d;
    }
    case 'path':
      return raw.replace(/[.,;:!?)'"]+$/, '').toLowerCase();
    case 'uuid':
    case 'identifier':
      return raw.toLowerCase();
    case 'digits':
      return raw;
    case 'literal':
    case 'name':
      return raw.toLowerCase().replace(/\s+/g, ' ').trim();
  }
}

/** Shapes that look like values but are not worth joining on (too generic). */
function isNoise(kind: ValueKind, norm: string, raw: string): boolean {
  if (kind === 'identifier' || kind === 'digits' || kind === 'phone') {
    const r = raw.trim().toLowerCase();
    if (DATE_LIKE.test(r) || VERSION_LIKE.test(r) || DATE_LIKE.test(norm) || VERSION_LIKE.test(norm)) return true;
  }
  if (kind === 'identifier') {
    // Hyphenated English ("well-known", "follow-up") is not an identifier; underscores or digits are.
    if (!/[_\d]/.test(norm)) return true;
    if (/^\d+(?:-\d+)*$/.test(norm)) return true;
    if (norm.length < 8) return true;
  }
  if (kind === 'phone') {
    const digits = norm.replace(/\D/g, '');
    if (digits.length < 8 || digits.length > 15) return true;
  }
  if (kind === 'path' && !/[/\\]/.test(norm) && !/\.[a-z0-9]+$/.test(norm)) return true;
  if (kind === 'literal') {
    // A quoted word or name is not a value to join on; a literal needs a digit or a symbol.
    if (/^[a-z]+$/i.test(norm) || norm.includes('$') || /[{}<>]/.test(norm)) return true;
  }
  return false;
}

function overlaps(taken: Array<[number, number]>, s: number, e: number): boolean {
  for (const [a, b] of taken) if (s < b && e > a) return true;
  return false;
}

/**
 * Extracts values from text. Extractors run from the most to the least specific, and a span taken by
 * one is not re-read by the next (the path inside a URL is part of the URL). Every returned value is
 * at least `minLength` characters after normalisation.
 */
export function extractValues(text: string, opts: ExtractOptions): ExtractedValue[] {
  const out: ExtractedValue[] = [];
  const taken: Array<[number, number]> = [];
  const push = (kind: ValueKind, raw: string, start: number, keepSpan = true) => {
    const end = start + raw.length;
    if (overlaps(taken, start, end)) return;
    const norm = normalizeValue(kind, raw);
    if (keepSpan) taken.push([start, end]);
    if (norm.length < opts.minLength || isNoise(kind, norm, raw)) return;
    if (opts.ignore?.has(norm.toLowerCase())) return;
    out.push({ kind, raw, norm, start, end });
  };
  const run = (re: RegExp, fn: (m: RegExpExecArray) => void) => {
    re.lastIndex = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      fn(m);
      if (m[0].length === 0) re.lastIndex++;
    }
  };
  run(RX.email, (m) => push('email', m[0], m.index));
  run(RX.url, (m) => push('url', m[0].replace(/[.,;:!?]+$/, ''), m.index));
  run(RX.uuid, (m) => push('uuid', m[0], m.index));
  run(RX.account, (m) => {
    // An account number has letters only in its country/bank prefix or mixed in; plain words are not accounts.
    if (/\d{6,}/.test(m[0].replace(/\s/g, ''))) push('account', m[0].trim(), m.index);
  });
  run(RX.winPath, (m) => push('path', m[0], m.index));
  run(RX.unixPath, (m) => {
    // A lone "/word" is usually prose ("and/or"); a path has two segments or a file extension.
    const p = m[0];
    if ((p.match(/\//g) ?? []).length >= 2 || /\.[a-z0-9]{1,5}$/i.test(p)) push('path', p, m.index);
  });
  run(RX.fileName, (m) => push('path', m[0], m.index));
  run(RX.domain, (m) => push('url', m[0].replace(/[.,;:!?]+$/, ''), m.index));
  run(RX.handle, (m) => push('handle', m[0], m.index));
  run(RX.phone, (m) => {
    if (/[\s.()+-]/.test(m[0])) push('phone', m[0].trim(), m.index);
  });
  run(RX.digits, (m) => push('digits', m[0], m.index));
  run(RX.identifier, (m) => push('identifier', m[0], m.index));
  if (opts.literals) {
    run(RX.quoted, (m) => {
      const inner = m[1] ?? m[2] ?? m[3] ?? m[4] ?? m[5] ?? '';
      // Literals may contain values already found (a quoted e-mail): they are kept as well.
      const start = m.index + 1;
      const norm = normalizeValue('literal', inner);
      if (norm.length < opts.minLength || isNoise('literal', norm, inner) || opts.ignore?.has(norm)) return;
      if (out.some((v) => v.start >= start && v.end <= start + inner.length && v.raw.length === inner.length)) return;
      out.push({ kind: 'literal', raw: inner, norm, start, end: start + inner.length });
    });
  }
  if (opts.literals) {
    run(RX.name, (m) => {
      // Leading words that open the sentence ("Book", "Please", "The") are not part of the name.
      const words = m[0].split(/\s+/);
      let skip = 0;
      while (skip < words.length && NAME_OPENERS.has((words[skip] as string).toLowerCase())) skip++;
      const kept = words.slice(skip);
      if (kept.length < 2 || /^(?:of|the|and|de|la|le|von|van|&)$/i.test(kept[kept.length - 1] as string)) return;
      const raw = kept.join(' ');
      const start = m.index + m[0].indexOf(kept[0] as string);
      const norm = normalizeValue('name', raw);
      if (norm.length < Math.max(8, opts.minLength) || opts.ignore?.has(norm)) return;
      if (overlaps(taken, start, start + raw.length)) return;
      out.push({ kind: 'name', raw, norm, start, end: start + raw.length });
    });
  }
  return out.sort((a, b) => a.start - b.start);
}

/** Words that start sentences or commands rather than names. */
const NAME_OPENERS = new Set(
  'a an the this that these those please kindly then and also now first next finally before after if when once you your my our i we it do dont don\'t send transfer wire pay forward post publish upload share email mail message invite add remove delete change update modify set reset create make open visit click go navigate browse download fetch get retrieve read run execute install call use invoke concatenate combine collect copy export include attach reply write schedule book reserve cancel approve purchase buy order subscribe move rename push deploy tell list save store submit sign join contact notify report give provide important urgent note todo attention dear hi hello hey'.split(
    ' ',
  ),
);

/** Extra join keys of a value (a URL also joins on its host). */
export function valueKeys(v: Pick<ExtractedValue, 'kind' | 'norm'>): string[] {
  const keys = [valueKey(v.kind, v.norm)];
  if (v.kind === 'url') {
    const host = v.norm.split(/[/?#]/)[0] ?? v.norm;
    if (host !== v.norm) keys.push(valueKey('url', host));
  }
  if (v.kind === 'email') {
    // The same address may be written in a link (`mailto:`) or a handle-like field.
    keys.push(valueKey('email', v.norm.replace(/^mailto:/, '')));
  }
  return [...new Set(keys)];
}
