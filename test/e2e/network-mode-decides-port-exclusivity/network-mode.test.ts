/**
 * A pool's network mode decides whether exposed ports are exclusive: on a Shared network every
 * sandbox of an agent listens on the agent's address, so a second sandbox exposing a taken port is
 * refused (the scheduler says which port, the agent would refuse it too); on an Isolated network each
 * sandbox has an address of its own, so two sandboxes on one agent expose the same port.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { NoCapacityError } from "@fast-sandbox/sdk";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";
import { portsHeld, slotsHeld } from "../../support/pool-agents.js";

describe("a pool's network mode decides whether exposed ports are exclusive", () => {
  let embedded: EmbeddedCase;
  const oneAgent = { maxSandboxesPerPod: 3, capacity: { poolMin: 1, poolMax: 1 } };
  const sleeper = { image: BASE_IMAGE, command: ["sleep", "3600"] };

  before(async () => {
    embedded = await startEmbedded({ name: "network-mode", pools: [pool("shared", { ...oneAgent, network: { mode: "Shared" } })] });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("Shared: a second sandbox exposing a taken port is refused at once, naming the port; another port fits", async () => {
    const { client } = embedded;
    const first = await client.sandboxes.create({ name: "first", pool: "shared", ...sleeper, exposedPorts: [18600] });
    assert.equal(first.status?.phase, "Running");
    assert.equal(first.status?.sandboxIP, undefined, "a Shared sandbox has no address of its own");
    await assert.rejects(client.sandboxes.create({ name: "second", pool: "shared", ...sleeper, exposedPorts: [18600] }), (error: Error) => {
      assert.ok(error instanceof NoCapacityError, `expected NoCapacityError, got ${error.constructor.name}: ${error.message}`);
      assert.match(error.message, /port 18600/);
      return true;
    });
    const other = await client.sandboxes.create({ name: "other", pool: "shared", ...sleeper, exposedPorts: [18601] });
    assert.equal(other.status?.phase, "Running");
    assert.deepEqual((await portsHeld(client, { pool: "shared" })).sort(), [18600, 18601]);
    assert.equal(await slotsHeld(client, "shared"), 2);

    for (const name of ["first", "other"]) await client.sandboxes.delete(name);
    assert.deepEqual(await portsHeld(client, { pool: "shared" }), []);
    assert.deepEqual(containerdLeftovers(embedded.containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });

  it("Isolated: two sandboxes of one agent expose the same port, each at its own address, both reached through the proxy", async () => {
    const { client } = embedded;
    await client.pools.apply(pool("isolated", { ...oneAgent, network: { mode: "Isolated" } }));
    await waitFor(async () => (await client.pools.agents({ pool: "isolated" })).some((agent) => agent.ready), 60_000, "the isolated pool's agent");
    // Each serves a page naming itself on the same port.
    const server = (name: string) => ["sh", "-c", `mkdir -p /www && echo ${name} > /www/index.html && exec httpd -f -p 18600 -h /www`];
    const created = [];
    for (const name of ["left", "right"]) {
      created.push(await client.sandboxes.create({ name, pool: "isolated", image: BASE_IMAGE, command: server(name), exposedPorts: [18600] }));
    }
    const [left, right] = created;
    assert.ok(left?.status?.sandboxIP && right?.status?.sandboxIP, "each Isolated sandbox has an address of its own");
    assert.notEqual(left.status.sandboxIP, right.status.sandboxIP);
    assert.deepEqual(await portsHeld(client, { pool: "isolated" }), [], "an Isolated sandbox holds no port of its agent");
    assert.equal(await slotsHeld(client, "isolated"), 2);

    const proxyPort = Number(new URL(embedded.controlPlane.proxyUrl).port);
    for (const sandbox of created) {
      let page = "";
      await waitFor(
        async () => {
          const answer = await fetch(`http://127.0.0.1:${proxyPort}/index.html`, {
            headers: { "X-Access-Token": sandbox.accessToken, "E2b-Sandbox-Id": sandbox.status?.sandboxID ?? "", "E2b-Sandbox-Port": "18600" },
          });
          page = await answer.text();
          return answer.status === 200;
        },
        30_000,
        `${sandbox.metadata.name}'s server through the proxy`,
      );
      assert.equal(page, `${sandbox.metadata.name}\n`);
    }

    for (const sandbox of created) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
    assert.equal(await slotsHeld(client, "isolated"), 0);
    await client.pools.delete("isolated");
    assert.deepEqual(
      containerdLeftovers(embedded.containerdNamespace).containers.filter((id) => !id.startsWith("fsb-anchor.")),
      [],
    );
  });
});
