/**
 * Exit codes and error output of the `fsb` program. main.ts runs the program when imported, so these
 * tests run it in a child process (from source, like `npm run fsb` after a build).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fakePool, fakeSandbox, startFakeControlPlane } from "./fake-control-plane.fixture.js";
import { withoutCliEnv } from "./fake-kube-api.fixture.js";
import { cliNodeArgs } from "./cli-program.fixture.js";

const REPO_ROOT = join(import.meta.dirname, "..", "..", "..");
/** Nothing listens on port 1, so calls fail fast with ECONNREFUSED. */
const UNREACHABLE = "http://127.0.0.1:1";

const API_TOKEN = "test-token-0123456789abcdef";
const dataDir = mkdtempSync(join(tmpdir(), "fsb-main-spec-"));
writeFileSync(join(dataDir, "token"), `${API_TOKEN}\n`, {
  mode: 0o600,
});
after(() => rmSync(dataDir, { recursive: true, force: true }));

function fsb(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return fsbWith({}, ...args);
}

function fsbWith(extraEnv: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = withoutCliEnv();
    Object.assign(env, extraEnv);
    const child = spawn(process.execPath, cliNodeArgs(args), {
      cwd: REPO_ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("fsb exit codes", () => {
  it("exits 2 when an option is missing its value", async () => {
    const result = await fsb("run", "--port");
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /--port <port>' argument missing/);
  });

  it("exits 2 for an unknown command", async () => {
    const result = await fsb("bogus");
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /unknown command 'bogus'/);
  });

  it("exits 2 for a port out of range, naming --port", async () => {
    const result = await fsb("run", "--image", "x", "--port", "70000", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^error: --port: "70000" is not a port; allowed: 1\.\.65535$/m);
  });

  it("exits 2 for an --egress it cannot read, before asking the control plane, and documents the forms in 'run --help'", async () => {
    const result = await fsb("run", "--image", "x", "--egress", "deny-all", "--egress", "10.0.0.0/8", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^error: --egress: deny-all stands alone/m);
    const help = await fsb("run", "--help");
    assert.equal(help.code, 0, help.stderr);
    assert.match(
      help.stdout.replace(/\s+/g, " "),
      /--egress <rule> where it may connect to, .* deny-all, allow-all, or CIDR\[:PORT\[,PORT…\]\]\[\/tcp\|\/udp\]/,
    );
  });

  it("exits 2 for a positional argument it cannot read (cp, port-forward, exec), before asking the control plane", async () => {
    for (const [args, said] of [
      [["cp", "a", "b"], /^error: SRC: neither "a" nor "b" is NAME:PATH/m],
      [["cp", "sb:/x", "backup:1.tar"], /\.\/backup:1\.tar/],
      [["port-forward", "web", "abc"], /^error: LOCAL:REMOTE: "abc" is not LOCAL:REMOTE/m],
      [["exec", "web"], /^error: COMMAND: name the command after '--'/m],
      [["exec", "web", "-u", "a:b:c", "--", "id"], /^error: --user: "a:b:c" is not a user: expected USER or USER:GROUP/m],
      [
        ["exec", "-it", "web", "-u", "app:staff", "--", "sh"],
        /^error: --user: -i and -t run through the sandbox's daemon, which takes a user without a group .*: -u app$/m,
      ],
      [["shell", "web", "-u", "-x"], /^error: --user: "-x" is not a user/m],
    ] as const) {
      const result = await fsb(...args, "--url", UNREACHABLE, "--data-dir", dataDir);
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, said);
    }
  });

  it("exits 2 for a sandbox whose access token it does not know (port-forward, cp, exec -it, shell), having asked the control plane only whether it is there", async () => {
    const controlPlane = await startFakeControlPlane({
      token: API_TOKEN,
      sandboxes: [fakeSandbox("web", { exposedPorts: [8080], endpoints: ["http://8080-web.localhost:1/"] })],
    });
    try {
      for (const args of [
        ["port-forward", "web", ":8080"],
        ["cp", "web:/etc/hostname", join(dataDir, "hostname")],
        ["exec", "-it", "web", "--", "sh"],
        ["shell", "web"],
      ]) {
        controlPlane.calls.length = 0;
        const result = await fsb("--url", controlPlane.url, "--data-dir", dataDir, ...args);
        assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
        assert.match(result.stderr, /^error: --token: no access token for sandbox default\/web: pass --token \(or FSB_ACCESS_TOKEN\)/m);
        assert.deepEqual(controlPlane.calls, ["GetSandbox default/web"], `${args.join(" ")} asked the control plane only whether web is there`);
      }
    } finally {
      await controlPlane.close();
    }
  });

  it("says a sandbox is not found (exit 1), not how to get its access token, when there is none of that name (cp both ways, port-forward, exec -it, shell)", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, sandboxes: [fakeSandbox("web")] });
    const local = join(dataDir, "upload.txt");
    writeFileSync(local, "hello\n");
    try {
      for (const args of [
        ["cp", local, "nosuch:/x"],
        ["cp", "nosuch:/etc/hostname", join(dataDir, "hostname")],
        ["port-forward", "nosuch", "8080"],
        ["exec", "-it", "nosuch", "--", "sh"],
        ["shell", "nosuch"],
      ]) {
        const result = await fsb("--url", controlPlane.url, "--data-dir", dataDir, ...args);
        assert.equal(result.code, 1, `${args.join(" ")}: ${result.stderr}`);
        assert.equal(result.stderr, "error: sandbox nosuch not found\n", args.join(" "));
      }
    } finally {
      await controlPlane.close();
    }
  });

  it("never prints FSB_ACCESS_TOKEN: not in port-forward's --help, nor after its usage errors", async () => {
    const secret = "secret-access-token-0123456789";
    for (const args of [
      ["port-forward", "--help"],
      ["port-forward", "web"],
      ["port-forward", "web", "abc"],
      ["port-forward", "web", ":8080", "--bogus"],
    ]) {
      const result = await fsbWith({ FSB_ACCESS_TOKEN: secret }, "--url", UNREACHABLE, "--data-dir", dataDir, ...args);
      assert.ok(result.code === 0 || result.code === 2, `${args.join(" ")}: exit ${String(result.code)}: ${result.stderr}`);
      assert.ok(!`${result.stdout}${result.stderr}`.includes(secret), `${args.join(" ")} printed FSB_ACCESS_TOKEN:\n${result.stdout}${result.stderr}`);
    }
  });

  it("exits 2 for every run flag it cannot read, before anything is asked of the control plane (also without --image, and restoring)", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN });
    try {
      for (const [flags, said] of [
        [["--port", "70000"], /^error: --port: "70000" is not a port/m],
        [["-e", "NOVALUE"], /^error: --env: "NOVALUE" is not NAME=VALUE/m],
        [["--expire", "soon"], /^error: --expire: /m],
        [["--failure-policy", "Sometimes"], /^error: --failure-policy: "Sometimes" is not a failure policy; allowed: Manual, AutoRecreate/m],
        [["--recovery-timeout", "400ms"], /^error: --recovery-timeout: "400ms" is not a whole number of seconds/m],
        [["--from-checkpoint", "golden", "--port", "0"], /^error: --port: "0" is not a port/m],
        [["--from-checkpoint", "golden", "--expire", "soon"], /^error: --expire: /m],
      ] as const) {
        const result = await fsb("run", ...flags, "--url", controlPlane.url, "--data-dir", dataDir);
        assert.equal(result.code, 2, `${flags.join(" ")}: ${result.stderr}`);
        assert.match(result.stderr, said);
        assert.deepEqual(controlPlane.calls, [], `${flags.join(" ")} asked the control plane nothing`);
      }
    } finally {
      await controlPlane.close();
    }
  });

  it("run without --image, for a user who may not read pools: says to pass --image, which creates without reading the pool", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, pools: [fakePool("default")], poolsUnreadable: true });
    try {
      const refused = await fsb("run", "--url", controlPlane.url, "--data-dir", dataDir, "--", "true");
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /may not get sandboxpools.*; without --image, run reads the pool's default image: pass --image IMAGE/);
      assert.deepEqual(controlPlane.creates, []);
      const created = await fsb("run", "--url", controlPlane.url, "--data-dir", dataDir, "--image", "busybox", "-q", "--", "true");
      assert.equal(created.code, 0, created.stderr);
      assert.equal(controlPlane.creates.length, 1);
    } finally {
      await controlPlane.close();
    }
  });

  it("exits 2 for a checkpoint name that is not one, before anything is asked", async () => {
    const result = await fsb("checkpoint", "web", "-n", "Bad Name", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^error: --name: "Bad Name" is not a checkpoint name: at most 63 lowercase letters/m);
  });

  it("exits 2 for a --recovery-timeout that is not whole seconds (not rounded to 0: the policy would act at once)", async () => {
    const result = await fsb("run", "--image", "x", "--recovery-timeout", "400ms", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^error: --recovery-timeout: "400ms" is not a whole number of seconds; e\.g\. 30s, 2m$/m);
  });

  it("exits 2 for 'up --detach' with a port that is not one, in the foreground (not in a background log)", async () => {
    const scratch = mkdtempSync(join(tmpdir(), "fsb-main-spec-up-"));
    try {
      const result = await fsb("up", "--detach", "--port", "abc", "--data-dir", scratch);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /^error: --port: abc is not a port number \(0\.\.65535\)$/m);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  it("exits 2 for 'apply -f' of a directory or of a file that does not exist, saying what to give", async () => {
    const directory = await fsb("apply", "-f", REPO_ROOT, "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(directory.code, 2, directory.stderr);
    assert.match(directory.stderr, /is a directory; give one manifest file/);
    const missing = await fsb("apply", "-f", join(dataDir, "nothing.yaml"), "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /nothing\.yaml: no such file/);
  });

  it("bounds each call by --request-timeout or FSB_REQUEST_TIMEOUT (0: no limit), 60 s by default, and refuses what is no duration (exit 2)", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, sandboxes: [fakeSandbox("web")] });
    try {
      const deadlineOf = async (env: NodeJS.ProcessEnv, ...flags: string[]): Promise<number | undefined> => {
        const result = await fsbWith(env, ...flags, "get", "web", "--url", controlPlane.url, "--data-dir", dataDir);
        assert.equal(result.code, 0, result.stderr);
        return controlPlane.deadlines.at(-1)?.timeoutMs;
      };
      assert.equal(await deadlineOf({}), 60_000);
      assert.equal(await deadlineOf({}, "--request-timeout", "5s"), 5000);
      assert.equal(await deadlineOf({ FSB_REQUEST_TIMEOUT: "2m" }), 120_000);
      assert.equal(await deadlineOf({ FSB_REQUEST_TIMEOUT: "2m" }, "--request-timeout", "1500ms"), 1500, "the flag over the environment");
      assert.equal(await deadlineOf({}, "--request-timeout", "0"), undefined, "no Connect-Timeout-Ms: no limit");
      const bad = await fsb("--request-timeout", "soon", "get", "web", "--url", controlPlane.url, "--data-dir", dataDir);
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(bad.stderr, /^error: --request-timeout: "soon" is not a duration/m);
    } finally {
      await controlPlane.close();
    }
  });

  it("exits 0 without a stack trace when the reader of its output goes away (fsb ls | head, fsb logs -f | grep -m1)", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, sandboxes: [fakeSandbox("web")] });
    try {
      for (const [args, reader] of [
        // `true` reads nothing and is gone before fsb writes: the write fails with EPIPE.
        [["ls"], "true"],
        // Reads the first line and goes; the next line fsb writes fails, and that ends the follow.
        [["logs", "-f", "web"], "head -n 1"],
      ] as const) {
        const command = [process.execPath, ...cliNodeArgs(["--url", controlPlane.url, "--data-dir", dataDir, ...args])].map((word) => `'${word}'`).join(" ");
        const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
          const env = { ...process.env };
          for (const name of ["FSB_URL", "FSB_TOKEN", "FSB_DATA_DIR", "FSB_DEBUG", "KUBECONFIG", "NODE_TEST_CONTEXT"]) delete env[name];
          const child = spawn("bash", ["-c", `${command} | ${reader}; exit "\${PIPESTATUS[0]}"`], { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
          let stdout = "";
          let stderr = "";
          child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
          child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
          child.on("error", reject);
          child.on("close", (code) => resolve({ code, stdout, stderr }));
        });
        assert.equal(result.code, 0, `fsb ${args.join(" ")} | ${reader}: ${result.stderr}`);
        assert.equal(result.stderr, "", `fsb ${args.join(" ")} | ${reader}`);
        assert.equal(result.stdout, reader === "true" ? "" : "line 1\n");
      }
    } finally {
      await controlPlane.close();
    }
  });

  it("logs --tail N asks for the last N lines (with -f too), and none without it; a tail that is no count of lines exits 2 asking nothing", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, sandboxes: [fakeSandbox("web")] });
    try {
      const target = ["--url", controlPlane.url, "--data-dir", dataDir];
      for (const [args, follow, tailLines] of [
        [["logs", "web", "--tail", "2"], false, 2],
        [["logs", "web", "--tail=0"], false, 0],
        [["logs", "web", "--tail", "0010"], false, 10],
        [["logs", "web"], false, undefined],
      ] as const) {
        const result = await fsb(...target, ...args);
        assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
        assert.equal(result.stdout, "line 1\n");
        const request = controlPlane.logsRequests.at(-1);
        assert.deepEqual({ follow: request?.follow, tailLines: request?.tailLines }, { follow, tailLines }, args.join(" "));
      }
      const asked = controlPlane.logsRequests.length;
      for (const tail of ["-1", "ten", "1.5", "2147483648"]) {
        const result = await fsb(...target, "logs", "web", `--tail=${tail}`);
        assert.equal(result.code, 2, `--tail=${tail}: ${result.stderr}`);
        assert.equal(result.stderr, `error: --tail: must be a whole number of lines ≥ 0 (at most 2147483647), got ${JSON.stringify(tail)}\n`);
      }
      const spaced = await fsb(...target, "logs", "web", "--tail", "-1");
      assert.equal(spaced.code, 2, spaced.stderr);
      assert.match(spaced.stderr, /--tail: must be a whole number of lines ≥ 0 .*got "-1"/);
      assert.equal(controlPlane.logsRequests.length, asked, "a refused --tail asks nothing");
      const help = await fsb("logs", "--help");
      assert.equal(help.code, 0, help.stderr);
      assert.match(
        help.stdout.replace(/\s+/g, " "),
        /--tail <lines> only the last <lines> lines of what the log keeps \(with -f, then what comes; 0: only that\); default: all/,
      );
    } finally {
      await controlPlane.close();
    }
  });

  it("logs -f --tail N follows after the last N lines, until Ctrl-C", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, sandboxes: [fakeSandbox("web")] });
    try {
      const child = spawn(process.execPath, cliNodeArgs(["--url", controlPlane.url, "--data-dir", dataDir, "logs", "-f", "--tail", "3", "web"]), {
        cwd: REPO_ROOT,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      child.stdout.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes("line 2\n")) child.kill("SIGINT");
      });
      const code = await new Promise((resolve) => child.on("close", resolve));
      assert.equal(code, 130);
      assert.deepEqual(
        controlPlane.logsRequests.map(({ follow, tailLines }) => ({ follow, tailLines })),
        [{ follow: true, tailLines: 3 }],
      );
    } finally {
      await controlPlane.close();
    }
  });

  it("exits 0 for --help", async () => {
    const result = await fsb("--help");
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /Usage: fsb/);
  });

  it("exits 1 with 'error:' on stderr when the control plane is unreachable", async () => {
    const result = await fsb("get", "x", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: /m);
    assert.equal(result.stdout, "");
  });

  it("sends this host's token only to its own Fast Sandbox: another host's --url (exit 2) or FSB_URL (exit 1) needs FSB_TOKEN", async () => {
    const elsewhere = await fsb("get", "x", "--url", "http://team-box.example:7070", "--data-dir", dataDir);
    assert.equal(elsewhere.code, 2, elsewhere.stderr);
    assert.match(elsewhere.stderr, /^error: --url: http:\/\/team-box\.example:7070 is neither this data directory's Fast Sandbox .* set FSB_TOKEN/m);
    const fromEnv = await fsbWith({ FSB_URL: "http://10.1.2.3:7070" }, "get", "x", "--data-dir", dataDir);
    assert.equal(fromEnv.code, 1, fromEnv.stderr);
    assert.match(fromEnv.stderr, /^error: FSB_URL: /m);
    // With FSB_TOKEN it is the caller's choice (the call then fails: nothing listens there).
    const given = await fsbWith({ FSB_TOKEN: "given-token-0123456789abcdef" }, "get", "x", "--url", "http://[::1]:1", "--data-dir", dataDir);
    assert.equal(given.code, 1, given.stderr);
  });

  it("exits 2 for 'fsb delete pool' without a name, and says how to delete a sandbox called pool", async () => {
    const result = await fsb("delete", "pool", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /name the pools to delete, e\.g\. fsb delete pool NAME \(a sandbox called pool: fsb rm pool\)/);
  });

  it("exits 2 for 'fsb get' with two words when the first is not a kind", async () => {
    const result = await fsb("get", "web", "extra", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /"web" is not a kind; allowed: sandbox, pool/);
  });

  it("reaches the control plane for every form of get, delete and pools (exit 1 when it is unreachable)", async () => {
    const forms = [
      ["get", "pool", "workers"],
      ["get", "sandbox", "web"],
      ["get", "pools"],
      ["pools", "-A", "-o", "json"],
      ["delete", "pool", "workers"],
      ["delete", "sandbox", "web"],
      ["delete", "web"],
    ];
    for (const args of forms) {
      const result = await fsb(...args, "--url", UNREACHABLE, "--data-dir", dataDir);
      assert.equal(result.code, 1, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, /^error: /m);
    }
  });

  it("exits 1 and says how to start Fast Sandbox when no URL is known", async () => {
    const result = await fsb("ls", "--data-dir", dataDir);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: Fast Sandbox is not running for data directory .*fsb up/m);
  });
});

