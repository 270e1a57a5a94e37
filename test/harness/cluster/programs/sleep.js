// Test program for the fake kubelet: does nothing until SIGTERM (exit 0).
// With IGNORE_SIGTERM=1 it ignores SIGTERM, to exercise the SIGKILL after the grace period.
console.log(`sleep: pid ${process.pid} on ${process.env.POD_IP}`);
process.on("SIGTERM", () => {
  if (process.env.IGNORE_SIGTERM === "1") return console.log("sleep: ignoring SIGTERM");
  console.log("sleep: SIGTERM");
  process.exit(0);
});
setInterval(() => {}, 1 << 30);
