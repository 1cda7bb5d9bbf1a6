import type { InstructionWeights } from './config.ts';
import { escapeRegExp } from './text.ts';

/**
 * Instruction detection in untrusted text. A tool output is data; when it speaks to the agent (names
 * it, overrides its instructions, re-orders its task, poses as the system or the user, tells it which
 * tool to call, asks it to hide what it does) it carries instructions. Each of these is a category of
 * generic patterns and structural features, weighted by policy; no category depends on a particular
 * product, tool or sentence, and each accepts many wordings.
 *
 * Scores are per sentence: a value is "carried by instructions" only when the sentence holding it is a
 * directive (an imperative or a request), and the directive is then weighted up by the categories in
 * its context (the tagged block around it, or nearby text within the same record of a list).
 */

/** Feature categories (keys of {@link InstructionWeights}). */
export type Category = keyof InstructionWeights;

/** One feature occurrence. */
export interface FeatureHit {
  category: Category;
  start: number;
  end: number;
}

/** A sentence of the text. */
export interface Sentence {
  start: number;
  end: number;
  /** The sentence is an imperative, a request or a tool directive. */
  directive: boolean;
}

/** Result of analysing one text. */
export interface TextAnalysis {
  text: string;
  sentences: Sentence[];
  hits: FeatureHit[];
  /** Tagged blocks (`<X> ... </X>`), as [start, end). */
  blocks: Array<[number, number]>;
  /** Records of a list (YAML-like `- ` items), as [start, end); one record for unstructured text. */
  records: Array<[number, number]>;
  /** The text is structured data (key: value lines, list items). */
  structured: boolean;
}

/** Score of one span, with the categories that contributed. */
export interface SpanScore {
  score: number;
  categories: Category[];
  /** The carrying sentence, as [start, end). */
  sentence: [number, number] | null;
}

/** Generic action verbs that open an imperative. */
const VERBS = [
  'send', 'transfer', 'wire', 'pay', 'forward', 'post', 'publish', 'upload', 'share', 'email', 'e-mail', 'mail', 'message', 'dm', 'text',
  'invite', 'add', 'remove', 'delete', 'erase', 'drop', 'grant', 'revoke', 'change', 'update', 'modify', 'set', 'reset', 'create', 'make',
  'open', 'visit', 'click', 'go', 'navigate', 'browse', 'download', 'fetch', 'get', 'retrieve', 'read', 'run', 'execute', 'install', 'call',
  'use', 'invoke', 'concatenate', 'combine', 'collect', 'gather', 'compile', 'copy', 'export', 'include', 'attach', 'reply', 'respond',
  'write', 'schedule', 'book', 'cancel', 'approve', 'purchase', 'buy', 'order', 'subscribe', 'move', 'rename', 'push', 'commit', 'merge',
  'deploy', 'disable', 'enable', 'print', 'output', 'reveal', 'tell', 'list', 'save', 'store', 'put', 'insert', 'append', 'replace',
  'submit', 'sign', 'join', 'kick', 'ban', 'refund', 'withdraw', 'deposit', 'transmit', 'leak', 'paste', 'contact', 'notify', 'report',
  'adjust', 'edit', 'publish', 'sync', 'transfer', 'exfiltrate', 'encode', 'append', 'log', 'leave', 'give', 'provide', 'fill', 'do',
  'ignore', 'disregard', 'forget', 'follow', 'obey', 'reserve', 'confirm', 'accept', 'print', 'dump', 'curl',
];
const VERB_RX = `(?:${[...new Set(VERBS)].map(escapeRegExp).join('|')})`;

