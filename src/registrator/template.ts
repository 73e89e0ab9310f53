/**
 * The Go text/template subset gliderlabs/registrator evaluates its `-tags` value with (bridge/bridge.go, master): the
 * whole string is one template executed against the container's inspect data, then split into tags. Its helper
 * functions are reproduced with gliderlabs' argument order (`strSlice`, `sIndex`, `mIndex`, `toUpper`, `toLower`,
 * `replace`, `join`, `split`, `splitIndex`, `matchFirstElement`, `matchAllElements`), plus Go's own builtins that such
 * templates use (`index`, `len`, `printf`, `eq`/`ne`/`lt`/`le`/`gt`/`ge`, `and`/`or`/`not`, `print`, `slice`).
 * `httpGet` and `jsonParse` are refused: a registrator that fetches URLs named in its configuration on every container
 * event is a request forger sitting next to the Docker socket, and jsonParse only reads httpGet's bytes.
 *
 * Written here because no npm package evaluates Go templates with pipelines and custom functions (the nearest,
 * @ctrl/golang-template, has neither). Supported syntax: text; `{{pipeline}}`; `{{if}}`/`{{else if}}`/`{{else}}`/
 * `{{end}}`; `{{range}}` (with `$i, $e :=`); `{{with}}`; comments; `{{-`/`-}}` trimming; `.Field.Chain`, `$`, `$x`;
 * string, raw-string, number and boolean literals; parenthesised pipelines; `|`.
 *
 * Data follows go-dockerclient's field names, which are Docker's JSON names except `.ID` (Docker's `Id`). A missing
 * key of a map-typed field (`.Config.Labels.team`) is the empty string, as for Go's map[string]string; any other
 * missing field is an error, as in Go, so a typo is reported instead of silently producing an empty tag. Only the
 * data's own keys are fields (never `constructor` or `__proto__` of a JavaScript object), and Go's methods on
 * go-dockerclient's types (`.State.String`) are missing fields.
 *
 * The template is the operator's, but the data is the container's: labels and env vars of any size. Evaluation is
 * therefore bounded: at most MAX_OUTPUT characters out (and in any value a function makes), MAX_STEPS actions and
 * iterations, MAX_DEPTH nesting; regular expressions run on RE2 (re2js), linear in their input and with Go's own
 * syntax, as gliderlabs' regexp did. Whatever goes wrong is a TemplateError: a hostile label costs its container its
 * `-tags` item (tags.ts), never the sync of every other container.
 */
import { RE2JS } from 're2js'

/** Characters one evaluation may produce: far beyond any tag list Consul would take, far below a memory problem. */
export const MAX_OUTPUT = 64 * 1024
/** Actions, commands and range iterations per evaluation (a range over a range of a 10 000-entry Env stops here). */
export const MAX_STEPS = 100_000
/** Nesting of blocks and parentheses in a template. */
export const MAX_DEPTH = 64

export class TemplateError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'TemplateError'
  }
}

type Value = unknown
type Fn = (...args: Value[]) => Value

interface Operand {
  kind: 'field' | 'var' | 'literal' | 'ident' | 'pipe'
  /** field: path from dot; var: variable name then path. */
  path?: string[]
  name?: string
  value?: Value
  pipe?: Pipeline
}
interface Command {
  operands: Operand[]
}
interface Pipeline {
  decl: string[]
  commands: Command[]
}
type Node =
  | { kind: 'text'; text: string }
  | { kind: 'action'; pipe: Pipeline }
  | { kind: 'if' | 'with' | 'range'; pipe: Pipeline; body: Node[]; else: Node[] }

/** Objects whose keys are data, not fields: a missing key reads as "" (Go's zero value) rather than an error. */
const MAP_FIELDS = new Set([
  'Config.Labels',
  'Config.ExposedPorts',
  'Config.Volumes',
  'NetworkSettings.Networks',
  'NetworkSettings.Ports',
  'HostConfig.PortBindings',
])

