import { createRequire } from 'node:module'

/**
 * Dependencies loaded on first use, not at start: `consul-lb serve` on the pass-through data plane never needs an
 * HTTP client or a YAML parser unless it is configured to (a Consul API address, the classic plane, a YAML config
 * file), and each costs the process memory for as long as it runs (undici alone about 6 MB of heap and 20 MB of
 * RSS with the code it compiles). Both packages are CommonJS, so `require` loads the same module instance an
 * `import` would, synchronously where the first use is.
 */
const require = createRequire(import.meta.url)

let undiciModule: typeof import('undici') | null = null
let yamlModule: typeof import('yaml') | null = null

/** undici: the classic data plane's upstream pools, and the Consul and Docker API clients. */
export function undici(): typeof import('undici') {
  undiciModule ??= require('undici') as typeof import('undici')
  return undiciModule
}

/** yaml: config files that are not JSON. */
export function yaml(): typeof import('yaml') {
  yamlModule ??= require('yaml') as typeof import('yaml')
  return yamlModule
}