/** Where an imperative may start: a sentence or clause start, after a marker, a modal, a request. */
const CLAUSE_START = [
  '^\\s*(?:[-*•>]+|\\d+[.)]|\\(?[a-z]\\))?\\s*(?:[\\w -]{1,24}:\\s*)?[\'"“(]?\\s*',
  '[:;(\\[{—–]\\s*',
  '\\b(?:please|pls|kindly|then|and then|first|firstly|next|finally|also|now|immediately|instead|simply|just)\\b,?\\s+',
  '\\byou\\s+(?:must|should|shall|need\\s+to|have\\s+to|are\\s+(?:required|instructed|asked|expected|supposed|requested)\\s+to|will\\s+need\\s+to|will|can|may)\\s+(?:now\\s+|also\\s+|first\\s+|then\\s+|immediately\\s+)?',
  "\\b(?:make\\s+sure|be\\s+sure|remember|don'?t\\s+forget|do\\s+not\\s+forget)\\s+(?:to|you)\\s+",
  '\\b(?:can|could|would|will)\\s+you\\s+(?:please\\s+|kindly\\s+|also\\s+)?',
  '\\b(?:i|we)\\s+(?:need|want|would\\s+like|expect)\\s+you\\s+to\\s+',
  '\\byour\\s+(?:next\\s+|new\\s+|real\\s+)?(?:task|job|goal|mission|objective)\\s+is\\s+to\\s+',
  '\\bit\\s+is\\s+(?:required|mandatory|necessary|essential|important)\\s+(?:to|that\\s+you)\\s+',
  '\\bdo\\s+(?=[a-z])',
  '\\b(?:before|after|once|when|whenever|while|if|as\\s+soon\\s+as|until)\\b[^.!?\\n,]{0,80},\\s*(?:please\\s+|then\\s+|first\\s+|also\\s+)?',
  '\\b(?:hey|hi|hello|dear|attention|ok|okay|listen)\\b[^.!?\\n,]{0,40},\\s*',
];
/** A clause start, an optional adverb ("quietly", "immediately"), then an action verb. */
const DIRECTIVE = new RegExp(`(?:${CLAUSE_START.join('|')})(?:[a-z]+ly\\s+)?${VERB_RX}\\b`, 'i');
/** A comma-spliced imperative with an object: "..., book it for them", "... - send the file to ...". */
const SPLICED_DIRECTIVE = new RegExp(
  `[,;—–-]\\s+(?:and\\s+|so\\s+|then\\s+|just\\s+|please\\s+)?(?:[a-z]+ly\\s+)?${VERB_RX}\\s+(?:it|this|that|these|those|them|him|her|the|a|an|all|every|each|my|your|our|their|any)\\b`,
  'i',
);
/** Zero-width and other invisible characters, read as spaces when splitting sentences. */
const INVISIBLE = /[\u200B-\u200F\u2060-\u2064\uFEFF]/g;

