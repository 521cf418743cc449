// Resolving inventory hosts through an OpenSSH client config file: what ssh
// would take from it, what the inventory overrides, what is refused, and
// that a plan keeps the resolved host (ProxyJump hops included) exactly.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InventoryError, parseInventory } from "../../src/plan/inventory.js";
import { formatPlan, parsePlan, planHeaderText } from "../../src/plan/plan-file.js";
import { loadSshConfig, parseJumpHop, resolveSshHost } from "../../src/plan/ssh-config.js";
import { parseYamlSubset } from "../../src/plan/yaml-subset.js";
import { makePlan } from "../helpers/plan-factory.js";

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-sshconfig-"));
  fs.writeFileSync(path.join(dir, "id_a"), "not read here");
  fs.mkdirSync(path.join(dir, "conf.d"));
  fs.writeFileSync(
    path.join(dir, "conf.d", "10-bastions.conf"),
    "Host bastion1\n  HostName 192.0.2.1\n  User jump\n  Port 2022\nHost bastion2\n  HostName 192.0.2.2\n",
  );
  fs.writeFileSync(
    path.join(dir, "config"),
    [
      `Include ${path.join(dir, "conf.d")}/*.conf`,
      "Host imap1",
      "  HostName 10.0.0.1",
      "  User cyrus",
      "  Port 2200",
      "  ProxyJump bastion1,admin@bastion2:2023",
      "Host legacy",
      "  ProxyCommand nc %h %p",
      "Host tokens",
      "  HostName %h.example.org",
      "  IdentityFile %d/.ssh/id_%r",
      "Host odd",
      "  IdentityFile ~/.ssh/%k",
      "Host *",
      `  IdentityFile ${path.join(dir, "id_missing")}`,
      `  IdentityFile ${path.join(dir, "id_a")}`,
      "  UserKnownHostsFile ~/.ssh/known_hosts_guidup",
      "",
    ].join("\n"),
  );
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const base = { config: "/etc/imapd.conf" };

describe("ssh config resolution", () => {
  it("resolves an alias like ssh would, hops included, each from its own Host block", () => {
    const loaded = loadSshConfig(path.join(dir, "config"));
    const host = resolveSshHost({ host: "imap1", ...base }, loaded);
    const known = path.join(os.homedir(), ".ssh", "known_hosts_guidup");
    const key = path.join(dir, "id_a");
    expect(host).toEqual({
      host: "10.0.0.1",
      port: 2200,
      user: "cyrus",
      identityFile: key,
      knownHostsFile: known,
      name: "imap1",
      config: "/etc/imapd.conf",
      jump: [
        {
          host: "192.0.2.1",
          port: 2022,
          user: "jump",
          identityFile: key,
          knownHostsFile: known,
          name: "bastion1",
        },
        {
          host: "192.0.2.2",
          port: 2023,
          user: "admin",
          identityFile: key,
          knownHostsFile: known,
          name: "bastion2",
        },
      ],
    });
  });

  it("lets explicit inventory fields win, and proxyJump none drop the config's", () => {
    const loaded = loadSshConfig(path.join(dir, "config"));
    const host = resolveSshHost(
      {
        host: "imap1",
        port: 22,
        user: "root",
        identityFile: "/keys/k",
        knownHostsFile: "/keys/kh",
        name: "master",
        proxyJump: "none",
        ...base,
      },
      loaded,
    );
    expect(host).toEqual({
      host: "10.0.0.1",
      port: 22,
      user: "root",
      identityFile: "/keys/k",
      knownHostsFile: "/keys/kh",
      name: "master",
      config: "/etc/imapd.conf",
    });
  });

  it("expands %h, %d and %r; refuses tokens it does not know and ProxyCommand", () => {
    const loaded = loadSshConfig(path.join(dir, "config"));
    const host = resolveSshHost({ host: "tokens", user: "bob", ...base }, loaded);
    expect(host.host).toBe("tokens.example.org");
    expect(() => resolveSshHost({ host: "odd", ...base }, loaded)).toThrow(
      /Host odd\): IdentityFile uses the token %k, which guidup does not expand/,
    );
    expect(() => resolveSshHost({ host: "legacy", ...base }, loaded)).toThrow(
      /ProxyCommand is not supported by guidup; use ProxyJump/,
    );
  });

  it("reads ProxyJump hops in every form ssh accepts", () => {
    expect(parseJumpHop("a")).toEqual({ alias: "a" });
    expect(parseJumpHop("u@a:2")).toEqual({ alias: "a", user: "u", port: 2 });
    expect(parseJumpHop("ssh://u@a:2")).toEqual({ alias: "a", user: "u", port: 2 });
    expect(parseJumpHop("[::1]:2222")).toEqual({ alias: "::1", port: 2222 });
    expect(() => parseJumpHop("a:99999")).toThrow(/not a port number/);
  });

  it("an inventory naming a missing sshConfig fails with the file, line and host", () => {
    const text = [
      "pairs:",
      "  - name: p",
      "    mailboxes: { file: list }",
      "    master: { host: imap1, sshConfig: nowhere/config, config: /etc/imapd.conf }",
      "    replica: { host: imap2, sshConfig: none, config: /etc/imapd.conf }",
      "",
    ].join("\n");
    let err: unknown;
    try {
      parseInventory(text, path.join(dir, "inv.yaml"));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InventoryError);
    expect((err as Error).message).toMatch(
      new RegExp(
        `inv\\.yaml:4:13: pairs\\[0\\]\\.master: cannot read ssh config ${dir}/nowhere/config`,
      ),
    );
  });

  it("a plan records the resolved host, hops included, and reads it back on the fast path", () => {
    const plan = makePlan(3);
    plan.hosts.master = resolveSshHost(
      { host: "imap1", ...base },
      loadSshConfig(path.join(dir, "config")),
    );
    plan.hosts.master.serverAliveInterval = 5;
    plan.hosts.master.identitiesOnly = true;
    const text = formatPlan(plan);
    expect(text).toContain(
      '    jump:\n      - host: "192.0.2.1"\n        port: 2022\n        user: jump\n',
    );
    // The header (all a /3 plan has outside its one-line entries) stays in the fast reader's style.
    expect(parseYamlSubset(planHeaderText(plan)).ok).toBe(true);
    expect(parsePlan(text, "p.yaml").hosts.master).toEqual(plan.hosts.master);
  });
});
