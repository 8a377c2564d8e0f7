#!/usr/bin/env node
'use strict';
// The `shmkit` command-line tool (docs/cli.md). The code is compiled TypeScript in dist/cli/.
require('../dist/cli/main.js')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
