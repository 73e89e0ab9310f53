import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import t from 'tap'
import { DOC_SECTIONS } from './helpers/doc-sections.js'

t.test(
  'the README config reference matches the field tables that drive flags, env and files (npm run docs)',
  async (t) => {
    const readme = readFileSync(resolve(import.meta.dirname, '..', 'README.md'), 'utf8')
    for (const [name, body] of DOC_SECTIONS()) {
      const start = readme.indexOf(`<!-- ${name}:start -->`)
      const end = readme.indexOf(`<!-- ${name}:end -->`)
      t.ok(start !== -1 && end > start, `README has the ${name} section`)
      t.equal(
        readme.slice(start + `<!-- ${name}:start -->`.length, end).trim(),
        body.trim(),
        `${name} is current (run npm run docs)`,
      )
    }
  },
)

t.test('the README names the two set-up commands and .ci/run calls the test command', async (t) => {
  const readme = readFileSync(resolve(import.meta.dirname, '..', 'README.md'), 'utf8')
  t.match(readme, /npm run demo/)
  t.match(readme, /npm test/)
  const ci = readFileSync(resolve(import.meta.dirname, '..', '.ci', 'run'), 'utf8')
  t.match(ci, /npm test/)
})
