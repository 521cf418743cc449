import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExitCode } from "../../src/errors.js";
import { InventoryError, loadInventory, parseInventory } from "../../src/plan/inventory.js";

const EXAMPLES = fileURLToPath(new URL("../../examples/", import.meta.url));

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-inventory-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function problems(text: string, file = "inventory.yaml"): string[] {
  try {
    parseInventory(text, file);
  } catch (err) {
    expect(err).toBeInstanceOf(InventoryError);
    const e = err as InventoryError;
    expect(e.code).toBe("inventory");
    expect(e.exitCode).toBe(ExitCode.badInput);
    return e.message.split("\n");
  }
  throw new Error("expected an InventoryError");
}

const SSH = `pairs:
  - name: slot1
    mailboxes: { command: "ctl_mboxlist -d" }
    master:
      host: imap1.example.com
      port: 2222
      user: cyrus
      identityFile: ~/.ssh/id_ed25519
      knownHostsFile: keys/known_hosts
      command: /opt/guidup/bin/guidup serve
      config: /etc/imapd.conf
    replica:
      host: imap1-replica.example.com
      config: /etc/imapd.conf
`;

const LOCAL = `pairs:
  - name: demo
    mailboxes: { file: mailboxes.dump }
    master:
      transport: local
      name: master
      config: master/imapd.conf
    replica:
      transport: local
      command: [node, /opt/guidup/main.js, serve]
      config: /srv/replica/imapd.conf
`;

describe("loadInventory", () => {
  it("reads an ssh inventory, expanding ~/ and resolving local paths", async () => {
    const file = join(dir, "ssh.yaml");
    await writeFile(file, SSH);
    const inv = await loadInventory(file);
    expect(inv.file).toBe(file);
    expect(inv.pairs).toEqual([
      {
        name: "slot1",
        mailboxes: { command: "ctl_mboxlist -d" },
        master: {
          host: "imap1.example.com",
          port: 2222,
          user: "cyrus",
          identityFile: join(homedir(), ".ssh/id_ed25519"),
          knownHostsFile: join(dir, "keys/known_hosts"),
          command: "/opt/guidup/bin/guidup serve",
          config: "/etc/imapd.conf",
        },
        replica: { host: "imap1-replica.example.com", config: "/etc/imapd.conf" },
      },
    ]);
  });

  it("reads a local inventory, resolving file and config against the inventory's directory", async () => {
    const file = join(dir, "local.yaml");
    await writeFile(file, LOCAL);
    const inv = await loadInventory(file);
    expect(inv.pairs[0]).toEqual({
      name: "demo",
      mailboxes: { file: join(dir, "mailboxes.dump") },
      master: { transport: "local", name: "master", config: join(dir, "master/imapd.conf") },
      replica: {
        transport: "local",
        command: ["node", "/opt/guidup/main.js", "serve"],
        config: "/srv/replica/imapd.conf",
      },
    });
  });

  it("accepts discover: true", () => {
    const inv = parseInventory(
      SSH.replace('{ command: "ctl_mboxlist -d" }', "{ discover: true }"),
      "i.yaml",
    );
    expect(inv.pairs[0]?.mailboxes).toEqual({ discover: true });
  });

  it("accepts the examples", async () => {
    const ssh = await loadInventory(join(EXAMPLES, "inventory.yaml"));
    expect(ssh.pairs.map((p) => p.name)).toEqual(["slot1", "slot2"]);
    const local = await loadInventory(join(EXAMPLES, "inventory.local.yaml"));
    expect(local.pairs[0]?.master).toMatchObject({ transport: "local" });
  });

  it("reports a missing file as FileAccessError", async () => {
    await expect(loadInventory(join(dir, "none.yaml"))).rejects.toMatchObject({
      code: "file-access",
      exitCode: ExitCode.badInput,
    });
  });
});

