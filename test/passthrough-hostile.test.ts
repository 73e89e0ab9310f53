// The hostile-input suite of issue 11 on the pass-through data plane: the same cases as test/proxy-hostile.test.ts.
import t from 'tap'
import { type StartEdgeProxy, startNodeEdge } from './helpers/edge.js'
import { hostileSuite } from './helpers/edge-hostile.js'

/** The pass-through data plane (src/passthrough/), measured by the same counters as the node:http one. */
const startPassthroughEdge: StartEdgeProxy = (t, consul, settings) =>
  startNodeEdge(t, consul, { dataPlane: 'passthrough', ...settings })

hostileSuite(t, startPassthroughEdge)
