/**
 * Ingress on Kubernetes: the sandbox proxy Deployment of config/default (the controller image in its
 * `proxy` role) serves an HTTP server inside an Isolated sandbox — whose address is on the bridge in
 * its agent's network — through the relay of that agent (an authenticated CONNECT on the agent's
 * port), on every proxy replica; the agent's metrics count the tunnels. A wrong access token gets
 * 401, an unknown sandbox 502 with E2B's body, a port the sandbox does not expose 403. Run by
 * ../suite.test.ts on the suite's cluster, with the pool in pool.yaml.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FastSandboxClient, type CreatedSandbox } from "@fast-sandbox/sdk";
import { BASE_IMAGE } from "../../../support/containerd.js";
import { agentPods, removePool, waitForReadyAgents, waitForReadyControllers } from "../../../support/kubernetes-cases.js";
import { SYSTEM_NAMESPACE, isPodReady, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const POOL = "ingress";
const PORT = 8080;
const PROXY_PORT = 7072;
const AGENT_PORT = 7071;
const PROXY_SELECTOR = "app.kubernetes.io/component=proxy";
/** Serves a page naming the sandbox's hostname on PORT. */
const SERVER = `mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p ${PORT} -h /www`;

interface Answer {
  status: number;
  body: string;
}

async function get(proxyIP: string, headers: Record<string, string>): Promise<Answer> {
  const response = await fetch(`http://${proxyIP}:${PROXY_PORT}/index.html`, { headers, signal: AbortSignal.timeout(10_000) });
  return { status: response.status, body: await response.text() };
}

/** fsb_agent_relay_tunnels_total{result="opened"} of an agent (its /metrics, no token). */
async function relayTunnelsOpened(agentIP: string): Promise<number> {
  const text = await (await fetch(`http://${agentIP}:${AGENT_PORT}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const line = text.split("\n").find((candidate) => candidate.startsWith('fsb_agent_relay_tunnels_total{result="opened"}'));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("ingress through the proxy Deployment", () => {
    let namespace = "";
    let client: FastSandboxClient | undefined;
    let sandbox: CreatedSandbox | undefined;
    let proxyIPs: string[] = [];
    let agentIP = "";

    before(
      async () => {
        namespace = await suite.createNamespace("ingress");
        await suite.kubectlOk("-n", namespace, "apply", "-f", path.join(HERE, "pool.yaml"));
        const [replica] = await waitForReadyControllers(suite);
        client = new FastSandboxClient({ url: replica!.url, token: suite.apiToken });
        await waitForReadyAgents(suite, namespace, POOL, 1);
        const [agent] = await agentPods(suite, namespace, POOL);
        agentIP = agent!.status!.podIP!;
        const proxies = await suite.eventually(
          "the proxy Deployment's two Pods to be Ready",
          async () => {
            const pods = await suite.pods(SYSTEM_NAMESPACE, PROXY_SELECTOR);
            return pods.length === 2 && pods.every(isPodReady) ? pods : undefined;
          },
          { timeoutMs: 120_000 },
        );
        proxyIPs = proxies.map((pod) => pod.status!.podIP!);
        sandbox = await client.sandboxes.create({ namespace, name: "web", pool: POOL, image: BASE_IMAGE, command: ["sh", "-c", SERVER], exposedPorts: [PORT] });
      },
      { timeout: 240_000 },
    );

    after(
      async () => {
        client?.close();
        if (namespace) await removePool(suite, namespace, POOL);
      },
      { timeout: 300_000 },
    );

    it("places an Isolated sandbox: its own address, not its agent's", () => {
      assert.equal(sandbox?.status?.phase, "Running");
      assert.ok(sandbox?.status?.sandboxIP, "an Isolated sandbox has status.sandboxIP");
      assert.notEqual(sandbox.status.sandboxIP, agentIP);
      assert.ok(sandbox.accessToken, "the create answers with the access token");
    });

    it("serves the sandbox's HTTP server through every proxy replica, by the agent's relay", { timeout: 120_000 }, async () => {
      const headers = { "e2b-sandbox-id": sandbox!.status!.sandboxID!, "e2b-sandbox-port": String(PORT), "x-access-token": sandbox!.accessToken };
      const before = await relayTunnelsOpened(agentIP);
      for (const proxyIP of proxyIPs) {
        // The server starts with the sandbox; the first request may come before it listens.
        const answer = await suite.eventually(`the sandbox's page through the proxy at ${proxyIP}`, async () => {
          const got = await get(proxyIP, headers);
          return got.status === 200 ? got : undefined;
        });
        assert.match(answer.body, /^hello from /);
      }
      assert.ok((await relayTunnelsOpened(agentIP)) >= before + proxyIPs.length, "each proxy replica opened a tunnel through the agent's relay");
    });

    it("refuses a wrong token (401), an unknown sandbox (502, E2B's body) and a port not exposed (403)", { timeout: 60_000 }, async () => {
      const id = sandbox!.status!.sandboxID!;
      const proxyIP = proxyIPs[0]!;
      const wrong = await get(proxyIP, { "e2b-sandbox-id": id, "e2b-sandbox-port": String(PORT), "x-access-token": "not-the-token" });
      assert.equal(wrong.status, 401, wrong.body);
      const unknown = await get(proxyIP, { "e2b-sandbox-id": "zzzzzzzzzzzzzzzzzzzz", "e2b-sandbox-port": String(PORT), "x-access-token": "x" });
      assert.equal(unknown.status, 502);
      assert.deepEqual(JSON.parse(unknown.body), { sandboxId: "zzzzzzzzzzzzzzzzzzzz", message: "The sandbox was not found", code: 502 });
      const closed = await get(proxyIP, { "e2b-sandbox-id": id, "e2b-sandbox-port": "9999", "x-access-token": sandbox!.accessToken });
      assert.equal(closed.status, 403, closed.body);
    });
  });
}
