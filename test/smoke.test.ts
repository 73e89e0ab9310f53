import t from 'tap'
import { parseRoute } from '../src/routes/route.js'

t.test('a route with a fixed port parses', async (t) => {
  const r = parseRoute('mydemo.example.com=mydemo:5000')
  t.equal(r.port, 5000)
  t.equal(r.host, 'mydemo.example.com')
})
