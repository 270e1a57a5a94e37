import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PROTOCOLS, formatTransportBench, runTransportBench } from "./transport.js";

describe("bench transport", () => {
  it("measures every protocol against its own server process, both passes, and says so in its RESULT line", async () => {
    const logged: string[] = [];
    const result = await runTransportBench({ count: 5, warmup: 2, gapMs: 1, log: (message) => logged.push(message) });
    for (const protocol of PROTOCOLS) {
      for (const pass of [result.backToBack, result.withGap]) {
        assert.equal(pass[protocol].count, 5, protocol);
        assert.ok(pass[protocol].min > 0 && pass[protocol].p50 >= pass[protocol].min, `${protocol}: ${JSON.stringify(pass[protocol])}`);
      }
    }
    assert.equal(logged.length, 3);
    const lines = formatTransportBench(result);
    const resultLine = lines.at(-1) ?? "";
    assert.match(
      resultLine,
      /^RESULT tcp_p50_ms=\d+\.\d{3} http2_p50_ms=\d+\.\d{3} connect_h2_p50_ms=\d+\.\d{3} connect_h1_p50_ms=\d+\.\d{3} connect_h2_vs_tcp=\d+\.\d$/,
    );
    assert.ok(resultLine.includes(`tcp_p50_ms=${result.withGap.tcp.p50.toFixed(3)}`));
    assert.equal(lines.length, 2 + PROTOCOLS.length + 1);
  });
});
