/**
 * The string formats of the schemas (`format: date-time`, `format: cidr`), which the embedded
 * validation checks strictly (validation.ts) while the API server's own checks of the same names
 * are lenient: `date-time` takes `2030-01-01t00:00:00z`, `cidr` takes `10.0.0.1/8`. A spec that the
 * API server accepts and the control plane then refuses would block every write of the object (its
 * finalizers, its status). So the CRDs carry the strict rules too, as the keywords below.
 */

/** RFC 3339 as the API takes it: upper-case `T` and `Z`, an offset or `Z`, fractions of a second allowed. */
export const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/** The longest CIDR written plainly (`ffff:…:ffff/128` is 43); bounds the CEL rule's cost. */
const CIDR_MAX_LENGTH = 64;

/** What a CRD schema adds to a string of `format` so that the API server checks it as strictly. */
export function crdFormatKeywords(format: string): Record<string, unknown> {
  switch (format) {
    case "date-time":
      return { pattern: RFC3339.source };
    case "cidr":
      return {
        maxLength: CIDR_MAX_LENGTH,
        // Kubernetes' CEL network library (1.31+): a network's own address, no bits after the prefix.
        "x-kubernetes-validations": [
          {
            rule: "isCIDR(self) && cidr(self).masked() == cidr(self)",
            message: "must be a network (its own address and a prefix, no bits set after the prefix), e.g. 10.0.0.0/8, 203.0.113.7/32 or 2001:db8::/32",
          },
        ],
      };
    default:
      return {};
  }
}