export interface CompiledTemplate {
  readonly source: string
  /** True when the source holds an action; plain text evaluates to itself. */
  readonly isTemplate: boolean
  execute(data: Value): string
}

export function compileTemplate(source: string): CompiledTemplate {
  const nodes = new Parser(source).parseAll()
  const isTemplate = nodes.some((n) => n.kind !== 'text')
  return {
    source,
    isTemplate,
    execute: (data) => {
      const exec = new Exec(data)
      try {
        exec.run(nodes, data, new Map([['$', data]]))
      } catch (err) {
        if (err instanceof TemplateError) throw err
        // A limit of the engine itself (a string or stack too large): still this template's failure for this data.
        throw new TemplateError(`evaluation failed: ${(err as Error).message}`)
      }
      return exec.output()
    },
  }
}

// ---- lexing and parsing ----

type Token =
  | { t: 'field'; path: string[] }
  | { t: 'var'; name: string; path: string[] }
  | { t: 'str' | 'num' | 'bool' | 'ident'; v: Value }
  | { t: 'pipe' | 'lparen' | 'rparen' | 'comma' | 'declare' | 'assign' | 'dot' }

class Parser {
  private pos = 0
  private depth = 0
  constructor(private readonly src: string) {}

  parseAll(): Node[] {
    const { nodes, end } = this.parseList()
    if (end !== null) throw new TemplateError(`unexpected {{${end}}}`)
    return nodes
  }

