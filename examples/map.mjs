// A cache and counters shared by processes: a front process and two workers it forks read and
// write one SharedMap. Every process sees every write at once; counters end exact; a
// compare-and-set retry loop updates one record from three processes without losing an update.
// Run: node examples/map.mjs [MAP-NAME]
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SharedMap } from 'shmkit';

if (process.argv[2] === 'worker') {
  const [, , , name, label] = process.argv;
  const cache = SharedMap.open(name); // the creator's codec (json, the default)
  for (let i = 0; i < 1000; i++) {
    cache.increment('requests'); // atomic across processes
    cache.set(`page:${label}:${i % 10}`, { html: `<p>${label} ${i}</p>`, at: i }, { ttl: 60_000 });
  }
  // Compare-and-set: read, change, write only if nobody wrote in between; else read again.
  for (let n = 0; n < 100; n++) {
    for (;;) {
      const e = cache.getEntry('stats');
      try {
        cache.set('stats', { updates: e.value.updates + 1, last: label }, { ifRevision: e.revision });
        break;
      } catch (err) {
        if (err.code !== 'ERR_SHMKIT_CONFLICT') throw err; // someone else won this round
      }
    }
  }
  cache.close();
} else {
  const name = process.argv[2] ?? 'example-cache';
  const cache = SharedMap.create(name, { maxEntries: 1000, valueBytes: 1 << 20, eviction: 'lru' });
  try {
    cache.set('stats', { updates: 0, last: null });
    const changes = cache.watch('stats'); // every change of one key, from any process
    const workers = ['A', 'B'].map((label) => {
      const child = fork(fileURLToPath(import.meta.url), ['worker', name, label]);
      return new Promise((resolve, reject) => child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker ${label} exited with ${code}`)))));
    });
    for (let n = 0; n < 100; n++) {
      for (;;) {
        const e = cache.getEntry('stats');
        try {
          cache.set('stats', { updates: e.value.updates + 1, last: 'front' }, { ifRevision: e.revision });
          break;
        } catch (err) {
          if (err.code !== 'ERR_SHMKIT_CONFLICT') throw err;
        }
      }
    }
    const first = await changes.next(); // the watcher saw the record change (maybe several writes later)
    console.log('watch: the first change seen was a', first.value.type, 'of', first.value.key);
    changes.close();
    await Promise.all(workers);

    console.log('requests =', cache.get('requests')); // 2000: no increment lost
    console.log('stats.updates =', cache.get('stats').updates); // 300: no compare-and-set lost
    console.log('pages cached:', [...cache.keys('page:')].length); // 20
    console.log('page:A:3 =', cache.get('page:A:3'));
    const s = cache.stats();
    console.log(`entries ${s.entries}, reads ${s.gets} (${s.hits} hits), writes ${s.writes}`);
  } finally {
    cache.close();
    SharedMap.unlink(name); // names live in /dev/shm until unlinked, like files
  }
}