describe("fsb against a Kubernetes cluster", () => {
  /** A kubeconfig whose API server does not answer (nothing listens on port 1). */
  const kubeconfig = join(dataDir, "kubeconfig");
  writeFileSync(
    kubeconfig,
    [
      "apiVersion: v1",
      "kind: Config",
      "current-context: dev",
      "clusters: [{name: dev, cluster: {server: 'https://127.0.0.1:1'}}]",
      "users: [{name: dev, user: {token: t}}]",
      "contexts: [{name: dev, context: {cluster: dev, user: dev}}, {name: prod, context: {cluster: dev, user: dev}}]",
    ].join("\n"),
  );

  it("exits 2 when a cluster and a data directory are both named", async () => {
    const result = await fsb("ls", "--context", "dev", "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^error: --data-dir: --context names a Kubernetes cluster and --data-dir an embedded Fast Sandbox; pass only one of them$/m);
  });

  it("exits 2 for a --kubeconfig that does not exist and for an unknown --context", async () => {
    const missing = await fsb("ls", "--kubeconfig", join(dataDir, "missing"));
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /^error: --kubeconfig: .*missing: no such file$/m);
    const unknown = await fsb("ls", "--kubeconfig", kubeconfig, "--context", "staging");
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.match(unknown.stderr, /^error: --context: no context "staging" in .*; it has: dev, prod$/m);
  });

  it("exits 1 naming the API server and context when the cluster does not answer", async () => {
    const result = await fsb("ls", "--kubeconfig", kubeconfig);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      /^error: cannot list EndpointSlices in namespace fast-sandbox-system: the Kubernetes API server https:\/\/127\.0\.0\.1:1 of context dev is unreachable/m,
    );
  });

  it("with --url and FSB_TOKEN in a cluster, says how to port-forward when the URL does not answer", async () => {
    const result = await fsbWith({ FSB_TOKEN: "test-token-0123456789abcdef" }, "ls", "--kubeconfig", kubeconfig, "--url", UNREACHABLE);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      /^error: .*ECONNREFUSED 127\.0\.0\.1:1.*; to reach the cluster's controller, run 'kubectl -n fast-sandbox-system port-forward svc\/fast-sandbox-controller 7070:7070' and pass --url http:\/\/127\.0\.0\.1:7070$/m,
    );
  });

  it("targets the cluster of KUBECONFIG when 'fsb up' does not run, and the running 'fsb up' when it does", async () => {
    const empty = mkdtempSync(join(tmpdir(), "fsb-main-spec-empty-"));
    const running = mkdtempSync(join(tmpdir(), "fsb-main-spec-running-"));
    try {
      writeFileSync(join(running, "url"), `${UNREACHABLE}\n`);
      writeFileSync(join(running, "token"), "test-token-0123456789abcdef\n");
      const cluster = await fsbWith({ KUBECONFIG: kubeconfig, FSB_DATA_DIR: empty }, "ls");
      assert.equal(cluster.code, 1, cluster.stderr);
      assert.match(cluster.stderr, /the Kubernetes API server https:\/\/127\.0\.0\.1:1 of context dev is unreachable/);
      const embedded = await fsbWith({ KUBECONFIG: kubeconfig, FSB_DATA_DIR: running }, "ls");
      assert.equal(embedded.code, 1, embedded.stderr);
      assert.doesNotMatch(embedded.stderr, /Kubernetes/);
      assert.match(embedded.stderr, /ECONNREFUSED 127\.0\.0\.1:1/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
      rmSync(running, { recursive: true, force: true });
    }
  });

  it("exits 2 for get NAME with -A: a name needs one namespace", async () => {
    const result = await fsb("get", "web", "-A", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /-A lists a kind in every namespace; a name needs one namespace/);
  });
});

