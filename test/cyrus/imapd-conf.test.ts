import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseImapdConf, readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { CyrusFormatError, FileAccessError } from "../../src/errors.js";

const FIXTURE_CONF = "/work/shared/fixtures/cyrus-3.6/imapd.conf";

function formatErrorOf(text: string): CyrusFormatError {
  try {
    parseImapdConf(text, "/etc/imapd.conf");
  } catch (err) {
    expect(err).toBeInstanceOf(CyrusFormatError);
    return err as CyrusFormatError;
  }
  throw new Error("expected a CyrusFormatError");
}

describe("parseImapdConf", () => {
  it("reads the options guidup needs, with Cyrus defaults for the rest", () => {
    const conf = parseImapdConf("partition-default: /var/spool/imap\n", "/etc/imapd.conf");
    expect(conf).toEqual({
      file: "/etc/imapd.conf",
      partitions: new Map([["default", "/var/spool/imap"]]),
      metaPartitions: new Map(),
      metaPartitionFiles: [],
      hashImapSpool: false,
      fullDirHash: false,
      virtDomains: "off",
      unixHierarchySep: false,
      configDirectory: undefined,
      defaultPartition: "default",
      defaultDomain: undefined,
    });
  });

  it("parses every option, comments, blank lines, CRLF and surrounding spaces", () => {
    const text = [
      "# main config",
      "",
      "configdirectory: /var/lib/imap",
      "  partition-default:   /var/spool/imap  ",
      "partition-p2: /srv/p2\r",
      "metapartition-default: /ssd/meta",
      "metapartition_files: header index  expunge",
      "defaultpartition: P2",
      "defaultdomain: example.com",
      "hashimapspool: true",
      "fulldirhash: 1",
      "unixhierarchysep: on",
      "virtdomains: userid",
      "lock_method: fcntl",
      "sasl_pwcheck_method: saslauthd",
      "   # indented comment",
    ].join("\n");
    const conf = parseImapdConf(text, "/etc/imapd.conf");
    expect(conf.partitions).toEqual(
      new Map([
        ["default", "/var/spool/imap"],
        ["p2", "/srv/p2"],
      ]),
    );
    expect(conf.metaPartitions).toEqual(new Map([["default", "/ssd/meta"]]));
    expect(conf.metaPartitionFiles).toEqual(["header", "index", "expunge"]);
    expect(conf.defaultPartition).toBe("p2");
    expect(conf.defaultDomain).toBe("example.com");
    expect(conf.configDirectory).toBe("/var/lib/imap");
    expect(conf.hashImapSpool).toBe(true);
    expect(conf.fullDirHash).toBe(true);
    expect(conf.unixHierarchySep).toBe(true);
    expect(conf.virtDomains).toBe("userid");
  });

  it("lowercases option names like Cyrus's libconfig", () => {
    const conf = parseImapdConf(
      "Partition-Default: /var/spool/imap\nHashImapSpool: yes\n",
      "/etc/imapd.conf",
    );
    expect(conf.partitions.get("default")).toBe("/var/spool/imap");
    expect(conf.hashImapSpool).toBe(true);
  });

  it.each([
    ["1", true],
    ["yes", true],
    ["on", true],
    ["t", true],
    ["true", true],
    ["0", false],
    ["no", false],
    ["off", false],
    ["f", false],
    ["false", false],
  ])("reads switch value %s as %s", (value, expected) => {
    const conf = parseImapdConf(
      `partition-default: /s\nhashimapspool: ${value}\n`,
      "/etc/imapd.conf",
    );
    expect(conf.hashImapSpool).toBe(expected);
  });

  it("refuses a switch value Cyrus would refuse", () => {
    const err = formatErrorOf("partition-default: /s\nfulldirhash: Yes\n");
    expect(err.message).toBe("/etc/imapd.conf:2: non-switch value for fulldirhash: Yes");
  });

  it.each([
    ["off", "off"],
    ["userid", "userid"],
    ["on", "on"],
    ["yes", "on"],
    ["true", "on"],
    ["1", "on"],
    ["t", "on"],
    ["no", "off"],
    ["0", "off"],
    ["false", "off"],
  ])("reads virtdomains %s as %s", (value, expected) => {
    const conf = parseImapdConf(`partition-default: /s\nvirtdomains: ${value}\n`, "x.conf");
    expect(conf.virtDomains).toBe(expected);
  });

  it("refuses an unknown virtdomains value", () => {
    expect(formatErrorOf("partition-default: /s\nvirtdomains: domain\n").message).toContain(
      "/etc/imapd.conf:2: invalid value 'domain' for virtdomains",
    );
  });

  it("names file and line for a line without a colon", () => {
    const err = formatErrorOf("partition-default: /s\n\nhashimapspool yes\n");
    expect(err.message).toBe(
      '/etc/imapd.conf:3: invalid option name (expected "key: value"): hashimapspool yes',
    );
    expect(err.detail).toEqual({ file: "/etc/imapd.conf", line: 3 });
  });

  it("refuses a space before the colon, as Cyrus does", () => {
    expect(formatErrorOf("partition-default : /s\n").message).toContain("/etc/imapd.conf:1:");
  });

  it("refuses an empty value", () => {
    expect(formatErrorOf("partition-default: /s\nconfigdirectory:   \n").message).toBe(
      "/etc/imapd.conf:2: empty value for option configdirectory",
    );
  });

  it("refuses a config without any partition", () => {
    expect(formatErrorOf("configdirectory: /var/lib/imap\n").message).toBe(
      "/etc/imapd.conf: no partition-<name> option: cannot locate any mailbox",
    );
  });

  it("refuses a default partition without a partition- entry", () => {
    expect(formatErrorOf("partition-p1: /s\n").message).toBe(
      "/etc/imapd.conf: default partition 'default' has no partition-default option",
    );
    expect(formatErrorOf("partition-p1: /s\ndefaultpartition: p2\n").message).toBe(
      "/etc/imapd.conf:2: default partition 'p2' has no partition-p2 option",
    );
  });

  it("refuses relative partition and metapartition paths", () => {
    expect(formatErrorOf("partition-default: var/spool/imap\n").message).toBe(
      "/etc/imapd.conf:1: partition-default must be an absolute path: var/spool/imap",
    );
    expect(formatErrorOf("partition-default: /s\nmetapartition-default: meta\n").message).toBe(
      "/etc/imapd.conf:2: metapartition-default must be an absolute path: meta",
    );
  });

  it("refuses an option given twice", () => {
    expect(formatErrorOf("partition-default: /a\nPartition-default: /b\n").message).toBe(
      "/etc/imapd.conf:2: option partition-default given twice (first at /etc/imapd.conf:1)",
    );
  });

  it("refuses unknown metapartition_files entries", () => {
    expect(
      formatErrorOf("partition-default: /s\nmetapartition_files: header seen\n").message,
    ).toContain("/etc/imapd.conf:2: invalid value 'seen' for metapartition_files");
  });

  it("refuses a non-alphanumeric defaultpartition", () => {
    expect(formatErrorOf("partition-default: /s\ndefaultpartition: my-part\n").message).toBe(
      "/etc/imapd.conf:2: defaultpartition must be alphanumeric: my-part",
    );
  });

  it("sends @include to readImapdConf", () => {
    expect(formatErrorOf("partition-default: /s\n@include: /etc/more.conf\n").message).toContain(
      "/etc/imapd.conf:2: @include needs the file system",
    );
  });
});

