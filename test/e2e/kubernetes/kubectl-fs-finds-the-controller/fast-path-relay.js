// Stand-in for a controller Pod (run by the fake kubelet): relays TCP connections on $POD_IP:7070 to
// $FSB_UPSTREAM (host:port), the fast-path API of the control plane the test runs in-process.
import net from "node:net";

const [upstreamHost, upstreamPort] = (process.env.FSB_UPSTREAM ?? "").split(":");
if (!upstreamHost || !upstreamPort) {
  console.error("FSB_UPSTREAM=host:port is required");
  process.exit(2);
}
const host = process.env.POD_IP || "127.0.0.1";
const connections = new Set();
const server = net.createServer((client) => {
  const upstream = net.connect({ host: upstreamHost, port: Number(upstreamPort) });
  connections.add(client).add(upstream);
  const close = () => {
    client.destroy();
    upstream.destroy();
    connections.delete(client);
    connections.delete(upstream);
  };
  client.on("error", close).on("close", close);
  upstream.on("error", close).on("close", close);
  client.pipe(upstream).pipe(client);
});
server.listen(7070, host, () => console.log(`fast-path relay on ${host}:7070 to ${upstreamHost}:${upstreamPort}`));
process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
  for (const socket of connections) socket.destroy();
});
