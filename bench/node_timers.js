// timers, Node.js: N async functions each awaiting a 50 ms setTimeout promise, then Promise.all.
// Mode "time" (default): wall time from the first call until Promise.all resolves, and peak RSS
//   (resourceUsage().maxRSS) growth over that span per task.
// Mode "mem" (run with --expose-gc): V8 heapUsed per sleeping task at the peak: after all N
//   functions have started (they run eagerly up to their await) and Promise.all is attached, a
//   full gc() and heapUsed, minus the same before, divided by N.
'use strict';
const N = parseInt(process.env.BENCH_N || '', 10) || 100000;
const DELAY_MS = 50;
const mode = process.argv[2] || 'time';

let woke = 0;
async function sleeper() {
  await new Promise((resolve) => setTimeout(resolve, DELAY_MS));
  woke++;
}

function heapAfterGc() {
  if (global.gc) { global.gc(); global.gc(); }
  return process.memoryUsage().heapUsed;
}

async function main() {
  const promises = new Array(N);
  if (mode === 'mem') {
    const base = heapAfterGc();
    for (let i = 0; i < N; i++) promises[i] = sleeper();
    const all = Promise.all(promises);
    const early = woke;
    const peak = heapAfterGc();
    await all;
    if (woke !== N) throw new Error('not every sleeper woke');
    const per = (peak - base) / N;
    console.log(`RESULT name=timers impl=node bytes_per_task=${per.toPrecision(6)} early=${early} `
      + `gc=${global.gc ? 'yes' : 'no'} n=${N}`);
  } else {
    const rss0 = process.resourceUsage().maxRSS * 1024;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) promises[i] = sleeper();
    await Promise.all(promises);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const rss1 = process.resourceUsage().maxRSS * 1024;
    if (woke !== N) throw new Error('not every sleeper woke');
    const rssPer = (rss1 - rss0) / N;
    console.log(`RESULT name=timers impl=node wall_s=${wall.toPrecision(6)} `
      + `rss_bytes_per_task=${rssPer.toPrecision(6)} n=${N}`);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