describe("readImapdConf", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "guidup-imapd-conf-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads the Cyrus 3.6 fixture config", async () => {
    const conf = await readImapdConf(FIXTURE_CONF);
    expect(conf.file).toBe(FIXTURE_CONF);
    expect(conf.partitions).toEqual(
      new Map([["default", "/tmp/cyrus-fixtures-dev-XXXXXX/base/spool"]]),
    );
    expect(conf.metaPartitions.size).toBe(0);
    expect(conf.hashImapSpool).toBe(true);
    expect(conf.fullDirHash).toBe(false);
    expect(conf.unixHierarchySep).toBe(false);
    expect(conf.virtDomains).toBe("off");
    expect(conf.defaultPartition).toBe("default");
    expect(conf.configDirectory).toBe("/tmp/cyrus-fixtures-dev-XXXXXX/base/config");
  });

  it("reports a missing file as a file-access error naming it", async () => {
    const missing = join(dir, "nope.conf");
    await expect(readImapdConf(missing)).rejects.toThrow(FileAccessError);
    await expect(readImapdConf(missing)).rejects.toThrow(`cannot read Cyrus config ${missing}`);
  });

  it("follows @include with absolute paths and names the included file in errors", async () => {
    const main = join(dir, "main.conf");
    const extra = join(dir, "extra.conf");
    await writeFile(main, `configdirectory: /var/lib/imap\n@include: ${extra}\n`);
    await writeFile(extra, "partition-default: /var/spool/imap\nhashimapspool: yes\n");
    const conf = await readImapdConf(main);
    expect(conf.partitions.get("default")).toBe("/var/spool/imap");
    expect(conf.hashImapSpool).toBe(true);

    await writeFile(extra, "partition-default: /var/spool/imap\nfulldirhash maybe\n");
    await expect(readImapdConf(main)).rejects.toThrow(`${extra}:2: invalid option name`);
  });

  it("refuses include loops and relative includes", async () => {
    const loop = join(dir, "loop.conf");
    await writeFile(loop, `partition-default: /s\n@include: ${loop}\n`);
    await expect(readImapdConf(loop)).rejects.toThrow(`${loop}: configuration file included twice`);

    const rel = join(dir, "rel.conf");
    await writeFile(rel, "partition-default: /s\n@include: other.conf\n");
    await expect(readImapdConf(rel)).rejects.toThrow(
      `${rel}:2: @include needs an absolute path: other.conf`,
    );
  });
});
