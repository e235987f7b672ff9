// A licensed worker that holds a floating seat while it works, with entgate's typed client.
//
//   entgate pool create render-farm --seats 2 --ttl 30
//   export ENTGATE_CLIENT_TOKEN=$(entgate credential create render-worker --scope leases:client)   # a client credential
//   ENTGATE_URL=http://127.0.0.1:8080 node --import tsx examples/lease-client.ts
//
// In your own project: `import { LeaseClient, NoSeatAvailableError } from 'entgate'`.
import { hostname } from 'node:os';
import { LeaseClient, NoSeatAvailableError } from '../src/index.ts';

const client = new LeaseClient({ baseUrl: process.env.ENTGATE_URL ?? 'http://127.0.0.1:8080' });
const pool = process.env.POOL ?? 'render-farm';

let held;
try {
  held = await client.hold(
    { pool, clientId: `${hostname()}-${process.pid}`, metadata: { app: 'renderer', version: '2.4.1' } },
    {
      // The seat is gone (expired after a long pause, or released by an admin): stop working.
      onLost: (err) => {
        console.error(`lost the seat (${err.code}); stopping`);
        process.exit(76);
      },
    },
  );
} catch (err) {
  if (err instanceof NoSeatAvailableError) {
    console.error(`all ${err.seats} seats of ${pool} are in use; try again in ${err.retryAfterSeconds} s`);
    process.exit(75);
  }
  throw err;
}
console.log(`holding seat ${held.lease.leaseId} until ${held.lease.expiresAt}, heartbeat every ${held.lease.heartbeatIntervalSeconds} s`);

// ... the licensed work; here, ten seconds of nothing, or until Ctrl-C.
await new Promise<void>((resolve) => {
  const timer = setTimeout(resolve, 10_000);
  process.once('SIGINT', () => {
    clearTimeout(timer);
    resolve();
  });
});

await held.release();
console.log('released');
