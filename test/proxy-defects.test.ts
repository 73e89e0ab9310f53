// The eleven defects of issue 11 on the node:http data plane. Another data plane runs the same cases with its own
// StartEdgeProxy: `defectSuite(t, startRawEdge)` in a file of its own.
import t from 'tap'
import { startNodeEdge } from './helpers/edge.js'
import { defectSuite } from './helpers/edge-defects.js'

defectSuite(t, startNodeEdge)
