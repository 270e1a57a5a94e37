// Test program for the fake kubelet: an HTTP server on $POD_IP:$PORT (default 8080)
// that answers with who it is. GET /healthz -> 200. Stops cleanly on SIGTERM.
import http from "node:http";

const host = process.env.POD_IP || "127.0.0.1";
const port = Number(process.env.PORT || 8080);
const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok\n");
    return;
  }
  res.writeHead(200, { "content-type": "application/json" });
  res.end(
    JSON.stringify({
      pod: process.env.POD_NAME,
      namespace: process.env.POD_NAMESPACE,
      ip: host,
      node: process.env.NODE_NAME,
      pid: process.pid,
      message: process.env.MESSAGE ?? null,
      argv: process.argv.slice(2),
    }) + "\n",
  );
});
server.listen(port, host, () => console.log(`echo-server listening on ${host}:${port}`));
process.on("SIGTERM", () => {
  console.log("echo-server: SIGTERM, closing");
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
