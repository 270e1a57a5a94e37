import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { writeRunscOwnNetnsWrapper, writeRunscWrapper } from "./gvisor-binary.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-gvisor-binary-"));
/** runsc's network namespace for these tests (a test's name: the sweep of test leftovers knows it), made by the first wrapper run. */
const netnsName = `fsbt-runsc-${process.pid}`;
const netns = `/run/netns/${netnsName}`;
after(() => {
  rmSync(dir, { recursive: true, force: true });
  if (existsSync(netns)) execFileSync("ip", ["netns", "delete", netnsName]);
});

/** The inode of a network namespace (`net:[N]` in /proc/PID/ns/net). */
const netnsInode = (path: string) => String(statSync(path).ino);

/** A stand-in for runsc that reports its arguments and whether the host's net.core sysctls are visible to it. */
const fakeRunsc = join(dir, "fake runsc");
writeFileSync(
  fakeRunsc,
  '#!/bin/sh\necho "args:$*"\nif [ -e /proc/sys/net/core/rmem_default ]; then echo "net sysctls: visible"; else echo "net sysctls: hidden"; fi\necho "netns:$(readlink /proc/self/ns/net)"\n',
);
chmodSync(fakeRunsc, 0o755);

describe("runsc wrappers", () => {
  it("runsc-network-none adds --network=none, the memory root overlay, host FIFOs and the spec's seccomp profile and passes every argument on, in runsc's network namespace (made when missing)", () => {
    assert.ok(!existsSync(netns));
    const path = writeRunscWrapper(dir, fakeRunsc, netns);
    assert.equal(path, join(dir, "runsc-network-none"));
    assert.equal(statSync(path).mode & 0o777, 0o755);
    const [args, , inNetns] = execFileSync(path, ["create", "--bundle", "/b b", "id"], { encoding: "utf8" }).split("\n");
    assert.equal(args, "args:--network=none --overlay2=root:memory --host-fifo=open --oci-seccomp create --bundle /b b id");
    // Not the host's: runsc's control sockets (abstract, Debian's runsc) are out of the host's reach.
    assert.ok(existsSync(netns), "the wrapper made the namespace");
    assert.equal(inNetns, `netns:net:[${netnsInode(netns)}]`);
    assert.notEqual(netnsInode(netns), netnsInode("/proc/self/ns/net"));
  });

  it("runsc-own-netns runs runsc with /proc/sys/net hidden, in a mount namespace of its own and runsc's network namespace, with the memory root overlay and host FIFOs", () => {
    const path = writeRunscOwnNetnsWrapper(dir, fakeRunsc, netns);
    assert.equal(path, join(dir, "runsc-own-netns"));
    assert.equal(
      execFileSync(path, ["start", "id 1"], { encoding: "utf8" }),
      `args:--overlay2=root:memory --host-fifo=open --oci-seccomp start id 1\nnet sysctls: hidden\nnetns:net:[${netnsInode(netns)}]\n`,
    );
    // The host's view is untouched.
    assert.ok(existsSync("/proc/sys/net/core/rmem_default"));
  });

  it("rewrites a wrapper only when it changed, and never leaves a temporary file", () => {
    const path = writeRunscWrapper(dir, fakeRunsc, netns);
    const before = statSync(path).mtimeMs;
    writeRunscWrapper(dir, fakeRunsc, netns);
    assert.equal(statSync(path).mtimeMs, before);
    writeRunscWrapper(dir, "/opt/runsc", netns);
    assert.match(
      readFileSync(path, "utf8"),
      /exec nsenter --net='[^']+' '\/opt\/runsc' --network=none --overlay2=root:memory --host-fifo=open --oci-seccomp "\$@"/,
    );
    assert.ok(!execFileSync("ls", [dir], { encoding: "utf8" }).includes(".tmp"));
  });
});
