/**
 * `kubectl fs` against a cluster, end to end: the CLI from source run as the kubectl plugin, a fake
 * Kubernetes API server (fake-kube-api.fixture.ts) whose EndpointSlice names a fake control plane.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fakeSandbox, startFakeControlPlane, type FakeControlPlane } from "./fake-control-plane.fixture.js";
import { runCli, startFakeKubeApi, writeKubeconfig, type FakeKubeApi } from "./fake-kube-api.fixture.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-kubectl-fs-spec-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const TOKEN = "api-token-0123456789abcdef";
const kubectlFs = (env: NodeJS.ProcessEnv, ...args: string[]) => runCli("kubectl-fs", dir, env, args);

describe("kubectl fs against a cluster", () => {
  let controlPlane: FakeControlPlane;
  let api: FakeKubeApi;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    controlPlane = await startFakeControlPlane({
      token: TOKEN,
      sandboxes: [fakeSandbox("web", { namespace: "team" }), fakeSandbox("web", { namespace: "ctx" })],
    });
    api = await startFakeKubeApi({ controllers: [{ address: "127.0.0.1", port: Number(new URL(controlPlane.url).port) }], token: TOKEN });
    env = { KUBECONFIG: writeKubeconfig(join(dir, "kubeconfig"), api.url, { namespace: "ctx" }) };
  });
  after(async () => {
    await api.close();
    await controlPlane.close();
  });

  it("takes -n/--namespace before the command too (kubectl fs -n team ls); a command's own -n wins", async () => {
    for (const [args, call] of [
      [["ls"], "ListSandboxes ctx"],
      [["-n", "team", "ls"], "ListSandboxes team"],
      [["--namespace=team", "ls"], "ListSandboxes team"],
      [["--namespace", "team", "--request-timeout", "30s", "ls"], "ListSandboxes team"],
      [["-nteam", "ls"], "ListSandboxes team"],
      [["-n", "team", "get", "web", "-n", "ctx"], "GetSandbox ctx/web"],
    ] as const) {
      controlPlane.calls.length = 0;
      const result = await kubectlFs(env, ...args);
      assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
      assert.deepEqual(controlPlane.calls, [call], args.join(" "));
    }
  });

  it("names the commands its messages suggest as kubectl fs commands", async () => {
    const result = await kubectlFs(env, "cp", "web:/etc/hostname", join(dir, "hostname"));
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /no access token for sandbox ctx\/web: .* run 'kubectl fs token web' to make a new one/);
    assert.doesNotMatch(result.stderr, /'fsb /);
  });

  it("exits 2 for a flag it cannot use, before it reads anything of the cluster", async () => {
    api.requests.length = 0;
    for (const [args, said] of [
      [["ls", "--request-timeout", "abc"], /^error: --request-timeout: "abc" is not a duration/m],
      [["ls", "--url", "notaurl"], /^error: --url: "notaurl" is not a URL/m],
      [["ls", "--url", "http://127.0.0.1:99999"], /^error: --url: "http:\/\/127\.0\.0\.1:99999" is not a URL \(with a valid port, if any\)/m],
      [["ls", "--url", "ftp://127.0.0.1:7070"], /^error: --url: "ftp:\/\/127\.0\.0\.1:7070" is not an http:\/\/ or https:\/\/ URL/m],
      [["ls", "--fsb-namespace", ""], /^error: --fsb-namespace: is empty: give a namespace/m],
      [["ls", "-n", ""], /^error: --namespace: is empty: give a namespace/m],
      [["-n", "", "ls"], /^error: --namespace: is empty: give a namespace/m],
      [["ls", "-n", "Team_A"], /^error: --namespace: "Team_A" is not a namespace/m],
    ] as const) {
      const result = await kubectlFs(env, ...args);
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, said, args.join(" "));
    }
    assert.deepEqual(api.requests, [], "nothing was read of the cluster");
    assert.deepEqual(controlPlane.calls.slice(-1), ["GetSandbox ctx/web"], "nor asked of the controller");
  });

  it("does not send the cluster's token to another host that FSB_URL (not --url) names; with one on this host, says that FSB_URL replaces the discovery", async () => {
    api.requests.length = 0;
    const elsewhere = await kubectlFs({ ...env, FSB_URL: "http://10.1.2.3:7070" }, "ls");
    assert.equal(elsewhere.code, 1, elsewhere.stderr);
    assert.match(
      elsewhere.stderr,
      /^error: FSB_URL: http:\/\/10\.1\.2\.3:7070 is not on this host, and the cluster's API token \(Secret fast-sandbox-system\/fast-sandbox-api-token\) is not sent there unasked: pass it as --url/m,
    );
    assert.deepEqual(api.requests, [], "the Secret was not read");
    controlPlane.calls.length = 0;
    const here = await kubectlFs({ ...env, FSB_URL: controlPlane.url }, "ls");
    assert.equal(here.code, 0, here.stderr);
    assert.equal(here.stderr, `warning: FSB_URL=${controlPlane.url} is used instead of finding the controller in the cluster; unset FSB_URL to find it\n`);
    assert.deepEqual(controlPlane.calls, ["ListSandboxes ctx"]);
  });

  it("runs the kubeconfig's credential plugin once per command, and shows what it says on stderr", async () => {
    const runs = join(dir, "plugin-runs");
    const plugin = join(dir, "plugin.sh");
    writeFileSync(
      plugin,
      [
        "#!/bin/sh",
        `echo run >> '${runs}'`,
        "echo 'To sign in, open https://login.example/device and enter the code ABCD-EFGH' >&2",
        "sleep 0.2",
        `echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"plugin-token"}}'`,
      ].join("\n"),
      { mode: 0o755 },
    );
    const kubeconfig = writeKubeconfig(join(dir, "kubeconfig-plugin"), api.url, {
      user: `{exec: {apiVersion: client.authentication.k8s.io/v1, command: '${plugin}', interactiveMode: IfAvailable}}`,
    });
    api.requests.length = 0;
    const result = await kubectlFs({ KUBECONFIG: kubeconfig }, "ls");
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, "To sign in, open https://login.example/device and enter the code ABCD-EFGH\n");
    assert.equal(existsSync(runs) ? readFileSync(runs, "utf8") : "", "run\n");
    assert.equal(api.requests.length, 2);
    for (const request of api.requests) assert.match(request, / auth=Bearer plugin-token$/);
  });

  it("says that the controller went away when its connection ends during logs -f, not that the call was cancelled", async () => {
    const own = await startFakeControlPlane({ token: TOKEN, sandboxes: [fakeSandbox("web")] });
    const ownApi = await startFakeKubeApi({ controllers: [{ address: "127.0.0.1", port: Number(new URL(own.url).port) }], token: TOKEN });
    try {
      const kubeconfig = writeKubeconfig(join(dir, "kubeconfig-logs"), ownApi.url);
      const running = runCli("kubectl-fs", dir, { KUBECONFIG: kubeconfig }, ["logs", "-f", "web"]);
      const deadline = Date.now() + 15_000;
      while (own.logsRequests.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      await new Promise((resolve) => setTimeout(resolve, 200));
      await own.close();
      const result = await running;
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stdout, /^line 1$/m);
      assert.match(
        result.stderr,
        /^error: Logs web: the controller at 127\.0\.0\.1:\d+ \(Pod controller-0\) went away \(.*\); it may have restarted or been replaced: run the command again$/m,
      );
      assert.doesNotMatch(result.stderr, /cancelled/);
    } finally {
      await ownApi.close();
    }
  });
});

describe("kubectl fs against an API server that does not answer", () => {
  it("gives up after --request-timeout, naming the API server and what it read", async () => {
    const api = await startFakeKubeApi({ hang: true });
    try {
      const result = await kubectlFs({ KUBECONFIG: writeKubeconfig(join(dir, "kubeconfig-hang"), api.url) }, "ls", "--request-timeout", "1s");
      assert.equal(result.signal, null, "still running after 20 s");
      assert.equal(result.code, 1, result.stderr);
      assert.equal(
        result.stderr,
        `error: cannot list EndpointSlices in namespace fast-sandbox-system: the Kubernetes API server ${api.url} of context dev did not answer within 1s ` +
          "(--request-timeout); pass a larger --request-timeout (or FSB_REQUEST_TIMEOUT), or 0 for no limit\n",
      );
    } finally {
      await api.close();
    }
  });
});
