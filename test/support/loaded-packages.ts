/**
 * Which npm packages a program loads: runs `code` (an ES module body) in a fresh node with this
 * process's flags (the tests' conditions: the sources) under a module hook that reports every
 * package resolved from outside it, and whether the API's main entry (`@fast-sandbox/api`, with
 * TypeBox and the resource schemas) was resolved, and by whom. For the footprint specs of the
 * processes that must import `@fast-sandbox/api/core` only (agent, janitor, SDK).
 */
import { spawnSync } from "node:child_process";

const MARK = "resolved package";
const API_MAIN_ENTRY = "@fast-sandbox/api (main entry)";

const HOOKS = `
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  const inPackage = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(resolved.url);
  const fromPackage = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(context.parentURL ?? "");
  if (inPackage && inPackage[1] !== fromPackage?.[1]) process.stderr.write(${JSON.stringify(MARK)} + " " + inPackage[1] + " from " + context.parentURL + "\\n");
  if (resolved.url.includes("/packages/api/src/index.ts") || resolved.url.includes("/packages/api/dist/index.js")) {
    process.stderr.write(${JSON.stringify(`${MARK} ${API_MAIN_ENTRY}`)} + " from " + context.parentURL + "\\n");
  }
  return resolved;
}
`;

export interface LoadedPackages {
  /** The program's exit status. */
  status: number | null;
  stderr: string;
  stdout: string;
  /** Packages resolved (`@scope/name` or `name`). */
  packages: Set<string>;
  /** The modules (URLs) that resolved each package from outside it. */
  importers: Map<string, string[]>;
  /** Who resolved the API's main entry (empty: nobody). */
  apiMainEntryFrom: string[];
}

export function loadedPackages(code: string, cwd: string): LoadedPackages {
  const script = `
    import { register } from "node:module";
    register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOKS)}`)});
    ${code}
  `;
  const result = spawnSync(process.execPath, [...process.execArgv, "--input-type=module", "-e", script], { cwd, encoding: "utf8", timeout: 60_000 });
  const marked = result.stderr
    .split("\n")
    .filter((line) => line.startsWith(MARK))
    .map((line) => line.slice(MARK.length + 1));
  const importers = new Map<string, string[]>();
  const apiMainEntryFrom: string[] = [];
  for (const line of marked) {
    if (line.startsWith(API_MAIN_ENTRY)) {
      apiMainEntryFrom.push(line.slice(`${API_MAIN_ENTRY} from `.length));
      continue;
    }
    const [name = "", from = ""] = line.split(" from ");
    importers.set(name, [...(importers.get(name) ?? []), from]);
  }
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, packages: new Set(importers.keys()), importers, apiMainEntryFrom };
}
