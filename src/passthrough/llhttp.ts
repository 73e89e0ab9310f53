import { createRequire } from 'node:module'

/**
 * llhttp, the parser node:http and undici use, as the WebAssembly build undici ships (`undici/lib/llhttp/`). Chosen
 * over Node's own binding (`_http_common`'s HTTPParser) after measuring both (`node --import tsx bench/parsers.ts`):
 * the binding builds JS strings for every header and copies every body chunk, the WebAssembly build reports byte
 * offsets and costs about half as much per message; it is also the same code on Node 20 and Node 24, where the
 * binding's internal API differs. No lenient flag is ever set: framing is llhttp's strict decision.
 *
 * Parsing is synchronous, so one module-level instance serves every parser of the process; the callbacks record
 * offsets into the buffer being parsed (never strings), and the parser pauses at the two moments the data plane
 * acts on: the end of a head and the end of a message.
 */

const require = createRequire(import.meta.url)

/** The little of the WebAssembly JS API used here (the project's `lib` has no DOM types, which declare it). */
declare namespace WebAssembly {
  interface Memory {
    readonly buffer: ArrayBuffer
  }
  class Module {
    constructor(bytes: Uint8Array)
  }
  class Instance {
    constructor(module: Module, imports: Record<string, Record<string, (...args: number[]) => number>>)
    readonly exports: unknown
  }
}

/** llhttp's error codes (llhttp.h, llhttp_errno). */
export const HPE_OK = 0
export const HPE_PAUSED = 21
export const HPE_PAUSED_UPGRADE = 22

const TYPE_REQUEST = 1
const TYPE_RESPONSE = 2
/** llhttp.h `llhttp_flags`. */
const F_CHUNKED = 1 << 3
const F_CONTENT_LENGTH = 1 << 5

/**
 * Offsets of fields in `llhttp_t` (llhttp.h, wasm32: 4-byte pointers). Checked against a parse of a known message
 * when the module loads: an undici update that moved them fails loudly at start, never silently at run time.
 */
const OFF_CONTENT_LENGTH = 32
const OFF_FLAGS = 50

interface LlhttpExports {
  memory: WebAssembly.Memory
  malloc(n: number): number
  free(p: number): void
  llhttp_alloc(type: number): number
  llhttp_free(p: number): void
  llhttp_execute(p: number, data: number, len: number): number
  llhttp_resume(p: number): void
  llhttp_reset(p: number): void
  llhttp_finish(p: number): number
  llhttp_get_error_pos(p: number): number
  llhttp_get_errno(p: number): number
  llhttp_errno_name(errno: number): number
  llhttp_get_error_reason(p: number): number
  llhttp_get_method(p: number): number
  llhttp_get_http_major(p: number): number
  llhttp_get_http_minor(p: number): number
  llhttp_get_status_code(p: number): number
  llhttp_should_keep_alive(p: number): number
  llhttp_message_needs_eof(p: number): number
}

/** The parser whose llhttp_execute is running (set around each call; parsing never re-enters). */
let current: HttpParser | null = null
/** Where the bytes being parsed start, in wasm memory and in the JS chunk they were copied from. */
let inputPtr = 0
let inputSize = 0
let chunkBase = 0

function loadModule(): WebAssembly.Module {
  // The SIMD build is faster; the plain one is the fallback where SIMD is unavailable (undici does the same).
  try {
    return new WebAssembly.Module(require('undici/lib/llhttp/llhttp_simd-wasm.js') as Buffer)
  } catch {
    return new WebAssembly.Module(require('undici/lib/llhttp/llhttp-wasm.js') as Buffer)
  }
}

