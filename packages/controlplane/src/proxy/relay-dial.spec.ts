import assert from "node:assert/strict";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { TCP_KEEPALIVE_DELAY_MS, dialThroughRelay } from "./relay-dial.js";

describe("dialThroughRelay", () => {
  // A relay that opens every tunnel it is asked for, and then echoes what the tunnel carries.
  const relay = net.createServer((socket) => {
    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString();
      if (!head.includes("\r\n\r\n")) return;
      socket.off("data", onData);
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      socket.pipe(socket);
    };
    socket.on("data", onData);
    socket.on("error", () => undefined);
  });
  let endpoint: string;

  before(async () => {
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
    endpoint = `127.0.0.1:${(relay.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise((resolve) => relay.close(resolve));
  });

  it("probes the tunnel once idle (TCP keep-alive): a relay that went without a FIN or RST is found dead", { timeout: 10_000 }, async () => {
    const probed: { socket: net.Socket; enable: boolean | undefined; delay: number | undefined }[] = [];
    const original = net.Socket.prototype.setKeepAlive;
    net.Socket.prototype.setKeepAlive = function (this: net.Socket, enable?: boolean, delay?: number) {
      probed.push({ socket: this, enable, delay });
      return original.call(this, enable, delay);
    };
    let tunnel: net.Socket;
    try {
      tunnel = await dialThroughRelay(endpoint, "the-agent-token", "10.0.0.2", 8080);
    } finally {
      net.Socket.prototype.setKeepAlive = original;
    }
    assert.deepEqual(
      probed.filter((call) => call.socket === tunnel).map(({ enable, delay }) => ({ enable, delay })),
      [{ enable: true, delay: TCP_KEEPALIVE_DELAY_MS }],
    );
    assert.equal(TCP_KEEPALIVE_DELAY_MS, 60_000);
    const echoed = new Promise<string>((resolve) => tunnel.once("data", (chunk: Buffer) => resolve(chunk.toString())));
    tunnel.write("still a tunnel");
    assert.equal(await echoed, "still a tunnel");
    tunnel.destroy();
  });
});
