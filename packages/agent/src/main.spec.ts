/**
 * What the agent's process loads. It imports the API through `@fast-sandbox/api/core`, never its
 * main entry: an agent validates no resource, and TypeBox with the schemas built with it (and yaml,
 * for the CRDs) cost some 10 MiB of every agent's memory (docs/PERFORMANCE.md, "Footprint at
 * scale"). The probe runs main.ts in a fresh node (this test's conditions: the sources) in its
 * install mode without a directory, which loads the whole program, prints its usage and exits 2.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadedPackages } from "../../../test/support/loaded-packages.js";

test("the agent's program loads neither the API's main entry nor TypeBox nor yaml", () => {
  const main = new URL("./main.ts", import.meta.url);
  const { status, stderr, packages, apiMainEntryFrom } = loadedPackages(
    `process.argv = [process.execPath, ${JSON.stringify(main.pathname)}, "install-node-binaries"];
     await import(${JSON.stringify(main.href)});`,
    import.meta.dirname,
  );
  assert.equal(status, 2, `the install mode without a directory exits 2 (usage):\n${stderr}`);
  assert.ok(packages.has("@grpc/grpc-js") && packages.has("@bufbuild/protobuf"), `the probe sees what the agent loads: ${[...packages].join(", ")}`);
  for (const unwanted of ["@sinclair/typebox", "yaml"]) assert.ok(!packages.has(unwanted), `the agent loads ${unwanted}`);
  assert.deepEqual(apiMainEntryFrom, []);
});