const instance = new WebAssembly.Instance(loadModule(), {
  env: {
    wasm_on_message_begin: (): number => {
      current!.onMessageBegin()
      return 0
    },
    wasm_on_url: (_p: number, at: number, len: number): number => {
      current!.onSpan(0, at - inputPtr + chunkBase, len)
      return 0
    },
    wasm_on_status: (): number => 0,
    wasm_on_header_field: (_p: number, at: number, len: number): number => {
      current!.onSpan(1, at - inputPtr + chunkBase, len)
      return 0
    },
    wasm_on_header_value: (_p: number, at: number, len: number): number => {
      current!.onSpan(2, at - inputPtr + chunkBase, len)
      return 0
    },
    wasm_on_headers_complete: (_p: number, _status: number, upgrade: number): number =>
      current!.onHeadersComplete(upgrade === 1),
    wasm_on_body: (): number => 0,
    wasm_on_message_complete: (p: number): number => {
      current!.messageComplete = true
      current!.keepAlive = L.llhttp_should_keep_alive(p) === 1
      return HPE_PAUSED
    },
  },
})
const L = instance.exports as unknown as LlhttpExports

/**
 * Views of wasm memory. Memory grows (which detaches the old ArrayBuffer) only inside llhttp's `malloc`, which runs
 * from `L.malloc` and `L.llhttp_alloc` alone (llhttp_execute allocates nothing), so the views are made again right
 * after those two calls (`remap`), never checked per access: `WebAssembly.Memory#buffer` is a call into C++.
 */
let memBuffer = L.memory.buffer
let memBytes = Buffer.from(memBuffer)
let memView = new DataView(memBuffer)
function remap(): void {
  const b = L.memory.buffer
  if (b !== memBuffer) {
    memBuffer = b
    memBytes = Buffer.from(b)
    memView = new DataView(b)
  }
}

/** Copies `chunk[start, start+len)` into the shared input area of wasm memory, growing it when needed. */
function stage(chunk: Buffer, start: number, len: number): void {
  if (len > inputSize) {
    if (inputPtr !== 0) L.free(inputPtr)
    inputSize = Math.max(16384, Math.ceil(len / 16384) * 16384)
    inputPtr = L.malloc(inputSize)
    remap()
  }
  chunk.copy(memBytes, inputPtr, start, start + len)
}

function cString(ptr: number): string {
  const mem = memBytes
  return mem.toString('latin1', ptr, mem.indexOf(0, ptr))
}

/** How the body of a parsed message is framed, as llhttp decided it. */
export enum Framing {
  /** No body (requests without Content-Length or Transfer-Encoding; HEAD answers; 1xx, 204, 304). */
  None = 0,
  /** `contentLength` bytes follow. */
  Length = 1,
  /** Chunked: the bytes go through the parser, which finds the end (trailers included). */
  Chunked = 2,
  /** A response that ends when the connection closes. */
  UntilClose = 3,
}

/** A parse error with llhttp's name for it (`HPE_INVALID_HEADER_TOKEN`, …) and its reason. */
export class ParseError extends Error {
  readonly code: string
  constructor(code: string, reason: string) {
    super(reason)
    this.name = 'ParseError'
    this.code = code
  }
}

/**
 * One llhttp parser (one per connection, reused for every message on it). The head of a message is parsed in place:
 * spans record where the URL and each header name and value lie, as offsets from the first byte of the head, so the
 * data plane can copy what it keeps straight from the bytes it read. Heads split over several reads are parsed as
 * they arrive (offsets keep counting from the head's first byte), never re-parsed.
 */
export class HttpParser {
  private readonly ptr: number
  private readonly isResponse: boolean
  /** [urlStart, urlLen, (nameStart, nameLen, valueStart, valueLen)*]; relative to the head's first byte. */
  spans = new Int32Array(64)
  /** Ints used in `spans` (2 for the URL, then 4 per header). */
  spanCount = 2
  private lastKind = -1
  headComplete = false
  messageComplete = false
  upgrade = false
  /** Set before parsing a response to a HEAD request: llhttp is told the answer has no body. */
  skipBody = false
  /** The chunked body being parsed reached its trailer section. */
  inTrailer = false
  /** Where the trailer section started in the bytes of the last execute() (relative to its `base`), else -1. */
  trailerAt = -1
  /** llhttp's keep-alive verdict, taken when the message completed. */
  keepAlive = false
  /** Bytes of the head consumed so far (the limit on head size is the caller's). */
  headBytes = 0

