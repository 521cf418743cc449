import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  appendHostKey,
  checkHostKey,
  fingerprintSha256,
  HostKeyError,
  hashKnownHostsName,
  keyTypeOfBlob,
  knownHostsName,
  knownKeyTypes,
  verifyHostKey,
} from "../../src/transport/known-hosts.js";
import { generateEd25519KeyPair } from "../helpers/ssh2-server.js";

/** A fresh ed25519 public key: its blob and its known_hosts "type base64" text. */
function newKey() {
  const blob = generateEd25519KeyPair().publicBlob;
  return { blob, text: `ssh-ed25519 ${blob.toString("base64")}` };
}

let dir: string;
let file: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-kh-"));
  file = path.join(dir, "known_hosts");
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const A = newKey();
const B = newKey();

describe("known_hosts lookup", () => {
  it("names hosts as OpenSSH does", () => {
    expect(knownHostsName("IMAP1.example.org", 22)).toBe("imap1.example.org");
    expect(knownHostsName("127.0.0.1", 2222)).toBe("[127.0.0.1]:2222");
  });

  it("matches a plain entry among comments, blanks and other hosts", () => {
    fs.writeFileSync(
      file,
      `# a comment\n\nother.example.org ${B.text}\n  imap1.example.org,10.0.0.1 ${A.text} root@somewhere\n`,
    );
    expect(checkHostKey(file, "imap1.example.org", 22, "ssh-ed25519", A.blob)).toBe("match");
    expect(checkHostKey(file, "10.0.0.1", 22, "ssh-ed25519", A.blob)).toBe("match");
    expect(checkHostKey(file, "IMAP1.Example.ORG", 22, "ssh-ed25519", A.blob)).toBe("match");
    expect(checkHostKey(file, "imap2.example.org", 22, "ssh-ed25519", A.blob)).toBe("unknown");
  });

  it("keeps ports apart: [host]:port only matches that port", () => {
    fs.writeFileSync(file, `[127.0.0.1]:2222 ${A.text}\n`);
    expect(checkHostKey(file, "127.0.0.1", 2222, "ssh-ed25519", A.blob)).toBe("match");
    expect(checkHostKey(file, "127.0.0.1", 22, "ssh-ed25519", A.blob)).toBe("unknown");
    expect(checkHostKey(file, "127.0.0.1", 2223, "ssh-ed25519", A.blob)).toBe("unknown");
  });

  it("supports wildcards and negation", () => {
    fs.writeFileSync(
      file,
      `*.example.org,!evil.example.org ${A.text}\n[imap?.lan]:2222 ${A.text}\n`,
    );
    expect(checkHostKey(file, "imap1.example.org", 22, "ssh-ed25519", A.blob)).toBe("match");
    expect(checkHostKey(file, "evil.example.org", 22, "ssh-ed25519", A.blob)).toBe("unknown");
    expect(checkHostKey(file, "imap7.lan", 2222, "ssh-ed25519", A.blob)).toBe("match");
    expect(checkHostKey(file, "imap77.lan", 2222, "ssh-ed25519", A.blob)).toBe("unknown");
    // "." is not a wildcard.
    expect(checkHostKey(file, "imap1xexample.org", 22, "ssh-ed25519", A.blob)).toBe("unknown");
  });

  it("matches hashed |1| entries made with our own HMAC", () => {
    const salt = randomBytes(20);
    fs.writeFileSync(file, `${hashKnownHostsName("[127.0.0.1]:2222", salt)} ${A.text}\n`);
    expect(checkHostKey(file, "127.0.0.1", 2222, "ssh-ed25519", A.blob)).toBe("match");
    expect(checkHostKey(file, "127.0.0.1", 22, "ssh-ed25519", A.blob)).toBe("unknown");
  });

  it("matches entries hashed by ssh-keygen -H", () => {
    fs.writeFileSync(file, `imap1.example.org ${A.text}\n[127.0.0.1]:2222 ${B.text}\n`);
    execFileSync("ssh-keygen", ["-H", "-f", file], { stdio: "ignore" });
    const text = fs.readFileSync(file, "utf8");
    expect(text).not.toContain("imap1");
    expect(text.match(/^\|1\|/gm)).toHaveLength(2);
    expect(checkHostKey(file, "imap1.example.org", 22, "ssh-ed25519", A.blob)).toBe("match");
    expect(checkHostKey(file, "127.0.0.1", 2222, "ssh-ed25519", B.blob)).toBe("match");
    expect(checkHostKey(file, "127.0.0.1", 2222, "ssh-ed25519", A.blob)).toEqual({
      changed: true,
      line: 2,
    });
  });

  it("reports a changed key with the line of the old one", () => {
    fs.writeFileSync(file, `# header\n[127.0.0.1]:2222 ${B.text}\n`);
    expect(checkHostKey(file, "127.0.0.1", 2222, "ssh-ed25519", A.blob)).toEqual({
      changed: true,
      line: 2,
    });
  });

  it("accepts any one of several keys on record, and ignores keys of other types", () => {
    const rsaLike = `ssh-rsa ${Buffer.from("not really rsa").toString("base64")}`;
    fs.writeFileSync(file, `h ${B.text}\nh ${A.text}\nh2 ${rsaLike}\n`);
    expect(checkHostKey(file, "h", 22, "ssh-ed25519", A.blob)).toBe("match");
    expect(checkHostKey(file, "h2", 22, "ssh-ed25519", A.blob)).toBe("unknown");
    expect(knownKeyTypes(file, "h2", 22)).toEqual(["ssh-rsa"]);
  });

  it("refuses a revoked key even when it is also on record", () => {
    fs.writeFileSync(file, `h ${A.text}\n@revoked * ${A.text}\n`);
    expect(checkHostKey(file, "h", 22, "ssh-ed25519", A.blob)).toEqual({ revoked: true, line: 2 });
    expect(() =>
      verifyHostKey({
        knownHostsFile: file,
        host: "h",
        port: 22,
        keyBlob: A.blob,
        acceptNew: true,
      }),
    ).toThrow(/marked @revoked in .* line 2; refusing to connect/);
  });

  it("ignores @cert-authority lines and treats a missing file as empty", () => {
    fs.writeFileSync(file, `@cert-authority * ${A.text}\n`);
    expect(checkHostKey(file, "h", 22, "ssh-ed25519", A.blob)).toBe("unknown");
    expect(checkHostKey(path.join(dir, "none"), "h", 22, "ssh-ed25519", A.blob)).toBe("unknown");
  });
});

