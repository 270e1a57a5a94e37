import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { probeRunscFeatures } from "./runsc-features.js";

describe("probeRunscFeatures", () => {
  const dir = mkdtempSync(join(tmpdir(), "fsb-runsc-features-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const marker = "gvisor.dev/gvisor/pkg/sentry/kernel.(*UTSNamespace).RestoreSpecValues";
  const binary = (name: string, ...parts: Buffer[]) => {
    const path = join(dir, name);
    writeFileSync(path, Buffer.concat(parts));
    return path;
  };

  it("finds the function that sets a restored copy's hostname, even across the reads' chunks", async () => {
    // The marker straddles the 1 MiB boundary of the streamed reads.
    const path = binary("split", Buffer.alloc((1 << 20) - 20, 0x41), Buffer.from(marker), Buffer.alloc(4096, 0x42));
    assert.deepEqual(await probeRunscFeatures(path), { hostnameOnRestore: true });
    assert.deepEqual(await probeRunscFeatures(binary("small", Buffer.from(`ELF...${marker}...`))), { hostnameOnRestore: true });
  });

  it("reports no feature for a runsc without that function, or a binary it cannot read", async () => {
    const older = binary("older", Buffer.alloc(3 << 20, 0x41), Buffer.from("gvisor.dev/gvisor/pkg/sentry/kernel.(*UTSNamespace).SetHostName"));
    assert.deepEqual(await probeRunscFeatures(older), { hostnameOnRestore: false });
    assert.deepEqual(await probeRunscFeatures(join(dir, "missing")), { hostnameOnRestore: false });
  });
});
