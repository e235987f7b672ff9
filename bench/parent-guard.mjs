// Preloaded (`node --import`) into every server process the benchmark starts: if the benchmark
// dies without cleaning up (SIGKILL, a crash), its servers notice that their parent is gone and
// stop themselves instead of lingering on their ports. One unref'd check per second; nothing
// else in the server changes.
const parent = process.ppid;
const timer = setInterval(() => {
  if (process.ppid === parent) return;
  clearInterval(timer);
  process.kill(process.pid, 'SIGTERM');
  setTimeout(() => process.exit(1), 10_000).unref();
}, 1000);
timer.unref();
