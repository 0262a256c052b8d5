// Drives @actions/cache (the npm package actions/cache and setup-* actions
// use) against a GitHub Actions cache server, for the tests of test/gha.
//
//   node actions-cache.mjs save KEY PATH...
//   node actions-cache.mjs restore KEY[,RESTORE_KEY...] PATH...
//
// GHA_PEERS_DIR names the directory whose node_modules holds @actions/cache
// (hack/install-node-tools.sh). The package reads its server, token and
// protocol version from the environment, as on a runner: ACTIONS_RUNTIME_TOKEN,
// RUNNER_TEMP, and ACTIONS_CACHE_URL (version 1) or ACTIONS_CACHE_SERVICE_V2
// with ACTIONS_RESULTS_URL (version 2).
//
// The last line of stdout is JSON: {"cacheId":N} for a save (-1: not saved),
// {"matchedKey":"..."} for a restore (null: a miss). The package's own log
// lines (::debug::, ::warning:: ...) come before it.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [op, keys, ...paths] = process.argv.slice(2);
if (!process.env.GHA_PEERS_DIR || !op || !keys || paths.length === 0) {
  console.error('usage: GHA_PEERS_DIR=DIR node actions-cache.mjs save|restore KEY[,RESTORE_KEY...] PATH...');
  process.exit(2);
}
// The package is ESM only and lives outside this file's directory: import
// its entry point by path (its own imports resolve from there).
const entry = path.join(process.env.GHA_PEERS_DIR, 'node_modules', '@actions', 'cache', 'lib', 'cache.js');
const cache = await import(pathToFileURL(entry).href);

try {
  if (op === 'save') {
    const cacheId = await cache.saveCache(paths, keys);
    console.log(JSON.stringify({ cacheId }));
  } else if (op === 'restore') {
    const [primary, ...restoreKeys] = keys.split(',');
    const matchedKey = await cache.restoreCache(paths, primary, restoreKeys);
    console.log(JSON.stringify({ matchedKey: matchedKey ?? null }));
  } else {
    console.error(`unknown operation ${op}: save or restore`);
    process.exit(2);
  }
} catch (err) {
  console.error(`${op} failed: ${err?.stack ?? err}`);
  process.exit(1);
}