  constructor(kind: 'request' | 'response') {
    this.isResponse = kind === 'response'
    this.ptr = L.llhttp_alloc(this.isResponse ? TYPE_RESPONSE : TYPE_REQUEST)
    remap()
  }

  onMessageBegin(): void {
    this.spanCount = 2
    this.spans[0] = 0
    this.spans[1] = 0
    this.lastKind = -1
    this.headComplete = false
    this.upgrade = false
  }

  /** kind 0: URL, 1: header name, 2: header value. A span split over two reads continues the previous one. */
  onSpan(kind: number, start: number, len: number): void {
    if (this.headComplete) {
      // A header after the head: the trailer section of a chunked body (llhttp reports it like a head's fields).
      if (!this.inTrailer) {
        this.inTrailer = true
        this.trailerAt = start
      }
      return
    }
    const s = this.spans
    if (kind === this.lastKind) {
      // URL length at 1; a header's name length 3 ints before the end, its value length last.
      s[kind === 0 ? 1 : kind === 1 ? this.spanCount - 3 : this.spanCount - 1]! += len
      return
    }
    this.lastKind = kind
    if (kind === 0) {
      s[0] = start
      s[1] = len
      return
    }
    if (kind === 1) {
      if (this.spanCount + 4 > s.length) {
        const bigger = new Int32Array(s.length * 2)
        bigger.set(s)
        this.spans = bigger
      }
      this.spans[this.spanCount] = start
      this.spans[this.spanCount + 1] = len
      // An empty value gets no value callback: it reads as an empty span right after the name.
      this.spans[this.spanCount + 2] = start + len
      this.spans[this.spanCount + 3] = 0
      this.spanCount += 4
      return
    }
    this.spans[this.spanCount - 2] = start
    this.spans[this.spanCount - 1] = len
  }

  onHeadersComplete(upgrade: boolean): number {
    this.headComplete = true
    this.upgrade = upgrade
    this.lastKind = -1
    // A HEAD answer's Content-Length describes the GET answer, not bytes that follow (1: llhttp skips the body).
    return this.skipBody ? 1 : HPE_PAUSED
  }

  /**
   * Parses `chunk[start, end)` as the continuation of the current message. `base` is the offset of `chunk[start]`
   * from the first byte of the head (spans are recorded relative to it). Returns the number of bytes consumed:
   * parsing stops at the end of a head (headComplete) and at the end of a message (messageComplete). Throws
   * ParseError on malformed input.
   */
  execute(chunk: Buffer, start: number, end: number, base: number): number {
    const len = end - start
    stage(chunk, start, len)
    current = this
    chunkBase = base
    const ret = L.llhttp_execute(this.ptr, inputPtr, len)
    current = null
    if (ret === HPE_OK) return len
    if (ret === HPE_PAUSED || ret === HPE_PAUSED_UPGRADE) {
      const consumed = L.llhttp_get_error_pos(this.ptr) - inputPtr
      L.llhttp_resume(this.ptr)
      return consumed
    }
    throw this.error(ret)
  }

  /**
   * Parses (part of) a chunked body, to relay it as it came (chunk sizes and extensions untouched, nothing
   * re-chunked) except for its trailer section, which is dropped as nginx drops it: a backend that merges trailer
   * fields into the header fields would otherwise take fields no header check saw. Returns the bytes consumed from
   * `at`; of those, the first `relayBytes` are to be forwarded, and when `relayCrlf` the blank line that ends the body
   * follows them (the trailer lines between are left out).
   */
  executeChunked(chunk: Buffer, at: number): number {
    const wasInTrailer = this.inTrailer
    this.trailerAt = -1
    const n = this.execute(chunk, at, chunk.length, 0)
    this.relayBytes = wasInTrailer ? 0 : this.trailerAt === -1 ? n : this.trailerAt
    this.relayCrlf = this.messageComplete && this.inTrailer
    return n
  }
  relayBytes = 0
  relayCrlf = false