  /** Nodes up to an `{{else…}}` or `{{end}}` (returned in `end`), or the end of the source (end null). */
  private parseList(): { nodes: Node[]; end: string | null } {
    const nodes: Node[] = []
    for (;;) {
      const open = this.src.indexOf('{{', this.pos)
      let text = this.src.slice(this.pos, open === -1 ? undefined : open)
      if (open === -1) {
        if (text) nodes.push({ kind: 'text', text })
        this.pos = this.src.length
        return { nodes, end: null }
      }
      const trimLeft = /^\{\{-[ \t\r\n]/.test(this.src.slice(open, open + 4))
      if (trimLeft) text = text.replace(/[ \t\r\n]+$/, '')
      if (text) nodes.push({ kind: 'text', text })
      const close = this.src.indexOf('}}', open + 2)
      if (close === -1) throw new TemplateError('unclosed action: "{{" without "}}"')
      let inner = this.src.slice(open + (trimLeft ? 3 : 2), close)
      const trimRight = /[ \t\r\n]-$/.test(inner)
      if (trimRight) inner = inner.slice(0, -1)
      this.pos = close + 2
      if (trimRight) while (this.pos < this.src.length && /[ \t\r\n]/.test(this.src[this.pos]!)) this.pos++
      const body = inner.trim()
      if (body.startsWith('/*')) {
        if (!body.endsWith('*/')) throw new TemplateError('unclosed comment')
        continue
      }
      const word = /^[a-z]+/.exec(body)?.[0] ?? ''
      if (word === 'end' && body === 'end') return { nodes, end: 'end' }
      if (word === 'else') return { nodes, end: body }
      if (word === 'if' || word === 'with' || word === 'range') {
        nodes.push(this.parseBlock(word, body.slice(word.length)))
        continue
      }
      if (['define', 'template', 'block', 'break', 'continue'].includes(word) && /^[a-z]+(\s|$)/.test(body))
        throw new TemplateError(`{{${word}}} is not supported in tag templates`)
      nodes.push({ kind: 'action', pipe: parsePipeline(tokenize(body)) })
    }
  }

  private parseBlock(word: 'if' | 'with' | 'range', rest: string): Node {
    if (++this.depth > MAX_DEPTH) throw new TemplateError(`blocks nested deeper than ${MAX_DEPTH}`)
    const pipe = parsePipeline(tokenize(rest))
    const first = this.parseList()
    if (first.end === null) throw new TemplateError(`{{${word}}} without {{end}}`)
    let elseNodes: Node[] = []
    if (first.end !== 'end') {
      const elseRest = first.end.slice('else'.length).trim()
      if (elseRest.startsWith('if ') && word === 'if') {
        // `{{else if x}}` is `{{else}}{{if x}}…{{end}}{{end}}` sharing the outer end.
        elseNodes = [this.parseBlock('if', elseRest.slice(2))]
      } else if (elseRest === '') {
        const second = this.parseList()
        if (second.end !== 'end') throw new TemplateError(`{{${word}}}: expected {{end}} after {{else}}`)
        elseNodes = second.nodes
      } else {
        throw new TemplateError(`unsupported {{${first.end}}}`)
      }
    }
    this.depth--
    return { kind: word, pipe, body: first.nodes, else: elseNodes }
  }
}

function tokenize(s: string): Token[] {
  const out: Token[] = []
  let i = 0
  const path = (start: number): [string[], number] => {
    const parts: string[] = []
    let j = start
    while (s[j] === '.' && /[A-Za-z_]/.test(s[j + 1] ?? '')) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(s.slice(j + 1))!
      parts.push(m[0])
      j += 1 + m[0].length
    }
    return [parts, j]
  }
  while (i < s.length) {
    const c = s[i]!
    if (/\s/.test(c)) {
      i++
    } else if (c === '|') {
      out.push({ t: 'pipe' })
      i++
    } else if (c === '(' || c === ')') {
      out.push({ t: c === '(' ? 'lparen' : 'rparen' })
      i++
    } else if (c === ',') {
      out.push({ t: 'comma' })
      i++
    } else if (s.startsWith(':=', i)) {
      out.push({ t: 'declare' })
      i += 2
    } else if (c === '.') {
      const [parts, j] = path(i)
      if (parts.length === 0) {
        out.push({ t: 'dot' })
        i++
      } else {
        out.push({ t: 'field', path: parts })
        i = j
      }
    } else if (c === '$') {
      const m = /^\$[A-Za-z0-9_]*/.exec(s.slice(i))!
      const [parts, j] = path(i + m[0].length)
      out.push({ t: 'var', name: m[0], path: parts })
      i = j
    } else if (c === '"') {
      let j = i + 1
      while (j < s.length && s[j] !== '"') j += s[j] === '\\' ? 2 : 1
      if (j >= s.length) throw new TemplateError('unterminated string')
      try {
        out.push({ t: 'str', v: JSON.parse(s.slice(i, j + 1)) as string })
      } catch {
        throw new TemplateError(`bad string ${s.slice(i, j + 1)}`)
      }
      i = j + 1
    } else if (c === '`') {
      const j = s.indexOf('`', i + 1)
      if (j === -1) throw new TemplateError('unterminated raw string')
      out.push({ t: 'str', v: s.slice(i + 1, j) })
      i = j + 1
    } else if (/[-+0-9]/.test(c)) {
      const m = /^[-+]?\d+(?:\.\d+)?/.exec(s.slice(i))
      if (!m) throw new TemplateError(`unexpected "${c}"`)
      out.push({ t: 'num', v: Number(m[0]) })
      i += m[0].length
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(s.slice(i))!
      if (m[0] === 'true' || m[0] === 'false') out.push({ t: 'bool', v: m[0] === 'true' })
      else if (m[0] === 'nil') out.push({ t: 'str', v: null })
      else out.push({ t: 'ident', v: m[0] })
      i += m[0].length
    } else {
      throw new TemplateError(`unexpected "${c}" in action`)
    }
  }
  return out
}

function parsePipeline(tokens: Token[]): Pipeline {
  let pos = 0
  const decl: string[] = []
  // `$x := …` and `$i, $e := …` (range).
  const declEnd = tokens.findIndex((t) => t.t === 'declare')
  if (declEnd !== -1) {
    for (const t of tokens.slice(0, declEnd)) {
      if (t.t === 'var' && t.path.length === 0) decl.push(t.name)
      else if (t.t !== 'comma') throw new TemplateError('bad variable declaration')
    }
    pos = declEnd + 1
  }
  let depth = 0
  const parse = (stopAtParen: boolean): Pipeline['commands'] => {
    if (stopAtParen && ++depth > MAX_DEPTH) throw new TemplateError(`parentheses nested deeper than ${MAX_DEPTH}`)
    const commands: Command[] = [{ operands: [] }]
    while (pos < tokens.length) {
      const t = tokens[pos++]!
      if (t.t === 'rparen') {
        if (!stopAtParen) throw new TemplateError('unexpected ")"')
        depth--
        return commands
      }
      if (t.t === 'pipe') {
        commands.push({ operands: [] })
        continue
      }
      const cmd = commands[commands.length - 1]!
      if (t.t === 'lparen') cmd.operands.push({ kind: 'pipe', pipe: { decl: [], commands: parse(true) } })
      else if (t.t === 'field') cmd.operands.push({ kind: 'field', path: t.path })
      else if (t.t === 'dot') cmd.operands.push({ kind: 'field', path: [] })
      else if (t.t === 'var') cmd.operands.push({ kind: 'var', name: t.name, path: t.path })
      else if (t.t === 'ident') cmd.operands.push({ kind: 'ident', name: String(t.v) })
      else if (t.t === 'str' || t.t === 'num' || t.t === 'bool') cmd.operands.push({ kind: 'literal', value: t.v })
      else throw new TemplateError('unexpected token in pipeline')
    }
    if (stopAtParen) throw new TemplateError('unclosed "("')
    return commands
  }
  const commands = parse(false)
  if (commands.some((c) => c.operands.length === 0)) throw new TemplateError('empty command in pipeline')
  for (const c of commands)
    for (const o of c.operands.slice(1))
      if (o.kind === 'ident') throw new TemplateError(`function "${o.name}" used as an argument: wrap it in ( )`)
  for (const c of commands) {
    const head = c.operands[0]!
    if (head.kind === 'ident' && !Object.hasOwn(FUNCS, head.name!)) {
      throw new TemplateError(
        REFUSED.has(head.name!)
          ? `${head.name} is not available: consul-lb does not fetch URLs from tag templates`
          : `function "${head.name}" not defined`,
      )
    }
  }
  return { decl, commands }
}

// ---- execution ----

class Exec {
  private readonly out: string[] = []
  private outLength = 0
  private steps = 0

