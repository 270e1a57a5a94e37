/**
 * What the agent's process loads. It imports the API through `@fast-sandbox/api/core`, never its
 * main entry: an agent validates no resource, and TypeBox with the schemas built with it (and yaml,
 * for the CRDs) cost some 10 MiB of every agent's memory (docs/PERFORMANCE.md, "Footprint at
 * scale"). The probe runs main.ts in a fresh node (this test's conditions: the sources) in its
 * install mode without a directory, which loads the whole program, prints its usage and exits 2,
 * under a module hook that reports the packages resolved.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";

const MARK = "resolved package";

const HOOKS = `
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  const inPackage = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(resolved.url);
  const fromPackage = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(context.parentURL ?? "");
  if (inPackage && inPackage[1] !== fromPackage?.[1]) process.stderr.write(${JSON.stringify(MARK)} + " " + inPackage[1] + "\\n");
  if (resolved.url.includes("/packages/api/src/index.ts") || resolved.url.includes("/packages/api/dist/index.js")) {
    process.stderr.write(${JSON.stringify(MARK)} + " @fast-sandbox/api (main entry) from " + context.parentURL + "\\n");
  }
  return resolved;
}
`;

test("the agent's program loads neither the API's main entry nor TypeBox nor yaml", () => {
  const script = `
    import { register } from "node:module";
    register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOKS)}`)});
    process.argv = [process.execPath, ${JSON.stringify(new URL("./main.ts", import.meta.url).pathname)}, "install-node-binaries"];
    await import(${JSON.stringify(new URL("./main.ts", import.meta.url).href)});
  `;
  const result = spawnSync(process.execPath, [...process.execArgv, "--input-type=module", "-e", script], {
    cwd: import.meta.dirname,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(result.status, 2, `the install mode without a directory exits 2 (usage):\n${result.stderr}`);
  const packages = new Set(
    result.stderr
      .split("\n")
      .filter((line) => line.startsWith(MARK))
      .map((line) => line.slice(MARK.length + 1)),
  );
  assert.ok(packages.has("@grpc/grpc-js") && packages.has("@bufbuild/protobuf"), `the probe sees what the agent loads: ${[...packages].join(", ")}`);
  for (const unwanted of ["@sinclair/typebox", "yaml"]) assert.ok(!packages.has(unwanted), `the agent loads ${unwanted}`);
  assert.deepEqual(
    [...packages].filter((name) => name.startsWith("@fast-sandbox/api (main entry)")),
    [],
  );
});
