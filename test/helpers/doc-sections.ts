import { CONSUL_FIELDS } from '../../src/config/consul.js'
import { DOCTOR_FIELDS } from '../../src/config/doctor.js'
import { NGINX_FIELDS } from '../../src/config/nginx.js'
import { referenceTable } from '../../src/config/reference.js'
import { REGISTRATOR_FIELDS } from '../../src/config/registrator.js'
import { COMMON_FIELDS, SERVE_FIELDS } from '../../src/config/serve.js'

/** The README sections generated from the field tables: [marker name, markdown]. */
export function DOC_SECTIONS(): [string, string][] {
  return [
    ['config-common', referenceTable(COMMON_FIELDS)],
    ['config-serve', referenceTable(SERVE_FIELDS)],
    ['config-registrator', referenceTable(REGISTRATOR_FIELDS)],
    ['config-nginx', referenceTable(NGINX_FIELDS)],
    ['config-consul', referenceTable(CONSUL_FIELDS)],
    ['config-doctor', referenceTable(DOCTOR_FIELDS)],
  ]
}
