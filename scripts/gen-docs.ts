// Writes the config reference tables into README.md from the field tables (npm run docs).
import { readFileSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { replaceSection } from '../src/config/reference.js'
import { DOC_SECTIONS } from '../test/helpers/doc-sections.js'

const path = resolve(import.meta.dirname, '..', 'README.md')
let doc = readFileSync(path, 'utf8')
for (const [name, body] of DOC_SECTIONS()) doc = replaceSection(doc, name, body)
writeFileSync(path, doc)
console.log(`README.md: ${DOC_SECTIONS().length} reference sections written`)
