// switch, Node.js: one async function doing N switches.
// Mode "immediate" (default, impl=node): `await new Promise(r => setImmediate(r))`, a real trip
// through the event loop, the equivalent of sleep(0) letting timers and I/O run.
// Mode "microtask" (impl=node-microtask): `await null`, a microtask hop that never lets the event
// loop (timers, I/O) run; informational only.
'use strict';
const N = parseInt(process.env.BENCH_N || '', 10) || 1000000;
const mode = process.argv[2] || 'immediate';

const immediate = () => new Promise((resolve) => setImmediate(resolve));

async function main() {
  const t0 = process.hrtime.bigint();
  if (mode === 'microtask') {
    for (let i = 0; i < N; i++) await null;
  } else {
    for (let i = 0; i < N; i++) await immediate();
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const impl = mode === 'microtask' ? 'node-microtask' : 'node';
  console.log(`RESULT name=switch impl=${impl} ns_per_switch=${(wall / N * 1e9).toPrecision(6)} `
    + `wall_s=${wall.toPrecision(6)} n=${N}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