  /**
   * After the head: lets llhttp settle what follows it (it may complete a body-less message at once). Reads the
   * framing llhttp decided.
   */
  framing(): Framing {
    if (!this.messageComplete) {
      // Zero bytes: llhttp runs the states that need no input (the body-less end of a message).
      current = this
      const ret = L.llhttp_execute(this.ptr, inputPtr, 0)
      current = null
      if (ret === HPE_PAUSED || ret === HPE_PAUSED_UPGRADE) L.llhttp_resume(this.ptr)
      else if (ret !== HPE_OK) throw this.error(ret)
    }
    if (this.messageComplete) return Framing.None
    const flags = memView.getUint16(this.ptr + OFF_FLAGS, true)
    if ((flags & F_CHUNKED) !== 0) return Framing.Chunked
    if ((flags & F_CONTENT_LENGTH) !== 0) return Framing.Length
    return Framing.UntilClose
  }

  /** Content-Length of the message (valid when framing() said Length; llhttp checked it is one plain number). */
  get contentLength(): number {
    return Number(memView.getBigUint64(this.ptr + OFF_CONTENT_LENGTH, true))
  }

  /** A Length body was forwarded in full by the caller: ready the parser for the next message. */
  skipLengthBody(): void {
    // The verdict is read before the reset clears the flags it is made of.
    this.keepAlive = L.llhttp_should_keep_alive(this.ptr) === 1
    L.llhttp_reset(this.ptr)
    this.messageComplete = true
  }

  /** Ready for the next message on the same connection. */
  next(): void {
    this.messageComplete = false
    this.headComplete = false
    this.headBytes = 0
    this.skipBody = false
    this.inTrailer = false
    this.trailerAt = -1
  }

  /** A fresh start (a connection taken for a new exchange after an error, or reused from a pool). */
  reset(): void {
    L.llhttp_reset(this.ptr)
    this.next()
  }

  get method(): number {
    return L.llhttp_get_method(this.ptr)
  }
  get statusCode(): number {
    return L.llhttp_get_status_code(this.ptr)
  }
  get httpMinor(): number {
    return L.llhttp_get_http_minor(this.ptr)
  }
  get httpMajor(): number {
    return L.llhttp_get_http_major(this.ptr)
  }
  /** llhttp's keep-alive verdict for the message just parsed (HTTP version, Connection, framing). */
  get shouldKeepAlive(): boolean {
    return this.messageComplete ? this.keepAlive : L.llhttp_should_keep_alive(this.ptr) === 1
  }

  private error(ret: number): ParseError {
    const name = cString(L.llhttp_errno_name(ret))
    const reasonPtr = L.llhttp_get_error_reason(this.ptr)
    return new ParseError(name, reasonPtr === 0 ? name : cString(reasonPtr))
  }

  free(): void {
    L.llhttp_free(this.ptr)
  }
}

/** llhttp's method numbers (llhttp.h `llhttp_method`) → names, from the constants undici ships with the parser. */
const METHOD_NAMES: string[] = []
for (const [name, n] of Object.entries(
  (require('undici/lib/llhttp/constants.js') as { METHODS: Record<string, number> }).METHODS,
))
  METHOD_NAMES[n] = name

/** Bytes of llhttp's wasm memory now (it only grows). */
export function parserMemoryBytes(): number {
  return memBuffer.byteLength
}

export function methodName(n: number): string {
  return METHOD_NAMES[n] ?? 'UNKNOWN'
}
