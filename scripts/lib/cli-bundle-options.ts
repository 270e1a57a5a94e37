/**
 * The esbuild options both bundles of the `fsb` CLI share: the users' (scripts/bundle-cli.ts, from
 * tsc's output) and the specs' (packages/cli/src/cli-program.fixture.ts, from the source).
 */
import type { BuildOptions } from "esbuild";

/** Imported at run time, by the commands that need them only (see scripts/bundle-cli.ts). */
export const CLI_BUNDLE_EXTERNAL = ["@fast-sandbox/controlplane", "@fast-sandbox/janitor", "@kubernetes/client-node", "pino"];

export const CLI_BUNDLE_OPTIONS = {
  outExtension: { ".js": ".mjs" },
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20.19",
  external: CLI_BUNDLE_EXTERNAL,
  // commander and yaml are CommonJS and require Node's built-ins; an ES module has no `require` of its own.
  banner: { js: 'import { createRequire as __fsbCreateRequire } from "node:module"; const require = __fsbCreateRequire(import.meta.url);' },
  logLevel: "warning",
} satisfies BuildOptions;