describe("inventory problems name file, line and column", () => {
  it("a typo key, at the key, with a guess", () => {
    expect(problems(SSH.replace("identityFile:", "identityfile:"))).toEqual([
      "inventory.yaml:8:7: pairs[0].master.identityfile: unknown key (did you mean 'identityFile'?)",
    ]);
  });

  it("a missing config, at the host", () => {
    expect(
      problems(SSH.replace("      config: /etc/imapd.conf\n    replica:", "    replica:")),
    ).toEqual(["inventory.yaml:5:7: pairs[0].master: must have required property 'config'"]);
  });

  it("a wrong type, at the value", () => {
    expect(problems(SSH.replace("port: 2222", 'port: "ssh"'))).toEqual([
      'inventory.yaml:6:13: pairs[0].master.port: must be integer, got "ssh"',
    ]);
  });

  it("a local host with ssh keys is checked as local", () => {
    expect(problems(LOCAL.replace("      name: master\n", "      user: cyrus\n"))).toEqual([
      "inventory.yaml:6:7: pairs[0].master.user: unknown key (known keys: transport, command, config, name)",
    ]);
  });

  it("mailboxes needs exactly one source", () => {
    expect(
      problems(SSH.replace('{ command: "ctl_mboxlist -d" }', "{ file: a, discover: true }")),
    ).toEqual([
      "inventory.yaml:3:16: pairs[0].mailboxes: must have exactly one of 'command', 'file', 'discover'",
    ]);
    expect(problems(SSH.replace('{ command: "ctl_mboxlist -d" }', "{ discover: false }"))).toEqual([
      "inventory.yaml:3:28: pairs[0].mailboxes.discover: must be true, got false",
    ]);
  });

  it("lists every problem, in file order, in one error", () => {
    const text = `${SSH.replace("identityFile:", "identityFile2:").replace("port: 2222", "port: 0")}  - name: slot1
    mailboxes: {}
    master: imap9
    replica:
      transport: local
`;
    expect(problems(text, "inv.yaml")).toEqual([
      "inv.yaml:6:13: pairs[0].master.port: must be >= 1, got 0",
      "inv.yaml:8:7: pairs[0].master.identityFile2: unknown key (did you mean 'identityFile'?)",
      "inv.yaml:16:16: pairs[1].mailboxes: must have exactly one of 'command', 'file', 'discover'",
      'inv.yaml:17:13: pairs[1].master: must be object, got "imap9"',
      "inv.yaml:19:7: pairs[1].replica: must have required property 'config'",
    ]);
  });

  it("then the rules: unique names, master differs from replica, ~user", () => {
    const twice = `${SSH}${SSH.replace("pairs:\n", "")}`;
    expect(problems(twice)).toEqual([
      "inventory.yaml:15:11: pairs[1].name: pair name 'slot1' is already used by pairs[0]",
    ]);
    const same = SSH.replace("imap1-replica.example.com", "IMAP1.example.com").replace(
      "port: 2222",
      "port: 22",
    );
    expect(problems(same)).toEqual([
      "inventory.yaml:13:7: pairs[0].replica: master and replica are the same host and imapd.conf",
    ]);
    const localSame = LOCAL.replace("/srv/replica/imapd.conf", "./master/imapd.conf");
    expect(problems(localSame)).toEqual([
      "inventory.yaml:9:7: pairs[0].replica: master and replica are the same host and imapd.conf",
    ]);
    expect(problems(SSH.replace("~/.ssh/id_ed25519", "~cyrus/.ssh/id"))).toEqual([
      'inventory.yaml:8:21: pairs[0].master.identityFile: only "~/" is expanded; write the full path instead of "~cyrus/.ssh/id"',
    ]);
  });

  it("YAML syntax errors and duplicate keys", () => {
    expect(problems("pairs:\n  - name: a\n    name: b\n")[0]).toMatch(
      /^inventory\.yaml:3:5: Map keys must be unique/,
    );
    expect(problems("pairs: [\n")[0]).toMatch(/^inventory\.yaml:\d+:\d+: /);
  });

  it("an empty file or no pairs", () => {
    expect(problems("")).toEqual(["inventory.yaml:1:1: must be object, got null"]);
    expect(problems("pairs: []\n")).toEqual([
      "inventory.yaml:1:8: pairs: must NOT have fewer than 1 items",
    ]);
    expect(problems("pairs:\n  - name: -bad\n")[0]).toMatch(
      /pairs\[0\]: must have required property/,
    );
  });
});
