/**
 * `fsb cp NAME:PATH LOCAL` interrupted: Ctrl-C or SIGTERM during the download leaves no partial file
 * behind and exits as an interrupted command does; `fsb cp LOCAL NAME:LINK` where the link points to
 * a directory copies into it. The program runs in a child process (signals), against a stand-in
 * control plane and a sandbox proxy (the daemon's /files, and its Stat in Connect's JSON).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, before, describe, it } from "node:test";
import { fakeSandbox, startFakeControlPlane, type FakeControlPlane } from "../fake-control-plane.fixture.js";
import { cliNodeArgs } from "../cli-program.fixture.js";
import type { EntryInfo } from "@fast-sandbox/sdk";
import { FsbError, ValidationError } from "@fast-sandbox/api";
import { createPartialFile, partialPathOf, planDirectoryDownload } from "./copy.js";

const API_TOKEN = "test-token-0123456789abcdef";

/** `fsb` in a child process (signals reach it), its stderr collected. */
interface FsbChild {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

/**
 * A stand-in control plane with one sandbox, `web`, whose daemon the sandbox proxy `daemon` plays,
 * started before the suite's tests and stopped after them; a data directory holding the API token.
 */
function standIns(daemon: http.RequestListener): { directory: string; fsb: (args: string[]) => FsbChild } {
  const directory = mkdtempSync(join(tmpdir(), "fsb-copy-spec-"));
  const proxy = http.createServer(daemon);
  let controlPlane: FakeControlPlane;
  before(async () => {
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    controlPlane = await startFakeControlPlane({
      token: API_TOKEN,
      sandboxes: [fakeSandbox("web")],
      proxyUrl: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    });
    writeFileSync(join(directory, "token"), `${API_TOKEN}\n`, { mode: 0o600 });
  });
  after(async () => {
    await controlPlane.close();
    proxy.closeAllConnections();
    await new Promise((resolve) => proxy.close(resolve));
    rmSync(directory, { recursive: true, force: true });
  });
  const fsb = (args: string[]): FsbChild => {
    const env = { ...process.env };
    for (const name of ["FSB_URL", "FSB_TOKEN", "FSB_ACCESS_TOKEN", "FSB_PROXY_URL", "FSB_SANDBOX_URL", "NODE_TEST_CONTEXT"]) delete env[name];
    const child = spawn(process.execPath, cliNodeArgs(["--url", controlPlane.url, "--data-dir", directory, ...args]), {
      env,
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = once(child, "exit").then(([code]) => code as number | null);
    return { child, stderr: () => stderr, exited };
  };
  return { directory, fsb };
}

describe("fsb cp out of a sandbox, interrupted", () => {
  // The daemon's /files, through the proxy: a file that keeps arriving; its Stat, a file.
  const { directory, fsb } = standIns((request, response) => {
    if (request.url === "/filesystem.Filesystem/Stat") {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ entry: { name: "big.bin", path: "/big.bin", type: "FILE_TYPE_FILE", mode: 0o644 } }));
      return;
    }
    if (!request.url?.startsWith("/files?")) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": "application/octet-stream" });
    const sending = setInterval(() => response.write(Buffer.alloc(64 * 1024, 97)), 20);
    response.on("close", () => clearInterval(sending));
  });

  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    it(`on ${signal} removes the partial file and exits ${code}`, async () => {
      const into = mkdtempSync(join(directory, "into-"));
      const { child, stderr, exited } = fsb(["cp", "--token", "t", "web:/big.bin", into]);
      try {
        // Some of it arrived: the copy is under way.
        for (const started = Date.now(); ; await new Promise((resolve) => setTimeout(resolve, 20))) {
          const partial = readdirSync(into).find((name) => name.startsWith("big.bin.fsb-partial-"));
          if (partial && statSync(join(into, partial)).size > 0) break;
          if (Date.now() - started > 20_000 || child.exitCode !== null) assert.fail(`the download did not start: ${stderr()}`);
        }
        child.kill(signal);
        assert.equal(await exited, code, stderr());
        assert.deepEqual(readdirSync(into), [], "neither the partial file nor the target is left");
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }
    });
  }
});

