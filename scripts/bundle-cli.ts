/**
 * Bundles the `fsb` CLI (packages/cli/dist, as `tsc -b` built it) with esbuild into
 * packages/cli/dist/bundle/: the entry `fsb.mjs` plus one chunk per lazily loaded command, so
 * `fsb ls` reads a few files instead of resolving and compiling hundreds of modules (issue 10: a
 * command must spend at most 150 ms of its own). `bin/fsb.js` and `bin/kubectl-fs` load it when it
 * exists. Run by `npm run build` after `tsc -b`: `node --import tsx scripts/bundle-cli.ts`.
 *
 * What stays out of the bundle, imported from node_modules at run time and only by the commands that
 * need them: the embedded control plane and the janitor (`fsb up`, `down`, `janitor`, `pull`, `login`;
 * they locate their agent and janitor programs and native modules relative to their own files),
 * @kubernetes/client-node (cluster targets only) and pino. The chunks sit two directories below the
 * package, as tsc's dist/commands/*.js do, so paths relative to `import.meta.url` (`fsb up --detach`
 * starts ../../bin/fsb.js) mean the same in both.
 */
import { rmSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { build, type Plugin } from "esbuild";
import { CLI_BUNDLE_OPTIONS } from "./lib/cli-bundle-options.js";

const root = resolve(import.meta.dirname, "..");
const cli = join(root, "packages/cli");
const outdir = join(cli, "dist/bundle");
const apiDist = join(root, "packages/api/dist");
const apiErrors = join(apiDist, "errors.js");

/**
 * How the bundle takes @fast-sandbox/api:
 * - its modules only define things (none is imported for what it does on load), so a module none of
 *   whose exports a command uses is left out: `fsb ls` carries no CRD renderer (and no yaml);
 * - its error classes stay one file, imported from packages/api/dist at run time: the control plane
 *   and the janitor (external, with their own copy of the package) throw them, and `fsb` must still
 *   recognise them (`instanceof FsbError`, a ValidationError of a flag exits 2). Node loads that file
 *   once whether reached through the bundle or through node_modules (the symlink resolves to it).
 */
const apiModules: Plugin = {
  name: "api-modules",
  setup(pluginBuild) {
    pluginBuild.onResolve({ filter: /.*/, namespace: "api-errors" }, (args) => ({ path: args.path, external: true }));
    pluginBuild.onResolve({ filter: /.*/, namespace: "file" }, async (args) => {
      const fromApi = args.path === "@fast-sandbox/api" || (args.path.startsWith(".") && args.importer.startsWith(apiDist));
      if (!fromApi || args.pluginData === apiModules) return undefined;
      const resolved = await pluginBuild.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: apiModules });
      if (resolved.errors.length > 0) return { errors: resolved.errors };
      if (resolved.path === apiErrors) return { path: apiErrors, namespace: "api-errors" };
      return { ...resolved, sideEffects: false };
    });
    // Named re-exports (an `export *` of an external module would keep every export of the package's index).
    pluginBuild.onLoad({ filter: /.*/, namespace: "api-errors" }, async () => ({
      contents: `export { ${Object.keys((await import(pathToFileURL(apiErrors).href)) as Record<string, unknown>).join(", ")} } from ${JSON.stringify(relative(outdir, apiErrors))};`,
      resolveDir: outdir,
    }));
  },
};

rmSync(outdir, { recursive: true, force: true });
const result = await build({
  entryPoints: { fsb: join(cli, "dist/main.js") },
  outdir,
  ...CLI_BUNDLE_OPTIONS,
  plugins: [apiModules],
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: "none",
  metafile: true,
});

const outputs = Object.entries(result.metafile.outputs);
const entry = outputs.find(([file]) => file.endsWith("fsb.mjs"));
const kilobytes = (bytes: number) => `${Math.round(bytes / 1024)} KiB`;
const total = outputs.reduce((sum, [, output]) => sum + output.bytes, 0);
process.stdout.write(
  `bundled the CLI into ${relative(root, outdir)}/: ${outputs.length} files, ${kilobytes(total)} (entry ${kilobytes(entry?.[1].bytes ?? 0)}; from ${relative(root, dirname(join(cli, "dist/main.js")))})\n`,
);