/** Patterns per category (all case-insensitive except where noted). */
function categoryPatterns(addresseeTerms: readonly string[]): Array<[Category, RegExp]> {
  const T = `(?:${addresseeTerms.join('|')})`;
  const pats: Array<[Category, string, string?]> = [
    // Text addressed to the AI.
    ['addressee', `\\b(?:to|for|dear|hey|hi|hello|attention|attn|note\\s+(?:to|for)|message\\s+(?:to|for)|instructions?\\s+(?:to|for))\\s*:?,?\\s+(?:you,?\\s+)?(?:the\\s+|an?\\s+|my\\s+|our\\s+|any\\s+|all\\s+|every\\s+)?${T}\\b(?!\\s+(?:manager|director|team|department|desk))`],
    ['addressee', `\\byou,?\\s+(?:the\\s+|an?\\s+|my\\s+)?${T}\\b`],
    ['addressee', `\\b(?:if|when|while|since)\\s+you\\s+(?:are|'re)\\s+(?:an?\\s+|the\\s+)?${T}\\b`],
    ['addressee', `\\bas\\s+an?\\s+${T}\\b`],
    ['addressee', `\\b${T}s?\\s+(?:reading|processing|parsing|summari[sz]ing|handling|seeing|viewing)\\s+(?:this|these|the\\s+following)\\b`],
    ['addressee', `\\b(?:model|assistant|ai|llm)\\s+(?:developed|made|built|created|trained|provided)\\s+by\\b`],
    ['addressee', `(?:^|[\\n.!?]\\s*)${T}\\s*[,:]\\s+(?:please|you\\s+must|you\\s+should|do|ignore|follow)`],
    // Overrides of the agent's instructions.
    ['override', '\\b(?:ignore|disregard|forget|override|overrule|skip|abandon|discard|bypass|neglect)\\s+(?:all\\s+|any\\s+|each\\s+|every\\s+)?(?:of\\s+)?(?:the\\s+|your\\s+|my\\s+|these\\s+|those\\s+|its\\s+|their\\s+)?(?:\\w+\\s+){0,2}\\w*(?:struct|direct|guideline|rule|prompt|task|order|command|polic|constraint|restriction|request)\\w*'],
    ['override', '\\b(?:new|updated|revised|real|actual|true|changed)\\s+(?:instructions?|task|objective|goal|orders?|directives?|priorit(?:y|ies))\\s*[:!-]'],
    ['override', '\\bstrictly\\s+(?:adhere|follow|obey|comply)'],
    ['override', '\\b(?:ignore|disregard|forget)\\s+(?:whatever|anything|everything|what|all\\s+that)\\s+(?:\\w+\\s+){0,3}?(?:told|said|asked|given|instructed|written|requested)\\b'],
    ['override', '\\b(?:ignore|disregard)\\s+(?:the\\s+)?(?:user|requester|owner)\\b'],
    ['override', '\\bfrom\\s+now\\s+on\\b'],
    ['override', '\\binstead(?:\\s+of\\s+(?:the|your|what)\\b[^.!?\\n]{0,60})?\\s*[.!]'],
    ['override', '\\b(?:do\\s+not|don\'?t|no\\s+longer)\\s+(?:follow|obey|apply)\\s+(?:the|your|any)\\b'],
    ['override', '\\b(?:previous|prior|earlier|above|original|old|former|existing)\\s+(?:\\w+\\s+)?(?:instructions?|guidance|guidelines|directions|rules|prompts?|tasks?|orders)\\s+(?:(?:no\\s+longer|do\\s+not|don\'?t)\\s+appl|(?:is|are)\\s+(?:now\\s+)?(?:void|cancel+ed|obsolete|outdated|superseded|revoked|invalid))'],
    // Re-ordering of the agent's task.
    ['task_hijack', '\\b(?:before|after|once|when|until)\\s+(?:you\\s+)?(?:can\\s+|could\\s+|have\\s+|are\\s+|start\\s+|begin\\s+)?(?:solv|complet|finish|start|do|doing|continu|proceed|answer|respond|address|work|handl|return|go\\s+back|get\\s+back)\\w*\\s+(?:to\\s+|on\\s+|with\\s+)?(?:the|your|this|my|that|their)\\s+(?:original\\s+|actual\\s+|current\\s+|real\\s+|initial\\s+|main\\s+|assigned\\s+|given\\s+|other\\s+|user\'?s?\\s+)?(?:task|request|question|job|instructions?|assignment|work|goal|query|prompt|user|reply|response|answer)'],
    ['task_hijack', '\\b(?:the|your)\\s+(?:original|initial|actual|current|assigned|previous|user\'?s?)\\s+(?:task|request|instructions?|goal|query|assignment)\\b'],
    ['task_hijack', '\\b(?:the\\s+)?task\\s+(?:that\\s+|which\\s+)?(?:i|the\\s+user|we|they|you\\s+were)\\s+(?:gave|assigned|asked|given|set)\\b'],
    ['task_hijack', '\\b(?:after|once)\\s+(?:you(?:\'ve|\\s+have)?\\s+)?(?:done|completed|finished|did|performed)\\s+(?:that|this|it|so|these|those)\\b'],
    ['task_hijack', '\\bdo\\s+the\\s+following\\s+(?:first|before|now|immediately)\\b'],
    ['task_hijack', '\\bbefore\\s+(?:doing\\s+|you\\s+do\\s+)?anything\\s+else\\b'],
    ['task_hijack', '\\b(?:then|afterwards?),?\\s+(?:you\\s+(?:can|may)\\s+)?(?:continue|proceed|resume|return)\\s+(?:with|to)\\b'],
    // Claims to speak for the user, the owner, an administrator or the system.
    ['impersonation', '\\bmessage\\s+from\\s+(?:me|the\\s+user|your\\s+(?:user|owner|creator|developer|operator|admin(?:istrator)?)|the\\s+(?:owner|administrator|admin|developer|system|operator))\\b'],
    ['impersonation', '\\b(?:the\\s+)?user\\s+(?:wants|asked|requests|instructs|needs|authori[sz]ed|has\\s+(?:asked|requested|authori[sz]ed))\\s+(?:you|that\\s+you)\\b'],
    ['impersonation', '\\bthe\\s+(?:user|owner|account\\s+holder)\\s+(?:\\w+\\s+)?(?:would\\s+(?:\\w+\\s+)?(?:like|prefer|want)|prefers|wants|insists|expects|has\\s+(?:already\\s+)?(?:approved|agreed|confirmed|authori[sz]ed))\\b'],
    ['impersonation', '\\b(?:i\\s+am|this\\s+is)\\s+(?:the|your)\\s+(?:user|owner|administrator|admin|developer|creator|operator|system|supervisor)\\b'],
    ['impersonation', '\\bon\\s+behalf\\s+of\\s+(?:the\\s+)?(?:user|owner|administrator|admin|system)\\b'],
    ['impersonation', '\\b(?:authori[sz]ed|approved|requested|sanctioned|cleared)\\s+by\\s+(?:the\\s+|your\\s+)?(?:account\\s+)?(?:user|owner|administrator|admin|system|management|security\\s+team)\\b'],
    // Markup posing as roles or instruction blocks.
    ['markup', '<\\s*/?\\s*(?:system|sys|instructions?|important|admin|assistant|user|context|prompt|secret|hidden|note|im_start|im_end|information|info|task|command|directive|override)\\b[^>]{0,40}>'],
    ['markup', '<\\|[a-z_]{2,24}\\|>'],
    ['markup', '\\[\\s*/?\\s*(?:system|inst|admin|assistant|ai|agent|model|user|important|sys)\\b[^\\]\\n]{0,30}\\]'],
    ['markup', '^\\s*#{1,6}\\s*(?:system|instructions?|admin|assistant|new\\s+task|important)\\b'],
    ['markup', '^\\s*(?:system|assistant|admin|developer)\\s*(?:message|prompt|note|override)?\\s*:'],
    ['markup', '<\\s*/?\\s*[A-Z][A-Z_ -]{2,30}>', 'm'],
    // Urgency.
    ['urgency', '\\b(?:important|urgent|urgently|immediately|asap|critical|mandatory|compulsory|top\\s+priority|high\\s+priority|right\\s+now|without\\s+delay|time[- ]sensitive)\\b|!{2,}'],
    // Tool directives.
    ['tool_directive', '\\b(?:use|call|invoke|run|execute|trigger)\\s+(?:the\\s+)?(?:[\\w`\'".-]+\\s+)?(?:tool|function|api|endpoint|command|action|plugin)\\b'],
    ['tool_directive', '\\b(?:tool|function)\\s+[`\'"]?[\\w.-]+[`\'"]?\\s+with\\b'],
    ['tool_directive', '\\bwith\\s+the\\s+(?:following\\s+)?(?:arguments|parameters|params|inputs|payload)\\b'],
    ['tool_directive', '\\bfunction[_ ]call\\b'],
    // Concealment, skipping confirmation.
    ['concealment', '\\bwithout\\s+(?:asking|telling|informing|notifying|alerting|confirming|confirmation|checking|approval|permission|consent|mentioning|the\\s+user\'?s?\\s+(?:knowledge|approval|consent|confirmation))\\b'],
    ['concealment', '\\b(?:do\\s+not|don\'?t|never|without)\\s+(?:tell|inform|mention|notify|alert|ask|report|let|reveal|show|cc|copy|bother)\\w*\\s+(?:\\w+\\s+){0,3}?(?:to\\s+)?(?:the\\s+)?(?:user|anyone|them|him|her|owner|human|me|requester|customer)\\b'],
    ['concealment', '\\b(?:secretly|silently|quietly|covertly|discreetly)\\b'],
    ['concealment', '\\bno\\s+need\\s+to\\s+(?:ask|confirm|tell|check|verify)\\b'],
    ['concealment', '\\bkeep\\s+(?:this|it)\\s+(?:secret|between\\s+us|confidential|hidden)\\b'],
    ['concealment', '\\b(?:fill|make)\\s+(?:them|it|these|those)\\s+(?:in|up)\\s+(?:yourself|without)\\b'],
    // Hidden text.
    ['hidden', '[\\u200B-\\u200F\\u2060-\\u2064\\uFEFF]|<!--[\\s\\S]{0,2000}?-->|display\\s*:\\s*none|font-size\\s*:\\s*0|visibility\\s*:\\s*hidden|color\\s*:\\s*(?:white|#fff(?:fff)?)\\b'],
    // Task markers.
    ['task_marker', '\\b(?:todo|to-do|fixme|action\\s+(?:required|item)|reminder|note\\s+to\\s+self|next\\s+step)\\s*[:\\-–]'],
  ];
  return pats.map(([c, src, flags]) => [c, new RegExp(src, flags === undefined ? 'gim' : `g${flags}`)]);
}

