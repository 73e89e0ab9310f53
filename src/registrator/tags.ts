import type { ContainerInspect } from './docker.js'
import { type ConventionWarning, conventionWarning } from './errors.js'
import { type CompiledTemplate, compileTemplate, TemplateError } from './template.js'

/**
 * Tag lists as gliderlabs/registrator reads them (bridge/util.go recParseEscapedComma, unit-tested there): split at
 * commas, `\,` is a comma inside a tag, empty items are skipped. gliderlabs returns them in reverse order (a side effect
 * of its recursion); Consul keeps tags in the order given, so they are kept in the order written here.
 */
export function splitTags(text: string): string[] {
  const out: string[] = []
  let cur = ''
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (c === '\\' && text[i + 1] === ',') {
      cur += ','
      i++
    } else if (c === ',') {
      if (cur !== '') out.push(cur)
      cur = ''
    } else {
      cur += c
    }
  }
  if (cur !== '') out.push(cur)
  return out
}

/**
 * `--tags` / `-tags`: tags added to every service. Each item is a Go template evaluated against the container (as
 * gliderlabs' master does with its `-tags` value), then split like SERVICE_TAGS. Compiled once at start-up; a template
 * that fails for one container (a missing field) drops that item for that container with a warning, where gliderlabs
 * exited.
 */
export class ForcedTags {
  private readonly items: CompiledTemplate[]

  constructor(items: readonly string[]) {
    this.items = items.map((s) => compileTemplate(s))
  }

  forContainer(c: ContainerInspect, warnings: ConventionWarning[]): string[] {
    const out: string[] = []
    for (const t of this.items) {
      let text = t.source
      if (t.isTemplate) {
        try {
          text = t.execute(c)
        } catch (err) {
          if (!(err instanceof TemplateError)) throw err
          warnings.push(conventionWarning('--tags', t.source, `template failed for this container: ${err.message}`))
          continue
        }
      }
      out.push(...splitTags(text))
    }
    return out
  }
}