describe("fsb cp into a sandbox, to a symlink", () => {
  /** What the daemon's Stat answers (lstat: a symlink as itself), by path. */
  const entries: Record<string, { type: string; symlinkTarget?: string }> = {
    "/app": { type: "FILE_TYPE_SYMLINK", symlinkTarget: "srv/app" },
    "/srv/app": { type: "FILE_TYPE_SYMLINK", symlinkTarget: "/data/app" },
    "/data/app": { type: "FILE_TYPE_DIRECTORY" },
    "/notes": { type: "FILE_TYPE_SYMLINK", symlinkTarget: "/data/notes.txt" },
    "/data/notes.txt": { type: "FILE_TYPE_FILE" },
  };
  const written: string[] = [];
  const { directory, fsb } = standIns((request, response) => {
    const url = new URL(request.url ?? "/", "http://proxy");
    if (url.pathname === "/filesystem.Filesystem/Stat") {
      let body = "";
      request.on("data", (chunk: Buffer) => (body += chunk.toString()));
      request.on("end", () => {
        const { path } = JSON.parse(body) as { path: string };
        const entry = entries[path];
        response.writeHead(entry ? 200 : 404, { "content-type": "application/json" });
        response.end(
          JSON.stringify(entry ? { entry: { name: path.split("/").at(-1), path, ...entry } } : { code: "not_found", message: `${path}: no such file` }),
        );
      });
      return;
    }
    if (url.pathname === "/files" && request.method === "POST") {
      const path = url.searchParams.get("path") ?? "";
      request.resume();
      request.on("end", () => {
        written.push(path);
        response.writeHead(200, { "content-type": "application/json" });
        response.end(JSON.stringify([{ name: path.split("/").at(-1), type: "file", path }]));
      });
      return;
    }
    response.writeHead(404).end();
  });
  before(() => writeFileSync(join(directory, "report.txt"), "hello\n"));

  it("copies into the directory a symlink points to (relative targets from the link's directory), and onto a symlink to a file", async () => {
    for (const [destination, target] of [
      ["web:/app", "/app/report.txt"],
      ["web:/notes", "/notes"],
    ] as const) {
      written.length = 0;
      const { stderr, exited } = fsb(["cp", "--token", "t", join(directory, "report.txt"), destination]);
      assert.equal(await exited, 0, stderr());
      assert.deepEqual(written, [target], destination);
    }
  });
});

