// Test program for the fake kubelet: exits with the code given as first argument.
const code = Number(process.argv[2] ?? 0);
console.log(`exit: exiting with ${code}`);
process.exit(code);