describe("fsb checkpoint, run --from-checkpoint and fork: bad usage", () => {
  it("exits 2 for a restore given a command or an image of its own", async () => {
    const result = await fsb("run", "--from-checkpoint", "golden", "--url", UNREACHABLE, "--data-dir", dataDir, "--", "sh");
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /--from-checkpoint: a restored sandbox runs the checkpoint's processes, image and environment/);
  });

  it("exits 2 for a restore given a failure policy or a recovery timeout it would not apply", async () => {
    for (const flags of [
      ["--failure-policy", "AutoRecreate"],
      ["--recovery-timeout", "30s"],
    ]) {
      const result = await fsb("run", "--from-checkpoint", "golden", ...flags, "--url", UNREACHABLE, "--data-dir", dataDir);
      assert.equal(result.code, 2, `${flags.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, /leave out COMMAND, --image/);
    }
  });

  it("exits 2 for a fork without a number of copies, or with one that is not a number", async () => {
    const missing = await fsb("fork", "web", "--url", UNREACHABLE);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /-n, --count <copies>/);
    const bad = await fsb("fork", "web", "-n", "three", "--url", UNREACHABLE, "--data-dir", dataDir);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--count: "three" is not a number of copies/);
  });

  it("a restore sends the pool only when --pool is given (the checkpoint's pool, woken when scaled to zero)", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN });
    try {
      for (const [flags, pool] of [
        [["--pool", "gvisor"], "gvisor"],
        [[], ""],
      ] as const) {
        const result = await fsb("--url", controlPlane.url, "--data-dir", dataDir, "run", "--from-checkpoint", "golden", "-q", ...flags);
        assert.equal(result.code, 0, `${flags.join(" ")}: ${result.stderr}`);
        const request = controlPlane.creates.at(-1);
        assert.equal(request?.fromCheckpoint, "golden");
        assert.equal(request?.spec?.poolRef, pool, flags.join(" "));
      }
    } finally {
      await controlPlane.close();
    }
  });

  it("checkpoint ls and rm act in the --namespace given, before or after ls/rm, and refuse checkpoint's -n (a checkpoint name)", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN });
    try {
      for (const [args, call] of [
        [["checkpoint", "ls", "--namespace", "team"], "ListCheckpoints team"],
        [["checkpoint", "--namespace", "team", "ls"], "ListCheckpoints team"],
        [["checkpoint", "ls", "-A"], "ListCheckpoints *"],
        [["checkpoint", "ls"], "ListCheckpoints default"],
        [["checkpoint", "rm", "golden", "--namespace", "team"], "DeleteCheckpoint team/golden"],
        [["checkpoint", "--namespace", "team", "rm", "golden"], "DeleteCheckpoint team/golden"],
      ] as const) {
        controlPlane.calls.length = 0;
        const result = await fsb("--url", controlPlane.url, "--data-dir", dataDir, ...args);
        assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
        assert.deepEqual(controlPlane.calls, [call], args.join(" "));
      }
      controlPlane.calls.length = 0;
      for (const args of [
        ["checkpoint", "ls", "-n", "team"],
        ["checkpoint", "rm", "golden", "-n", "team"],
      ]) {
        const result = await fsb("--url", controlPlane.url, "--data-dir", dataDir, ...args);
        assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
        assert.match(
          result.stderr,
          /^error: -n\/--name names the checkpoint 'fsb checkpoint SANDBOX' saves; 'checkpoint (ls|rm)' takes the namespace as --namespace/m,
        );
      }
      assert.deepEqual(controlPlane.calls, [], "a refused command asks nothing");
    } finally {
      await controlPlane.close();
    }
  });

  it("takes -n/--namespace before the command as the namespace of checkpoint, fork, pause and resume too, whose own -n is another flag's; their --namespace wins", async () => {
    const controlPlane = await startFakeControlPlane({
      token: API_TOKEN,
      sandboxes: [fakeSandbox("web", { namespace: "team" }), fakeSandbox("web", { namespace: "other" })],
    });
    try {
      for (const [args, call] of [
        [["-n", "team", "pause", "web"], "PauseSandbox team/web"],
        [["--namespace=team", "resume", "web"], "ResumeSandbox team/web"],
        [["-n", "team", "pause", "web", "--namespace", "other"], "PauseSandbox other/web"],
        [["-n", "team", "checkpoint", "ls"], "ListCheckpoints team"],
        [["-n", "team", "checkpoint", "--namespace", "other", "rm", "golden"], "DeleteCheckpoint other/golden"],
        // Their -n stays the checkpoint's name and the number of copies (the fake answers neither call: exit 1).
        [["-n", "team", "checkpoint", "web", "-n", "golden"], "CheckpointSandbox team/web"],
        [["-n", "team", "fork", "web", "-n", "2"], "ForkSandbox team/web"],
      ] as const) {
        controlPlane.calls.length = 0;
        const result = await fsb("--url", controlPlane.url, "--data-dir", dataDir, ...args);
        assert.notEqual(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
        assert.deepEqual(controlPlane.calls, [call], args.join(" "));
      }
      const help = await fsb("--help");
      assert.match(help.stdout, /^ {2}-n, --namespace <namespace> +before the command: the namespace of the command/m);
    } finally {
      await controlPlane.close();
    }
  });

  it("says in the help of checkpoint, fork, pause and resume that their namespace is in a cluster the kubeconfig context's", async () => {
    for (const command of [["checkpoint"], ["checkpoint", "ls"], ["checkpoint", "rm"], ["fork"], ["pause"], ["resume"]]) {
      const help = await fsb(...command, "--help");
      assert.equal(help.code, 0, help.stderr);
      assert.match(
        help.stdout.replace(/\s+/g, " "),
        /--namespace <namespace> namespace \(default: in a cluster the kubeconfig context's, else default\)/,
        command.join(" "),
      );
    }
  });

  it("reaches the control plane for checkpoint, checkpoint ls and checkpoint rm", async () => {
    for (const args of [
      ["checkpoint", "web", "-n", "golden"],
      ["checkpoint", "ls"],
      ["checkpoint", "rm", "golden"],
    ]) {
      const result = await fsb(...args, "--url", UNREACHABLE, "--data-dir", dataDir);
      assert.equal(result.code, 1, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, /127\.0\.0\.1:1/);
    }
  });
});

describe("fsb up: the cgroup root of each data directory", () => {
  /**
   * Runs `fsb up` in the foreground for a new data directory whose settings cannot be written (a
   * directory is in their place): an `fsb up` that got past its checks and claims stops there
   * (exit 1, EISDIR), before anything touches containerd or a cgroup.
   */
  async function upStoppedBeforeStart(claims: string, env: NodeJS.ProcessEnv, ...args: string[]) {
    const upDir = mkdtempSync(join(dataDir, "up-"));
    mkdirSync(join(upDir, "settings.json"));
    return fsbWith(
      { FSB_NAMESPACE_CLAIMS_DIR: claims, FSB_CGROUP_ROOT: undefined, FSB_CONTAINERD_NAMESPACE: undefined, ...env },
      "up",
      "--data-dir",
      upDir,
      "--containerd-socket",
      join(upDir, "no-containerd.sock"),
      "--port",
      "0",
      "--proxy-port",
      "0",
      "--e2b-port",
      "0",
      "--no-janitor",
      ...args,
    );
  }

  it("is named after the containerd namespace, so one claimed by another data directory is refused (exit 1) unless --cgroup-root gives another", async () => {
    const claims = mkdtempSync(join(dataDir, "claims-"));
    // Another data directory runs in the default namespace under the cgroup root team-b.
    const owner = mkdtempSync(join(dataDir, "owner-"));
    writeFileSync(
      join(owner, "settings.json"),
      JSON.stringify({ containerdNamespace: "fast-sandbox", containerdSocket: "/run/containerd/containerd.sock", cgroupRoot: "team-b" }),
    );
    writeFileSync(join(claims, "cgroup-root:team-b"), `${owner}\n`);

    const refused = await upStoppedBeforeStart(claims, {}, "--containerd-namespace", "team-b");
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(
      refused.stderr,
      new RegExp(`^error: cgroup root /team-b belongs to the Fast Sandbox of data directory ${owner}: .*\\(--cgroup-root NAME or FSB_CGROUP_ROOT\\)`, "m"),
    );
    assert.equal(existsSync(join(claims, "team-b")), false, "the refused start keeps no claim of the containerd namespace");
    for (const [env, args] of [
      [{}, ["--cgroup-root", "team-b2"]],
      [{ FSB_CGROUP_ROOT: "team-b2" }, []],
      [{ FSB_CGROUP_ROOT: "" }, []],
      [{}, ["--cgroup-root", ""]],
    ] as const) {
      const given = await upStoppedBeforeStart(claims, env, "--containerd-namespace", "team-b", ...args);
      assert.equal(given.code, 1, given.stderr);
      assert.match(given.stderr, /^error: .*EISDIR.*settings\.json/m, `${JSON.stringify(env)} ${args.join(" ")}`);
    }
  });

  it("exits 2 for a containerd namespace that makes no cgroup root (a '.' in it) without --cgroup-root or FSB_CGROUP_ROOT", async () => {
    const claims = mkdtempSync(join(dataDir, "claims-"));
    const derived = await upStoppedBeforeStart(claims, {}, "--containerd-namespace", "k8s.io");
    assert.equal(derived.code, 2, derived.stderr);
    assert.match(
      derived.stderr,
      /^error: --cgroup-root: .*"k8s\.io" could name a cgroup's own file or a systemd unit: give one with --cgroup-root NAME \(or FSB_CGROUP_ROOT\)$/m,
    );
    const given = await upStoppedBeforeStart(claims, { FSB_CGROUP_ROOT: "k8s-io" }, "--containerd-namespace", "k8s.io");
    assert.equal(given.code, 1, given.stderr);
    assert.match(given.stderr, /^error: .*EISDIR.*settings\.json/m);
  });
});

describe("fsb: every name tried, empty and out-of-range values refused, what apply did", () => {
  const target = (controlPlane: { url: string }) => ["--url", controlPlane.url, "--data-dir", dataDir];

  it("ls of an empty namespace says how to create a sandbox there", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, sandboxes: [fakeSandbox("web")] });
    try {
      const team = await fsb(...target(controlPlane), "-n", "team", "ls");
      assert.equal(team.code, 0, team.stderr);
      assert.equal(team.stdout, "No sandboxes in namespace team. Create one with: npx fsb run -n team -- sh -c 'echo hello'\n");
      const all = await fsb(...target(controlPlane), "ls", "-A");
      assert.match(all.stdout, /^NAMESPACE +NAME/);
    } finally {
      await controlPlane.close();
    }
  });

  it("rm, delete and checkpoint rm try every name, report each one that fails, and exit 1 at the end", async () => {
    const controlPlane = await startFakeControlPlane({
      token: API_TOKEN,
      sandboxes: [fakeSandbox("web"), fakeSandbox("api")],
      pools: [fakePool("workers")],
      checkpoints: ["golden"],
    });
    try {
      for (const [args, stdout, stderr] of [
        [["rm", "nosuch", "web"], "sandbox web deleted\n", "error: sandbox nosuch not found\n"],
        [["delete", "api", "gone", "web"], "sandbox api deleted\n", "error: sandbox gone not found\nerror: sandbox web not found\n"],
        [["delete", "pool", "nosuch", "workers"], "pool workers deleted\n", "error: sandbox pool default/nosuch not found\n"],
        [["checkpoint", "rm", "nosuch", "golden"], "checkpoint golden deleted\n", "error: checkpoint nosuch not found\n"],
      ] as const) {
        const result = await fsb(...target(controlPlane), ...args);
        assert.equal(result.code, 1, `${args.join(" ")}: ${result.stderr}`);
        assert.equal(result.stdout, stdout, args.join(" "));
        assert.equal(result.stderr, stderr, args.join(" "));
      }
      assert.deepEqual([...controlPlane.sandboxes.keys()], [], "web and api were deleted all the same");
      assert.deepEqual([...controlPlane.pools.keys()], [], "and the pool workers");
    } finally {
      await controlPlane.close();
    }
  });

  it("exits 2 for an empty flag value or name, naming it, before anything is asked of the control plane", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, sandboxes: [fakeSandbox("web")] });
    try {
      for (const [args, said] of [
        [["run", "--name", "", "--", "true"], "error: --name: is empty: give a name, or leave the flag out\n"],
        [["run", "--image", "", "--", "true"], "error: --image: is empty: give an image, or leave the flag out\n"],
        [["run", "--expire=", "--", "true"], "error: --expire: is empty: give a duration, or leave the flag out\n"],
        [["run", "--pool", "", "--", "true"], "error: --pool: is empty: give a pool, or leave the flag out\n"],
        [["run", "--from-checkpoint", ""], "error: --from-checkpoint: is empty: give a checkpoint's name, or leave the flag out\n"],
        [["run", "-w", "", "--", "true"], "error: --workdir: is empty: give a directory, or leave the flag out\n"],
        [["run", "-p", "80", "-p", "", "--", "true"], "error: --port: is empty: give a port, or leave the flag out\n"],
        [["exec", "web", "-w", "", "--", "pwd"], "error: --workdir: is empty: give a directory, or leave the flag out\n"],
        [["ls", "--pool", ""], "error: --pool: is empty: give a pool, or leave the flag out\n"],
        [["logs", "web", "--tail="], "error: --tail: is empty: give a number of lines, or leave the flag out\n"],
        [["fork", "web", "-n", ""], "error: --count: is empty: give a number of copies\n"],
        [["--request-timeout", "", "ls"], "error: --request-timeout: is empty: give a duration, or leave the flag out\n"],
        [["rm", ""], "error: NAME: is empty: give names, none of them empty\n"],
        [["rm", "web", ""], "error: NAME: is empty: give names, none of them empty\n"],
        [["get", ""], "error: NAME: is empty: give a sandbox's name, or a kind: sandbox, pool\n"],
        [["get", "pool", ""], "error: NAME: is empty: give a name\n"],
        [["token", ""], "error: NAME: is empty: give a name\n"],
        [["pause", ""], "error: SANDBOX: is empty: give a sandbox's name\n"],
        [["cp", "", "web:/x"], "error: SRC: is empty: give LOCAL or NAME:PATH (- for stdin)\n"],
      ] as const) {
        const result = await fsb(...target(controlPlane), ...args);
        assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
        assert.equal(result.stderr, said, args.join(" "));
      }
      assert.deepEqual(controlPlane.calls, [], "a refused command asks nothing");
      // An empty argument of the command run is the command's own, not refused.
      const argument = await fsb(...target(controlPlane), "exec", "web", "--", "echo", "");
      assert.equal(argument.code, 0, argument.stderr);
      assert.equal(argument.stdout, "ran\n");
      // Without --, the command's flags are the command's: fsb's end at its first word (as docker exec's).
      const flags = await fsb(...target(controlPlane), "exec", "web", "-e", "B=2", "echo", "-e", "A=1", "hi");
      assert.equal(flags.code, 0, flags.stderr);
      const [, withFlags] = controlPlane.execRequests;
      assert.deepEqual(withFlags?.command, ["echo", "-e", "A=1", "hi"]);
      assert.deepEqual(
        withFlags?.envs.map((variable) => `${variable.name}=${variable.value}`),
        ["B=2"],
      );
    } finally {
      await controlPlane.close();
    }
  });

  it("exits 2 naming the flag for values the control plane would refuse: durations too long, CIDRs and ports out of range, copies, a relative -w, a port twice", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, sandboxes: [fakeSandbox("web")] });
    try {
      for (const [args, said] of [
        [
          ["run", "--expire", "100000000000000000000s", "--", "true"],
          /^error: --expire: "100000000000000000000s" is too long; allowed: 1s to 36500d \(100 years\)$/m,
        ],
        [["run", "--expire", "999999999h", "--", "true"], /^error: --expire: "999999999h" is too long; allowed: 1s to 36500d/m],
        [["run", "--from-checkpoint", "golden", "--expire", "36501d"], /^error: --expire: "36501d" is too long/m],
        [["resume", "web", "--expire", "999999999h"], /^error: --expire: "999999999h" is too long/m],
        [["run", "--recovery-timeout", "2d", "--", "true"], /^error: --recovery-timeout: "2d" is too long; allowed: 1s to 24h \(86400s\)$/m],
        [
          ["run", "--egress", "10.0.0.0/33", "--", "true"],
          /^error: --egress: "10\.0\.0\.0\/33" is not a valid CIDR: the prefix length must be a number from 0 to 32/m,
        ],
        [
          ["run", "--egress", "10.0.0.0/8:443,70000/tcp", "--", "true"],
          /^error: --egress: port 70000 of "10\.0\.0\.0\/8:443,70000\/tcp" is out of range; allowed: 1\.\.65535$/m,
        ],
        [["fork", "web", "-n", "33"], /^error: --count: "33" is not a number of copies; allowed: 1\.\.32$/m],
        [["fork", "web", "-n", "0"], /^error: --count: "0" is not a number of copies; allowed: 1\.\.32$/m],
        [["exec", "web", "-w", "rel", "--", "pwd"], /^error: --workdir: "rel" is not an absolute path; give one starting with \/, e\.g\. \/tmp$/m],
        [["run", "-w", "relative", "--", "true"], /^error: --workdir: "relative" is not an absolute path/m],
        [["run", "-p", "8080", "-p", "8080", "--", "true"], /^error: --port: 8080 is given twice; give each port once$/m],
      ] as const) {
        const result = await fsb(...target(controlPlane), ...args);
        assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
        assert.match(result.stderr, said, args.join(" "));
      }
      assert.deepEqual(controlPlane.calls, [], "a refused command asks nothing");
    } finally {
      await controlPlane.close();
    }
  });

  it("exec of a command that is not there exits 127, of one that cannot be run 126, as docker exec, saying only why", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, sandboxes: [fakeSandbox("web")] });
    try {
      const missing = await fsb(...target(controlPlane), "exec", "web", "--", "nosuchcmd");
      assert.equal(missing.code, 127, missing.stderr);
      assert.equal(missing.stderr, 'error: exec: "nosuchcmd": executable file not found in $PATH\n');
      const denied = await fsb(...target(controlPlane), "exec", "web", "--", "/etc/passwd");
      assert.equal(denied.code, 126, denied.stderr);
      assert.equal(denied.stderr, 'error: exec: "/etc/passwd": permission denied\n');
    } finally {
      await controlPlane.close();
    }
  });

  it("agents -o json and -o yaml print a List, as ls, pools and stats do", async () => {
    const controlPlane = await startFakeControlPlane({ token: API_TOKEN, pools: [fakePool("workers")] });
    try {
      const json = await fsb(...target(controlPlane), "agents", "-o", "json");
      assert.equal(json.code, 0, json.stderr);
      const list = JSON.parse(json.stdout) as { apiVersion: string; kind: string; items: { name: string; pool: string }[] };
      assert.deepEqual(
        { apiVersion: list.apiVersion, kind: list.kind, agents: list.items.map((agent) => `${agent.pool}/${agent.name}`) },
        { apiVersion: "v1", kind: "List", agents: ["workers/workers-0"] },
      );
      const yaml = await fsb(...target(controlPlane), "agents", "-o", "yaml");
      assert.equal(yaml.code, 0, yaml.stderr);
      assert.match(yaml.stdout, /^apiVersion: v1\nkind: List\nitems:\n {2}- name: workers-0\n/);
    } finally {
      await controlPlane.close();
    }
  });
});
