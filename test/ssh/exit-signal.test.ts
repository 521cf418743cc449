// An agent killed by a signal on an SSH host is named once: "by SIGKILL", not
// "by SIGSIGKILL" (ssh2 already prefixes the exit-signal name; issue #10).

import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectHost } from "../../src/transport/index.js";
import type { HostConnection } from "../../src/transport/types.js";
import { type Ssh2TestServer, startSsh2Server } from "../helpers/ssh2-server.js";

let server: Ssh2TestServer;
let conn: HostConnection | undefined;
beforeAll(async () => {
  server = await startSsh2Server();
});
afterAll(async () => {
  await conn?.close();
  await server.stop();
});

describe("an SSH agent killed by a signal", () => {
  it("is reported with the signal's name once", async () => {
    const knownHosts = path.join(server.dir, "known_hosts-exit-signal");
    fs.writeFileSync(knownHosts, `${server.hostKeyLine}\n`);
    conn = await connectHost({
      host: "127.0.0.1",
      port: server.port,
      user: "tester",
      identityFile: server.clientKeyPath,
      knownHostsFile: knownHosts,
      // The "agent" kills itself; the test server reports it as exit-signal KILL.
      command: "kill -KILL $$ #",
      config: "/etc/imapd.conf",
      name: "replica",
    });
    const channel = await conn.openAgent();
    const err = await new Promise<Error | undefined>((resolve) => channel.onClose(resolve));
    expect(err?.message).toMatch(/by SIGKILL\b/);
    expect(err?.message).not.toContain("SIGSIG");
  });
});
