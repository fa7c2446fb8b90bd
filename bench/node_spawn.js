// spawn, Node.js: call N async functions, then await Promise.all of them.
//
// Mode "await1" (the default, reported as impl=node): each task does one `await null` and
// returns. Node runs an async function eagerly up to its first await, so this await is what puts
// every task through the scheduler once, as asyncio's create_task and lasync's spawn (not eager)
// do; it is also the variant the issue measured (~1.07M tasks/s, "one await per task").
// Mode "eager" (impl=node-eager): the task returns without awaiting, so calling it is a plain
// synchronous call that returns a resolved promise; informational only.
'use strict';
const N = parseInt(process.env.BENCH_N || '', 10) || 200000;
const mode = process.argv[2] || 'await1';

async function workAwait(i) {
  await null;
  return i;
}

async function workEager(i) {
  return i;
}

async function main() {
  const work = mode === 'eager' ? workEager : workAwait;
  const t0 = process.hrtime.bigint();
  const promises = new Array(N);
  for (let i = 0; i < N; i++) promises[i] = work(i);
  const results = await Promise.all(promises);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  if (results.length !== N || results[N - 1] !== N - 1) throw new Error('bad results');
  const impl = mode === 'eager' ? 'node-eager' : 'node';
  console.log(`RESULT name=spawn impl=${impl} tasks_per_s=${(N / wall).toPrecision(6)} `
    + `wall_s=${wall.toPrecision(6)} n=${N}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
