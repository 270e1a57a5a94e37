/**
 * `@fast-sandbox/api/core` is a part of the main entry, not a copy: the same objects (an error
 * thrown by code importing one entry is `instanceof` the class of the other), without the schemas.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import * as core from "./core.js";
import * as main from "./index.js";

test("every export of the core entry is the same object in the main entry", () => {
  const differing = Object.entries(core).filter(([name, value]) => (main as Record<string, unknown>)[name] !== value);
  assert.deepEqual(
    differing.map(([name]) => name),
    [],
  );
  assert.ok(Object.keys(core).length >= 20, "the core entry exports the errors, pb, the wire helpers");
});

test("importing the core entry loads neither TypeBox nor yaml", () => {
  const script = `
    import { register } from "node:module";
    register("data:text/javascript," + encodeURIComponent(\`
      export async function resolve(specifier, context, next) {
        const resolved = await next(specifier, context);
        if (/node_modules\\\\/(@sinclair\\\\/typebox|yaml)\\\\//.test(resolved.url)) process.stderr.write("loaded " + resolved.url + "\\\\n");
        return resolved;
      }\`));
    await import(${JSON.stringify(new URL("./core.ts", import.meta.url).href)});
  `;
  const result = spawnSync(process.execPath, [...process.execArgv, "--input-type=module", "-e", script], {
    cwd: import.meta.dirname,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(result.status, 0, result.stderr);
  assert.deepEqual(
    result.stderr.split("\n").filter((line) => line.startsWith("loaded ")),
    [],
  );
});
