/**
 * What the embedded mode's janitor process loads (the one `fsb up` supervises, reading its inventory
 * from the control plane): neither the Kubernetes client (loaded only for the Kubernetes inventory:
 * ~50 MiB of RSS) nor the API's main entry with TypeBox and yaml (the janitor validates no resource).
 * The probe runs main.ts in a fresh node without its configuration: the whole program is loaded,
 * then it fails to start and exits 1.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadedPackages } from "../../../test/support/loaded-packages.js";

test("the janitor's program loads neither the Kubernetes client, nor the API's main entry, TypeBox or yaml", () => {
  const main = new URL("./main.ts", import.meta.url);
  const { status, stderr, packages, apiMainEntryFrom } = loadedPackages(
    // process.exit taken as an exit code: the process then ends once idle, after the module hook's
    // reports (on Node 22 the hooks run in a thread of their own, whose output an exit cuts off).
    `for (const name of Object.keys(process.env)) if (name.startsWith("FSB_")) delete process.env[name];
     process.exit = (code) => { process.exitCode = code ?? 0; };
     await import(${JSON.stringify(main.href)});`,
    import.meta.dirname,
  );
  assert.equal(status, 1, `without FSB_URL it fails to start:\n${stderr}`);
  assert.match(stderr, /janitor failed to start/);
  assert.ok(packages.has("@grpc/grpc-js") && packages.has("@connectrpc/connect"), `the probe sees what the janitor loads: ${[...packages].join(", ")}`);
  for (const unwanted of ["@kubernetes/client-node", "@sinclair/typebox", "yaml"]) assert.ok(!packages.has(unwanted), `the janitor loads ${unwanted}`);
  assert.deepEqual(apiMainEntryFrom, []);
});

test("the package's main entry (what fsb up and fsb down import) does not load the Kubernetes client", () => {
  const index = new URL("./index.ts", import.meta.url);
  const { status, stderr, packages } = loadedPackages(
    `const janitor = await import(${JSON.stringify(index.href)}); if (typeof janitor.startJanitorProcess !== "function") process.exit(3);`,
    import.meta.dirname,
  );
  assert.equal(status, 0, stderr);
  assert.ok(packages.has("@connectrpc/connect"), `the probe sees what the entry loads: ${[...packages].join(", ")}`);
  assert.ok(!packages.has("@kubernetes/client-node"), "the entry loads the Kubernetes client");
});
