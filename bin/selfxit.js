#!/usr/bin/env node
// selfxit command-line entry: loads the bundled CLI (dist/cli.js, built from src/cli/main.ts by `npm run build`).
import '../dist/cli.js';
