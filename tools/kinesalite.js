// Starts kinesalite (in memory) on 127.0.0.1 and prints "listening on 127.0.0.1:PORT".
// kinesalite's own cli.js listens on all interfaces; this script keeps it on loopback.
// Usage: node tools/kinesalite.js [PORT]   (default 0: a free port)
// Stops on SIGTERM/SIGINT, or when its stdin closes (so it never outlives the test that started it).
'use strict'
const kinesalite = require('kinesalite')

const port = Number(process.argv[2] || 0)
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100 })

server.listen(port, '127.0.0.1', () => {
  const addr = server.address()
  process.stdout.write(`listening on 127.0.0.1:${addr.port}\n`)
})

function stop () {
  server.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
if (process.env.TERN_KINESALITE_WATCH_STDIN !== '0') {
  process.stdin.on('end', stop)
  process.stdin.on('close', stop)
  process.stdin.resume()
}
