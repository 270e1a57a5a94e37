// Type-aware linting: unawaited promises are the classic bug of async infrastructure code.
import tseslint from "typescript-eslint";

export default tseslint.config(
  {
    ignores: ["**/dist/**", "**/gen/**", "node_modules/**", "**/*.js", "**/*.cjs", "test/harness/cluster/programs/**"],
  },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        // One program over sources, specs, tests, benchmarks and scripts (tsconfig.lint.json).
        project: "./tsconfig.lint.json",
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
      "@typescript-eslint/switch-exhaustiveness-check": ["error", { considerDefaultExhaustiveForUnions: true }],
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    // The agent, the janitor and the SDK validate no resource: the API's main entry would load
    // TypeBox and the schemas into every agent, janitor and SDK user's process (~10 MiB;
    // docs/PERFORMANCE.md, "Footprint at scale"). Specs may use it.
    files: ["packages/agent/src/**/*.ts", "packages/janitor/src/**/*.ts", "packages/sdk/src/**/*.ts"],
    ignores: ["**/*.spec.ts", "**/*.fixture.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          paths: [
            {
              name: "@fast-sandbox/api",
              message: "import from @fast-sandbox/api/core: the agent, the janitor and the SDK must not load the resource schemas (TypeBox)",
            },
          ],
        },
      ],
    },
  },
  {
    // node:test's describe/it return promises the runner itself awaits; tests build malformed and
    // untyped input on purpose (and the cluster harness reads raw Kubernetes JSON). Fixtures are
    // test code shared by specs.
    files: ["**/*.spec.ts", "**/*.fixture.ts", "test/**/*.ts"],
    rules: {
      "@typescript-eslint/no-floating-promises": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-return": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/unbound-method": "off",
      "@typescript-eslint/no-base-to-string": "off",
    },
  },
);