  constructor(private readonly root: Value) {}

  output(): string {
    return this.out.join('')
  }

  private write(text: string): void {
    this.outLength += text.length
    if (this.outLength > MAX_OUTPUT) fail(`output longer than ${MAX_OUTPUT} characters`)
    this.out.push(text)
  }

  private step(): void {
    if (++this.steps > MAX_STEPS) fail(`more than ${MAX_STEPS} steps (a range over large data?)`)
  }

  run(nodes: Node[], dot: Value, vars: Map<string, Value>): void {
    for (const n of nodes) {
      this.step()
      switch (n.kind) {
        case 'text':
          this.write(n.text)
          break
        case 'action': {
          const v = this.pipeline(n.pipe, dot, vars)
          if (n.pipe.decl.length === 0) this.write(printValue(v))
          break
        }
        case 'if':
        case 'with': {
          const v = this.pipeline(n.pipe, dot, vars)
          if (isTrue(v)) this.run(n.body, n.kind === 'with' ? v : dot, new Map(vars))
          else this.run(n.else, dot, new Map(vars))
          break
        }
        case 'range': {
          const v = this.pipeline({ decl: [], commands: n.pipe.commands }, dot, vars)
          const entries: [Value, Value][] = Array.isArray(v)
            ? v.map((e, i) => [i, e])
            : isObject(v)
              ? Object.keys(v)
                  .sort()
                  .map((k) => [k, v[k]])
              : v === null || v === undefined
                ? []
                : fail(`range can't iterate over ${printValue(v)}`)
          if (entries.length === 0) this.run(n.else, dot, new Map(vars))
          for (const [k, e] of entries) {
            this.step()
            const scope = new Map(vars)
            if (n.pipe.decl.length === 1) scope.set(n.pipe.decl[0]!, e)
            if (n.pipe.decl.length === 2) {
              scope.set(n.pipe.decl[0]!, k)
              scope.set(n.pipe.decl[1]!, e)
            }
            this.run(n.body, e, scope)
          }
          break
        }
      }
    }
  }

