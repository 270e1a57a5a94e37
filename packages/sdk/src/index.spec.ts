/**
 * What the SDK loads into its user's process: the API through `@fast-sandbox/api/core` only — a
 * client validates no resource itself (the control plane does), so TypeBox, the schemas built with
 * it and yaml stay out of every program that creates sandboxes.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadedPackages } from "../../../test/support/loaded-packages.js";

test("importing the SDK loads neither the API's main entry nor TypeBox nor yaml", () => {
  const { status, stderr, packages, apiMainEntryFrom } = loadedPackages(
    `const sdk = await import(${JSON.stringify(new URL("./index.ts", import.meta.url).href)});
     if (typeof sdk.FastSandboxClient !== "function") process.exit(3);`,
    import.meta.dirname,
  );
  assert.equal(status, 0, stderr);
  assert.ok(packages.has("@connectrpc/connect") && packages.has("@bufbuild/protobuf"), `the probe sees what the SDK loads: ${[...packages].join(", ")}`);
  for (const unwanted of ["@sinclair/typebox", "yaml"]) assert.ok(!packages.has(unwanted), `the SDK loads ${unwanted}`);
  assert.deepEqual(apiMainEntryFrom, []);
});
