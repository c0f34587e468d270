// Shared by the jose peer scripts: load npm packages from NODE_PATH
// (test/peers/node_modules), which ES module imports do not consult, and a
// small RFC 8785 canonicalizer for plain JSON (objects sorted by UTF-16 code
// units, which is JavaScript's default sort; primitives as JSON.stringify
// writes them, which is what RFC 8785 specifies).
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createHash } from 'node:crypto';

export async function load(name) {
  const base = process.env.NODE_PATH;
  if (!base) throw new Error('NODE_PATH must point at test/peers/node_modules');
  const require = createRequire(path.join(base, 'noop.js'));
  return import(pathToFileURL(require.resolve(name)).href);
}

export function jcs(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(jcs).join(',') + ']';
  return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + jcs(v[k])).join(',') + '}';
}

export function digest(args) {
  return createHash('sha256').update(jcs(args ?? {}), 'utf8').digest('hex');
}
