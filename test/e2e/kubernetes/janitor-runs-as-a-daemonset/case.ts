/**
 * The janitor runs as config/janitor's DaemonSet: one Pod on the node, Ready (its /readyz answers
 * once a pass has read the inventory — this node's agent Pods and the Sandboxes, through the API
 * server with its ServiceAccount's token — and containerd), and its Prometheus metrics answer on
 * the Pod's IP with the passes it completed. Run by ../suite.test.ts on the suite's cluster.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { janitorUrl } from "../../../support/kubernetes-cases.js";
import { JANITOR_SELECTOR, SYSTEM_NAMESPACE, isPodReady, type KubernetesSuiteContext } from "../../../support/kubernetes-suite.js";

interface DaemonSetStatus {
  desiredNumberScheduled?: number;
  numberReady?: number;
}

/** The value of a counter series, e.g. `fsb_janitor_passes_total{outcome="completed"}`; undefined when absent. */
function sample(metrics: string, series: string): number | undefined {
  const line = metrics.split("\n").find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

export function registerCase(suite: KubernetesSuiteContext): void {
  describe("janitor runs as a DaemonSet", () => {
    it("has one Ready Pod on the node, running the janitor's code with its ServiceAccount", async () => {
      const status = JSON.parse(
        await suite.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "daemonset/fast-sandbox-janitor", "-o", "jsonpath={.status}"),
      ) as DaemonSetStatus;
      assert.equal(status.desiredNumberScheduled, 1);
      assert.equal(status.numberReady, 1);
      const items = await suite.pods(SYSTEM_NAMESPACE, JANITOR_SELECTOR, { includeDeleting: true });
      assert.equal(items.length, 1);
      const [pod] = items;
      assert.equal(pod!.spec.nodeName, suite.nodeName);
      assert.ok(isPodReady(pod!));
      // The janitor's own start line (packages/janitor/src/main.ts).
      assert.match(suite.podLog(SYSTEM_NAMESPACE, pod!.metadata.name, "janitor"), /"event":"started"/);
    });

    it("serves its metrics on the Pod's IP, with completed passes over the API inventory", async () => {
      const janitor = await janitorUrl(suite);
      const metrics = await suite.eventually("a completed janitor pass in /metrics", async () => {
        const response = await fetch(`${janitor}/metrics`);
        assert.equal(response.status, 200);
        const text = await response.text();
        return (sample(text, 'fsb_janitor_passes_total{outcome="completed"}') ?? 0) > 0 ? text : undefined;
      });
      assert.notEqual(sample(metrics, 'fsb_janitor_orphans_reclaimed_total{reason="agent_gone"}'), undefined, "the janitor's reclaim counters are served");
      // Ready: the last pass read the inventory and containerd.
      const ready = await fetch(`${janitor}/readyz`);
      assert.equal(ready.status, 200, await ready.text());
    });
  });
}