/** Compiled patterns, cached per addressee list. */
export class InstructionScanner {
  private readonly patterns: Array<[Category, RegExp]>;

  constructor(addresseeTerms: readonly string[]) {
    this.patterns = categoryPatterns(addresseeTerms);
  }

  /** Analyses a text (already decoded and truncated by the caller). */
  analyze(text: string): TextAnalysis {
    const hits: FeatureHit[] = [];
    for (const [category, re] of this.patterns) {
      re.lastIndex = 0;
      for (let m = re.exec(text); m !== null; m = re.exec(text)) {
        hits.push({ category, start: m.index, end: m.index + m[0].length });
        if (m[0].length === 0) re.lastIndex++;
      }
    }
    const structured = isStructured(text);
    // Same length as `text` (one space per invisible character), so offsets stay valid.
    const visible = text.replace(INVISIBLE, ' ');
    const sentences = splitSentences(visible).map(([start, end]) => {
      const s = visible.slice(start, end);
      const toolDirective = hits.some((h) => h.category === 'tool_directive' && h.start >= start && h.start < end);
      const override = hits.some((h) => h.category === 'override' && h.start >= start && h.start < end);
      return { start, end, directive: DIRECTIVE.test(s) || SPLICED_DIRECTIVE.test(s) || toolDirective || override };
    });
    return { text, sentences, hits, blocks: tagBlocks(text), records: listRecords(text), structured };
  }

