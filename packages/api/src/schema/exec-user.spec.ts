import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../errors.js";
import { isNumericExecUser, parseExecUser } from "./exec-user.js";

describe("parseExecUser", () => {
  it("takes names and numbers, with or without a group", () => {
    assert.deepEqual(parseExecUser("user", "root"), { user: "root" });
    assert.deepEqual(parseExecUser("user", "1000:1000"), { user: "1000", group: "1000" });
    assert.deepEqual(parseExecUser("user", "app:staff"), { user: "app", group: "staff" });
    assert.deepEqual(parseExecUser("user", "www-data"), { user: "www-data" });
    assert.deepEqual(parseExecUser("user", "host$"), { user: "host$" });
    assert.deepEqual(parseExecUser("user", "4294967294"), { user: "4294967294" });
  });

  it("refuses what no account can be called, saying what is allowed", () => {
    for (const bad of ["", ":", "a:", ":b", "a:b:c", "-x", "a b", "a/b", "..", "4294967295", "99999999999", "x".repeat(33), "12$", "ünï"]) {
      assert.throws(
        () => parseExecUser("user", bad),
        (error: unknown) => error instanceof ValidationError && error.field === "user" && /expected USER or USER:GROUP/.test(error.message),
        JSON.stringify(bad),
      );
    }
  });

  it("tells numbers alone from names", () => {
    assert.equal(isNumericExecUser(parseExecUser("user", "0")), true);
    assert.equal(isNumericExecUser(parseExecUser("user", "1000:50")), true);
    assert.equal(isNumericExecUser(parseExecUser("user", "1000:staff")), false);
    assert.equal(isNumericExecUser(parseExecUser("user", "root")), false);
  });
});