describe("fsb cp's partial file of a download", () => {
  it("has a name nobody can guess beforehand, beside the target", () => {
    const target = "/tmp/out/big.bin";
    const names = new Set([partialPathOf(target), partialPathOf(target)]);
    assert.equal(names.size, 2);
    for (const name of names) assert.match(name, /^\/tmp\/out\/big\.bin\.fsb-partial-[0-9a-f]{16}$/);
  });

  it("is a new file, owner-only: a symlink planted at its path is not written through", async () => {
    const directory = mkdtempSync(join(tmpdir(), "fsb-copy-spec-"));
    try {
      const victim = join(directory, "victim");
      writeFileSync(victim, "precious\n");
      const partial = join(directory, "big.bin.fsb-partial-0123456789abcdef");
      symlinkSync(victim, partial);
      await assert.rejects(pipeline(Readable.from([Buffer.from("evil\n")]), createPartialFile(partial)), { code: "EEXIST" });
      assert.equal(readFileSync(victim, "utf8"), "precious\n");
      const fresh = join(directory, "fresh.fsb-partial-fedcba9876543210");
      await pipeline(Readable.from([Buffer.from("data\n")]), createPartialFile(fresh));
      const plain = join(directory, "plain");
      writeFileSync(plain, "");
      assert.equal(lstatSync(fresh).mode & 0o777, lstatSync(plain).mode & 0o777, "the mode any new file gets");
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});

describe("fsb cp of a sandbox directory with entries it may not read", () => {
  const file = (path: string, permissions = "-rw-r-----") => ({ name: path.split("/").at(-1), path, type: "FILE_TYPE_FILE", mode: 0o640, permissions });
  const dir = (path: string) => ({ name: path.split("/").at(-1), path, type: "FILE_TYPE_DIRECTORY", mode: 0o750, permissions: "drwxr-x---" });
  /** The daemon's ListDir answers, by path; a string is a permission_denied. */
  const listings: Record<string, object[] | string> = {
    "/data": [file("/data/ok.txt"), dir("/data/secret"), file("/data/gone.txt"), dir("/data/sub")],
    "/data/secret": "open /data/secret: permission denied",
    "/data/sub": [file("/data/sub/deep.txt")],
  };
  const contents: Record<string, string> = { "/data/ok.txt": "ok\n", "/data/sub/deep.txt": "deep\n" };
  const { directory, fsb } = standIns((request, response) => {
    const url = new URL(request.url ?? "/", "http://proxy");
    const json = (status: number, body: object) => response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    if (url.pathname.startsWith("/filesystem.Filesystem/")) {
      let body = "";
      request.on("data", (chunk: Buffer) => (body += chunk.toString()));
      request.on("end", () => {
        const { path } = JSON.parse(body) as { path: string };
        if (url.pathname.endsWith("/Stat")) {
          json(200, { entry: dir(path) });
          return;
        }
        const listing = listings[path];
        if (typeof listing === "string") json(403, { code: "permission_denied", message: listing });
        else json(200, { entries: listing ?? [] });
      });
      return;
    }
    const path = url.searchParams.get("path") ?? "";
    if (url.pathname === "/files" && contents[path] !== undefined) {
      response.writeHead(200, { "content-type": "application/octet-stream" }).end(contents[path]);
      return;
    }
    json(404, { code: 404, message: `open ${path}: no such file or directory` });
  });
  it("copies the rest, names each entry it could not copy, and exits 1", async () => {
    const target = join(directory, "copy");
    const run = fsb(["cp", "--token", "t", "web:/data", target]);
    assert.equal(await run.exited, 1, run.stderr());
    const stderr = run.stderr();
    assert.match(stderr, /fsb cp: skipped "\/data\/gone.txt": .*no such file or directory/);
    assert.match(stderr, /fsb cp: skipped "\/data\/secret": .*permission denied/);
    assert.match(stderr, /fsb cp: 2 entries of "\/data" could not be copied/);
    assert.equal(readFileSync(join(target, "ok.txt"), "utf8"), "ok\n");
    assert.equal(readFileSync(join(target, "sub", "deep.txt"), "utf8"), "deep\n");
    assert.equal(statSync(join(target, "ok.txt")).mode & 0o777, 0o640 & ~process.umask());
    assert.deepEqual(readdirSync(target).sort(), ["ok.txt", "sub"]);
  });
});

describe("fsb cp's plan for a directory copied out of a sandbox", () => {
  const entry = (path: string, type: EntryInfo["type"] = "file"): EntryInfo => ({
    name: path.split("/").at(-1) ?? "",
    type,
    path,
    sizeBytes: 0,
    mode: 0o644,
    permissions: "-rw-r--r--",
    owner: "root",
    group: "root",
  });

  it("names every entry of the directory, sorted", () => {
    const plan = planDirectoryDownload("/proj/", [entry("/proj/src", "dir"), entry("/proj/a-b"), entry("/proj/README")]);
    assert.deepEqual(
      plan.map((planned) => planned.name),
      ["README", "a-b", "src"],
    );
    assert.deepEqual(
      planDirectoryDownload("/", [entry("/etc", "dir")]).map((planned) => planned.name),
      ["etc"],
    );
  });

  it("refuses a listing with an entry not directly in the directory, or twice (the sandbox is not trusted)", () => {
    for (const bad of ["/etc/passwd", "/proj", "/project/x", "/proj/../etc/passwd", "/proj/.", "/proj/..", "/proj//x", "/proj/a/", "/proj/a/b", "/proj/a\\b"]) {
      assert.throws(
        () => planDirectoryDownload("/proj", [entry("/proj/ok"), entry(bad)]),
        (error: unknown) =>
          error instanceof FsbError &&
          !(error instanceof ValidationError) &&
          error.message.includes(JSON.stringify(bad)) &&
          /the copy stopped there/.test(error.message),
        bad,
      );
    }
    assert.throws(() => planDirectoryDownload("/proj", [entry("/proj/x"), entry("/proj/x")]), FsbError);
  });
});

describe("fsb cp's partial file, made with a mode", () => {
  it("has the source's permission bits less the umask", async () => {
    const directory = mkdtempSync(join(tmpdir(), "fsb-copy-mode-"));
    try {
      const path = join(directory, "script");
      await pipeline(Readable.from(["#!/bin/sh\n"]), createPartialFile(path, 0o750));
      const umask = process.umask();
      assert.equal(statSync(path).mode & 0o777, 0o750 & ~umask);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
