/**
 * Sizes as the CLI writes them: transfers and files in decimal units, as registries and
 * `docker pull` do (`formatBytes`), and memory as Kubernetes quantities, as `kubectl top` does
 * (`formatQuantityBytes`).
 */

/** 1234567 → "1.2 MB" (decimal units, like registries and docker pull). */
export function formatBytes(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** Bytes as a Kubernetes quantity in binary units, as kubectl top writes memory: `512Ki`, `64Mi`, `1.5Gi`. */
export function formatQuantityBytes(bytes: number): string {
  const units = ["", "Ki", "Mi", "Gi", "Ti"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 || value >= 10 ? Math.round(value) : Math.round(value * 10) / 10}${units[unit]}`;
}