  /**
   * Instruction score (points) of a span: 0 unless its sentence is a directive; else the directive
   * weight plus each feature category present in the context (tagged block, or `contextChars` around
   * the sentence within its record), each counted once.
   */
  scoreSpan(a: TextAnalysis, start: number, end: number, w: InstructionWeights, contextChars: number): SpanScore {
    const sentence = a.sentences.find((s) => start >= s.start && start < s.end) ?? a.sentences.find((s) => end > s.start && end <= s.end);
    if (!sentence || !sentence.directive) return { score: 0, categories: [], sentence: sentence ? [sentence.start, sentence.end] : null };
    return this.scoreSentence(a, sentence, w, contextChars);
  }

  /** Highest directive score in the text (whether the output as a whole carried instructions). */
  maxScore(a: TextAnalysis, w: InstructionWeights, contextChars: number): SpanScore {
    let best: SpanScore = { score: 0, categories: [], sentence: null };
    for (const s of a.sentences) {
      if (!s.directive) continue;
      const sc = this.scoreSentence(a, s, w, contextChars);
      if (sc.score > best.score) best = sc;
    }
    return best;
  }

  private scoreSentence(a: TextAnalysis, s: Sentence, w: InstructionWeights, contextChars: number): SpanScore {
    const record = a.records.find(([rs, re]) => s.start >= rs && s.start < re) ?? [0, a.text.length];
    let lo = Math.max(record[0], s.start - contextChars);
    let hi = Math.min(record[1], s.end + contextChars);
    const block = a.blocks.find(([bs, be]) => s.start >= bs && s.end <= be + 1);
    if (block) {
      lo = Math.min(lo, block[0]);
      hi = Math.max(hi, block[1]);
    }
    const cats = new Set<Category>(['directive']);
    for (const h of a.hits) if (h.end > lo && h.start < hi) cats.add(h.category);
    if (a.structured) cats.add('embedded_in_field');
    let score = 0;
    for (const c of cats) score += w[c];
    return { score: Math.round(score * 100) / 100, categories: [...cats], sentence: [s.start, s.end] };
  }
}