  private pipeline(p: Pipeline, dot: Value, vars: Map<string, Value>): Value {
    let piped: Value
    let hasPiped = false
    for (const c of p.commands) {
      piped = this.command(c, dot, vars, hasPiped ? [piped] : [])
      hasPiped = true
    }
    if (p.decl.length === 1) vars.set(p.decl[0]!, piped)
    return piped
  }

  private command(c: Command, dot: Value, vars: Map<string, Value>, piped: Value[]): Value {
    const head = c.operands[0]!
    this.step()
    if (head.kind === 'ident') {
      const args = [...c.operands.slice(1).map((o) => this.operand(o, dot, vars)), ...piped]
      const v = FUNCS[head.name!]!(...args)
      // No value a function makes may outgrow the output: chains (`replace … | replace …`) stop at the first.
      if ((typeof v === 'string' || Array.isArray(v)) && v.length > MAX_OUTPUT)
        fail(`${head.name}: result longer than ${MAX_OUTPUT}`)
      return v
    }
    if (c.operands.length > 1 || piped.length > 0) fail(`can't give arguments to a non-function ${describe(head)}`)
    return this.operand(head, dot, vars)
  }

  private operand(o: Operand, dot: Value, vars: Map<string, Value>): Value {
    switch (o.kind) {
      case 'literal':
        return o.value
      case 'pipe':
        return this.pipeline(o.pipe!, dot, new Map(vars))
      case 'field':
        return walk(dot, o.path!, dot === this.root ? '' : null)
      case 'var': {
        if (!vars.has(o.name!)) fail(`undefined variable ${o.name}`)
        const base = vars.get(o.name!)
        return walk(base, o.path!, base === this.root ? '' : null)
      }
      default:
        return fail('unexpected operand')
    }
  }
}

/** Follows `.A.B.C`; `from` is the path of `base` from the root ('' for the root, null when unknown). */
function walk(base: Value, path: readonly string[], from: string | null): Value {
  let v = base
  let at = from
  for (const key of path) {
    const isMap = at !== null && MAP_FIELDS.has(at)
    const name = !isMap && key === 'ID' && at === '' ? 'Id' : key
    if (!isObject(v)) fail(`can't evaluate field ${key} in ${v === null || v === undefined ? 'nil' : typeof v}`)
    if (!Object.hasOwn(v, name)) {
      if (isMap) return ''
      fail(`can't evaluate field ${key}`)
    }
    v = v[name]
    at = at === null ? null : at === '' ? key : `${at}.${key}`
  }
  return v
}

function isObject(v: Value): v is Record<string, Value> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function fail(message: string): never {
  throw new TemplateError(message)
}

function describe(o: Operand): string {
  return o.kind === 'field' ? `.${o.path!.join('.')}` : o.kind === 'var' ? o.name! : 'value'
}

/** Go's truth: false, 0, nil, and empty strings, slices and maps are false. */
function isTrue(v: Value): boolean {
  if (v === null || v === undefined || v === false || v === 0 || v === '') return false
  if (Array.isArray(v)) return v.length > 0
  if (isObject(v)) return Object.keys(v).length > 0
  return true
}

/** As Go's fmt %v prints: slices as [a b], maps as map[k:v] with sorted keys, nil as <no value>. */
function printValue(v: Value): string {
  if (v === null || v === undefined) return '<no value>'
  if (typeof v === 'string') return v
  if (Array.isArray(v)) return `[${v.map(printValue).join(' ')}]`
  if (isObject(v))
    return `map[${Object.keys(v)
      .sort()
      .map((k) => `${k}:${printValue(v[k])}`)
      .join(' ')}]`
  return String(v)
}

const str = (v: Value, what: string): string => {
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  return fail(`${what}: expected a string, got ${printValue(v)}`)
}
const int = (v: Value, what: string): number =>
  typeof v === 'number' && Number.isInteger(v) ? v : fail(`${what}: expected an integer, got ${printValue(v)}`)
const list = (v: Value, what: string): string[] =>
  v === null || v === undefined
    ? []
    : Array.isArray(v)
      ? v.map((e) => str(e, what))
      : fail(`${what}: expected a list, got ${printValue(v)}`)
/** gliderlabs' sIndex/splitIndex: negative counts from the end; out of range clamps to the first or last element. */
const clampIndex = (i: number, l: readonly string[], what: string): string => {
  if (l.length === 0) return fail(`${what}: index ${i} of an empty list`)
  if (i < 0) return -i >= l.length ? l[0]! : l[l.length + i]!
  return i >= l.length ? l[l.length - 1]! : l[i]!
}
/** Go's regexp is RE2: linear in the input whatever the pattern, and its syntax. A JavaScript RegExp is neither. */
const regex = (r: Value, what: string): ((s: string) => boolean) => {
  let re: RE2JS
  try {
    re = RE2JS.compile(str(r, what))
  } catch (err) {
    return fail(`${what}: ${(err as Error).message}`)
  }
  return (s) => re.matcher(s).find()
}
/** A key's own value in a map (never an inherited `constructor`); absent: undefined. */
const own = (m: Record<string, Value>, k: string): Value => (Object.hasOwn(m, k) ? m[k] : undefined)
const compare = (a: Value, b: Value, what: string): number => {
  if (typeof a === 'number' && typeof b === 'number') return a - b
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0
  return fail(`${what}: incompatible types for comparison`)
}

const REFUSED = new Set(['httpGet', 'jsonParse'])

const FUNCS: Record<string, Fn> = {
  // gliderlabs/registrator's helpers, same argument order (bridge/bridge.go).
  strSlice: (v, ...i) => {
    const s = str(v, 'strSlice')
    const [a, b] = i.map((x) => int(x, 'strSlice'))
    // Go slices with a negative index panic (an execution error); JavaScript would count from the end.
    if (i.some((x) => (x as number) < 0)) return fail('strSlice: negative index')
    if (i.length === 1) return s.length >= a! ? s.slice(a) : s
    if (i.length === 2 && s.length >= a! && s.length >= b!)
      return a === 0 ? s.slice(0, b) : b! < a! ? s.slice(a) : s.slice(a, b)
    return s
  },
  sIndex: (i, s) => clampIndex(int(i, 'sIndex'), list(s, 'sIndex'), 'sIndex'),
  mIndex: (k, m) => {
    if (!isObject(m)) return fail('mIndex: expected a map')
    const v = own(m, str(k, 'mIndex'))
    return v === undefined || v === null ? '' : v
  },
  toUpper: (v) => str(v, 'toUpper').toUpperCase(),
  toLower: (v) => str(v, 'toLower').toLowerCase(),
  replace: (n, o, nw, v) => {
    const count = int(n, 'replace')
    const s = str(v, 'replace')
    const from = str(o, 'replace')
    const to = str(nw, 'replace')
    // The result's length before it is built: an empty `old` matches between every character, so a long label
    // replaced into itself would otherwise be a string of its length squared.
    const found = from === '' ? s.length + 1 : s.split(from).length - 1
    const times = count < 0 ? found : Math.min(count, found)
    if (s.length + times * (to.length - from.length) > MAX_OUTPUT) fail(`replace: result longer than ${MAX_OUTPUT}`)
    if (from === '') {
      // Go: before every character (rune) and at the end, up to `count` times.
      const chars = [...s]
      const n = count < 0 ? chars.length + 1 : Math.min(count, chars.length + 1)
      return chars.map((c, i) => (i < n ? to + c : c)).join('') + (n > chars.length ? to : '')
    }
    if (count < 0) return s.split(from).join(to)
    let out = s
    let at = 0
    for (let k = 0; k < count; k++) {
      const idx = out.indexOf(from, at)
      if (idx === -1) break
      out = out.slice(0, idx) + to + out.slice(idx + from.length)
      at = idx + to.length
    }
    return out
  },
  join: (sep, s) => list(s, 'join').join(str(sep, 'join')),
  split: (sep, v) => str(v, 'split').split(str(sep, 'split')),
  splitIndex: (i, sep, v) =>
    clampIndex(int(i, 'splitIndex'), str(v, 'splitIndex').split(str(sep, 'splitIndex')), 'splitIndex'),
  matchFirstElement: (r, s) => {
    const matches = regex(r, 'matchFirstElement')
    return list(s, 'matchFirstElement').find(matches) ?? ''
  },
  matchAllElements: (r, s) => {
    const matches = regex(r, 'matchAllElements')
    return list(s, 'matchAllElements').filter(matches)
  },
  // Go's builtins.
  index: (v, ...keys) => {
    let cur = v
    for (const k of keys) {
      if (Array.isArray(cur)) {
        const i = int(k, 'index')
        if (i < 0 || i >= cur.length) fail(`index: ${i} out of range`)
        cur = cur[i]
      } else if (isObject(cur)) {
        const e = own(cur, str(k, 'index'))
        cur = e === undefined ? '' : e
      } else {
        fail(`index of ${printValue(cur)}`)
      }
    }
    return cur
  },
  len: (v) =>
    typeof v === 'string' || Array.isArray(v)
      ? v.length
      : isObject(v)
        ? Object.keys(v).length
        : fail('len of a non-list'),
  slice: (v, ...i) => {
    const idx = i.map((x) => int(x, 'slice'))
    if (typeof v === 'string' || Array.isArray(v)) return v.slice(idx[0] ?? 0, idx[1] ?? v.length)
    return fail('slice of a non-list')
  },
  print: (...a) => a.map(printValue).join(''),
  printf: (f, ...a) => {
    let k = 0
    return str(f, 'printf').replace(
      /%(-?)(\d*)(?:\.(\d+))?(.?)/g,
      (_m, left: string, width: string, prec, verb: string) => {
        if (verb === '%') return '%'
        if (!'svdq'.includes(verb) || verb === '') fail(`printf: verb %${verb} is not supported (%s %v %d %q)`)
        if (Number(width || 0) > MAX_OUTPUT) fail(`printf: width ${width} is beyond ${MAX_OUTPUT}`)
        const v = a[k++]
        let text = verb === 'q' ? JSON.stringify(printValue(v)) : printValue(v)
        if (prec !== undefined && verb !== 'd') text = text.slice(0, Number(prec))
        const pad = Math.max(0, Number(width || 0) - text.length)
        return left ? text + ' '.repeat(pad) : ' '.repeat(pad) + text
      },
    )
  },
  eq: (a, ...b) => b.some((x) => x === a),
  ne: (a, b) => a !== b,
  lt: (a, b) => compare(a, b, 'lt') < 0,
  le: (a, b) => compare(a, b, 'le') <= 0,
  gt: (a, b) => compare(a, b, 'gt') > 0,
  ge: (a, b) => compare(a, b, 'ge') >= 0,
  and: (...a) => a.find((x) => !isTrue(x)) ?? a[a.length - 1],
  or: (...a) => a.find((x) => isTrue(x)) ?? a[a.length - 1],
  not: (a) => !isTrue(a),
}
