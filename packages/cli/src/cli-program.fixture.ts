/**
 * How the specs run the `fsb` program in a child process: this package's source bundled by esbuild,
 * once per test process, as `npm run build` bundles it for users (scripts/bundle-cli.ts). A child
 * then starts in ~0.2 s, where `node --import tsx src/main.ts` takes ~1.3 s on a 2-core machine (tsx
 * resolving and compiling hundreds of modules each time) — and main.spec alone starts it ~150 times.
 *
 * The bundle is made from the source (the `development` condition: this repository's packages from
 * their src/, not from dist/), so a spec never runs a stale build. What it leaves out is what the
 * users' bundle leaves out: the embedded control plane and the janitor (loaded by `up`, `down`,
 * `pull`, `login` and `janitor` alone), @kubernetes/client-node and pino. Those five commands load
 * TypeScript at run time, so a command line naming one of them runs src/main.ts through tsx as before.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildSync } from "esbuild";
import { CLI_BUNDLE_OPTIONS } from "../../../scripts/lib/cli-bundle-options.js";

const SOURCE_MAIN = join(import.meta.dirname, "main.ts");
const REPO_ROOT = join(import.meta.dirname, "..", "..", "..");
/** The commands that import the embedded control plane or the janitor (from source: TypeScript). */
const FROM_SOURCE_COMMANDS = new Set(["up", "down", "pull", "login", "janitor"]);

let bundleDir: string | undefined;

/**
 * Bundles src/main.ts into node_modules/.cache (where its chunks resolve node_modules as the package
 * does); removed when the process exits. Synchronous: the specs call it while they build a command line.
 */
function bundle(): string {
  if (bundleDir) return bundleDir;
  const dir = join(REPO_ROOT, "node_modules", ".cache", "fsb-cli-spec", `${process.pid}-${Date.now().toString(36)}`);
  mkdirSync(dir, { recursive: true });
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  buildSync({
    entryPoints: { fsb: SOURCE_MAIN },
    outdir: dir,
    ...CLI_BUNDLE_OPTIONS,
    conditions: ["development"],
  });
  // `kubectl fs` is the same program under the plugin's name (src/target.ts reads it from argv[1]).
  writeFileSync(join(dir, "kubectl-fs.mjs"), 'import "./fsb.mjs";\n');
  bundleDir = dir;
  return dir;
}

/**
 * Node's arguments that run `fsb ARGS…` (or `kubectl fs ARGS…`): the bundle, or src/main.ts through
 * tsx for the commands that need the embedded control plane or the janitor. `sourceEntry` replaces
 * src/main.ts in the latter (a file of the caller that imports it under another name).
 */
export function cliNodeArgs(args: readonly string[], options: { as?: "fsb" | "kubectl-fs"; sourceEntry?: string } = {}): string[] {
  if (args.some((arg) => FROM_SOURCE_COMMANDS.has(arg))) {
    return ["--conditions=development", "--import", "tsx", options.sourceEntry ?? SOURCE_MAIN, ...args];
  }
  return [join(bundle(), options.as === "kubectl-fs" ? "kubectl-fs.mjs" : "fsb.mjs"), ...args];
}
