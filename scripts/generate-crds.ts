import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { renderCrds } from "@fast-sandbox/api";

const dir = join(import.meta.dirname, "..", "config", "crd");
mkdirSync(dir, { recursive: true });
for (const file of readdirSync(dir)) if (file.endsWith(".yaml")) rmSync(join(dir, file));
for (const [file, yaml] of Object.entries(renderCrds())) writeFileSync(join(dir, file), yaml);