/**
 * Sentence boundaries: end punctuation followed by space, blank lines, and new lines that start a list
 * item or a `key:` field. A single line break inside a paragraph is a wrapped line, not a boundary.
 */
export function splitSentences(text: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const re = /[.!?]+(?=\s|$)|\n[ \t]*\n|\n(?=[ \t]*(?:[-*•]\s|\d+[.)]\s|[\w-]{1,30}:\s))/g;
  let start = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const end = m.index + m[0].length;
    if (text.slice(start, end).trim()) out.push([start, end]);
    start = end;
  }
  if (text.slice(start).trim()) out.push([start, text.length]);
  return out;
}

/** `<X ...> ... </X>` blocks (same tag name, case-insensitive), up to 8000 characters long. */
function tagBlocks(text: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const open = /<\s*([a-z][\w-]{1,30})\b[^>]{0,60}>/gi;
  for (let m = open.exec(text); m !== null; m = open.exec(text)) {
    const name = (m[1] as string).toLowerCase();
    const close = new RegExp(`<\\s*/\\s*${escapeRegExp(name)}\\s*>`, 'i');
    const rest = text.slice(m.index, m.index + 8000);
    const c = close.exec(rest);
    if (c) out.push([m.index, m.index + c.index + c[0].length]);
  }
  return out;
}

/** Records of a YAML-like list (`- ` items at the outermost indentation), else the whole text. */
function listRecords(text: string): Array<[number, number]> {
  const starts: Array<{ at: number; indent: number }> = [];
  const re = /^([ \t]*)- /gm;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) starts.push({ at: m.index, indent: (m[1] as string).length });
  if (starts.length < 2) return [[0, text.length]];
  const minIndent = Math.min(...starts.map((s) => s.indent));
  const top = starts.filter((s) => s.indent === minIndent).map((s) => s.at);
  const out: Array<[number, number]> = [];
  if ((top[0] as number) > 0) out.push([0, top[0] as number]);
  for (let i = 0; i < top.length; i++) out.push([top[i] as number, i + 1 < top.length ? (top[i + 1] as number) : text.length]);
  return out;
}

/** Structured data: several `key: value` lines or list items, or a JSON document. */
function isStructured(text: string): boolean {
  const t = text.trimStart();
  if (t.startsWith('{') || t.startsWith('[')) return true;
  const fields = text.match(/^[ \t]*(?:- )?[\w.-]{1,40}:[ \t]/gm);
  return (fields?.length ?? 0) >= 3;
}
