#!/usr/bin/env node
// Bundles the demo page's script (src/app.js with mediasoup-client and protoo-client) into one
// file with esbuild.
//
//   node web/build.mjs --outfile /absolute/path/to/app.js
//
// Works from any directory. Exits non-zero (with the reason on stderr) when the bundle cannot be
// built; run `npm ci` in web/ first.

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const webDir = dirname(fileURLToPath(import.meta.url));

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(1);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      outfile: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  }));
} catch (error) {
  fail(`${error.message}\nusage: node build.mjs --outfile <path to app.js>`);
}
if (values.help) {
  console.log('usage: node build.mjs --outfile <path to app.js>');
  process.exit(0);
}
if (!values.outfile) fail('--outfile <path to app.js> is required');
const outfile = resolve(values.outfile);

if (!existsSync(join(webDir, 'node_modules', 'mediasoup-client'))) {
  fail(`${join(webDir, 'node_modules')} is missing its packages: run \`npm ci\` in ${webDir}`);
}

let esbuild;
try {
  esbuild = await import('esbuild');
} catch (error) {
  fail(`cannot load esbuild (${error.message}): run \`npm ci\` in ${webDir}`);
}

try {
  const result = await esbuild.build({
    absWorkingDir: webDir,
    entryPoints: [join(webDir, 'src', 'app.js')],
    outfile,
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: ['chrome111'],
    minify: true,
    sourcemap: false,
    legalComments: 'none',
    define: { 'process.env.NODE_ENV': '"production"' },
    logLevel: 'silent',
  });
  for (const warning of result.warnings) {
    console.error((await esbuild.formatMessages([warning], { kind: 'warning' })).join(''));
  }
} catch (error) {
  // esbuild has already formatted its errors into the message.
  fail(`esbuild failed:\n${error.message}`);
}
console.log(`build.mjs: wrote ${outfile}`);