describe("host key decisions", () => {
  it("fingerprints like ssh-keygen -l", () => {
    fs.writeFileSync(path.join(dir, "k.pub"), `${A.text}\n`);
    const out = execFileSync("ssh-keygen", ["-l", "-f", path.join(dir, "k.pub")], {
      encoding: "utf8",
    });
    expect(out).toContain(fingerprintSha256(A.blob));
    expect(fingerprintSha256(A.blob)).toBe(
      `SHA256:${createHash("sha256").update(A.blob).digest("base64").replace(/=+$/, "")}`,
    );
    expect(keyTypeOfBlob(A.blob)).toBe("ssh-ed25519");
  });

  it("refuses an unknown key and says what to do", () => {
    let err: unknown;
    try {
      verifyHostKey({
        knownHostsFile: file,
        host: "127.0.0.1",
        port: 2222,
        keyBlob: A.blob,
        acceptNew: false,
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HostKeyError);
    expect((err as HostKeyError).code).toBe("host-key");
    expect((err as Error).message).toBe(
      `host key for [127.0.0.1]:2222 is not in ${file} (ssh-ed25519 ${fingerprintSha256(A.blob)}); ` +
        "add it with ssh-keyscan or run with --accept-new-host-keys",
    );
    expect(fs.existsSync(file)).toBe(false);
  });

  it("refuses a changed key even with acceptNew", () => {
    fs.writeFileSync(file, `[127.0.0.1]:2222 ${B.text}\n`);
    expect(() =>
      verifyHostKey({
        knownHostsFile: file,
        host: "127.0.0.1",
        port: 2222,
        keyBlob: A.blob,
        acceptNew: true,
      }),
    ).toThrow(
      new RegExp(
        `^HOST KEY FOR \\[127\\.0\\.0\\.1\\]:2222 HAS CHANGED \\(now ssh-ed25519 SHA256:\\S+; ${file} line 1 has another\\) — possible man-in-the-middle; remove the old entry if the change is expected`,
      ),
    );
    expect(fs.readFileSync(file, "utf8")).toBe(`[127.0.0.1]:2222 ${B.text}\n`);
  });

  it("records a new key with acceptNew: plain entry, 0600 file in a 0700 directory", () => {
    const nested = path.join(dir, "home", ".ssh", "known_hosts");
    expect(
      verifyHostKey({
        knownHostsFile: nested,
        host: "127.0.0.1",
        port: 2222,
        keyBlob: A.blob,
        acceptNew: true,
      }),
    ).toBe("added");
    expect(fs.readFileSync(nested, "utf8")).toBe(`[127.0.0.1]:2222 ${A.text}\n`);
    expect(fs.statSync(nested).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(nested)).mode & 0o777).toBe(0o700);
    expect(
      verifyHostKey({
        knownHostsFile: nested,
        host: "127.0.0.1",
        port: 2222,
        keyBlob: A.blob,
        acceptNew: false,
      }),
    ).toBe("match");
  });

  it("appends on a new line when the file lacks a final newline", () => {
    fs.writeFileSync(file, `other ${B.text}`);
    appendHostKey(file, "imap1", 22, "ssh-ed25519", A.blob);
    expect(fs.readFileSync(file, "utf8")).toBe(`other ${B.text}\nimap1 ${A.text}\n`);
    // Readable by ssh-keygen too.
    const out = execFileSync("ssh-keygen", ["-F", "imap1", "-f", file], { encoding: "utf8" });
    expect(out).toContain(A.blob.toString("base64"));
  });

  it("refuses to record something that is not a host name", () => {
    expect(() => appendHostKey(file, "a b,*", 22, "ssh-ed25519", A.blob)).toThrow(
      /not a host name/,
    );
  });
});

describe("several known_hosts files (OpenSSH UserKnownHostsFile a b, GlobalKnownHostsFile)", () => {
  const verify = (more: string[], blob: Buffer, acceptNew = false) =>
    verifyHostKey({
      knownHostsFile: file,
      moreKnownHostsFiles: more,
      host: "imap1",
      port: 22,
      keyBlob: blob,
      acceptNew,
    });

  it("matches a key recorded in a later file, and offers its type first", () => {
    const global = path.join(dir, "ssh_known_hosts");
    fs.writeFileSync(global, `imap1 ${A.text}\n`);
    expect(verify([global], A.blob)).toBe("match");
    expect(knownKeyTypes([file, global], "imap1", 22)).toEqual(["ssh-ed25519"]);
  });

  it("a revocation in any file wins over a match in another", () => {
    const global = path.join(dir, "ssh_known_hosts");
    fs.writeFileSync(file, `imap1 ${A.text}\n`);
    fs.writeFileSync(global, `@revoked imap1 ${A.text}\n`);
    expect(() => verify([global], A.blob)).toThrow(
      /is marked @revoked in .*ssh_known_hosts line 1/,
    );
  });

  it("a changed key in a later file is refused, naming that file", () => {
    const second = path.join(dir, "known_hosts2");
    fs.writeFileSync(second, `imap1 ${B.text}\n`);
    expect(() => verify([second], A.blob)).toThrow(/HAS CHANGED .*known_hosts2 line 1/);
  });

  it("an unknown key names every file and is recorded in the first only", () => {
    const second = path.join(dir, "known_hosts2");
    fs.writeFileSync(second, "");
    expect(() => verify([second], A.blob)).toThrow(
      new RegExp(`^host key for imap1 is not in ${file} or ${second} `),
    );
    expect(verify([second], A.blob, true)).toBe("added");
    expect(fs.readFileSync(file, "utf8")).toBe(`imap1 ${A.text}\n`);
    expect(fs.readFileSync(second, "utf8")).toBe("");
  });
});
