// Hostile and odd HTTP on the node:http data plane. Another data plane runs the same cases with its own
// StartEdgeProxy: `hostileSuite(t, startRawEdge)` in a file of its own.
import t from 'tap'
import { startNodeEdge } from './helpers/edge.js'
import { hostileSuite } from './helpers/edge-hostile.js'

hostileSuite(t, startNodeEdge)
