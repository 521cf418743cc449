// The controller's side of the agent protocol: starts an agent on a host
// connection, checks its hello (refusing a protocol version we do not
// speak), sends requests and matches responses by id. Wire errors come back
// as AgentError with the agent's code (its meaning from src/errors.ts ERRORS); a vanished agent fails every pending
// request with a TransportError naming the host.

import { ERRORS, type ErrorCode, errorMessage, GuidupError, isErrorCode } from "../errors.js";
import { encodeLine } from "../protocol/framing.js";
import {
  type AgentLine,
  type Hello,
  type LogLine,
  type Op,
  PROTOCOL_VERSION,
  type Requests,
  type WireError,
} from "../protocol/messages.js";
import { TOOL_VERSION } from "../version.js";
import { TransportError } from "./errors.js";
import type { AgentChannel, HostConnection } from "./types.js";

/** How long an agent has to say hello before we give up on it. */
export const HELLO_TIMEOUT_MS = 30_000;

/**
 * An error the agent answered with. Its code is one of ERRORS, so it exits
 * and retries as the same error would here; an agent's internal error, or a
 * code this guidup does not know (a newer agent), is `internal` (exit 70).
 * The class stays AgentError whatever the code: the engine tells "the agent
 * answered" from "the connection went" by it.
 */
export class AgentError extends GuidupError {
  readonly code: ErrorCode;
  constructor(
    readonly host: string,
    code: ErrorCode,
    message: string,
    detail?: Record<string, unknown>,
  ) {
    super(`${host}: ${message}`, detail);
    this.code = code;
  }

  /** The error a wire answer stands for (the agent's code mapped through ERRORS). */
  static fromWire(host: string, wire: WireError): AgentError {
    if (isErrorCode(wire.code)) return new AgentError(host, wire.code, wire.message, wire.detail);
    return new AgentError(
      host,
      ERRORS.internal.code,
      `${wire.message} (unknown error code "${wire.code}" from the agent)`,
      { ...wire.detail, agentCode: wire.code },
    );
  }
}

/** How an operator puts the right agent on a host: said wherever a wrong one is found. */
export const AGENT_VERSION_FIX =
  "run `guidup agent install --inventory FILE` to put this version on the host, then use the command it prints (README, Install)";

/** The agent is another guidup version, or speaks another protocol version. */
export class ProtocolVersionError extends GuidupError {
  readonly code: ErrorCode = ERRORS.protocolVersion.code;
}

interface Pending {
  op: Op;
  resolve: (result: unknown) => void;
  reject: (err: Error) => void;
  onProgress?: (p: Record<string, number | string>) => void;
}

export interface AgentClientOptions {
  /** Each agent stderr log line, parsed, with the host it came from. */
  onLog?: (host: string, line: LogLine) => void;
  helloTimeoutMs?: number;
}

export class AgentClient {
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #closed: Error | undefined;
  #lastStderr = "";

  private constructor(
    readonly host: string,
    readonly hello: Hello,
    private readonly channel: AgentChannel,
    private readonly options: AgentClientOptions = {},
  ) {}

  /** Starts an agent on `conn` and waits for its hello. */
  static async start(conn: HostConnection, options: AgentClientOptions = {}): Promise<AgentClient> {
    const channel = await conn.openAgent();
    const host = channel.host;
    let client: AgentClient | undefined;
    let lastStderr = "";
    channel.onStderrLine((line) => {
      lastStderr = line;
      if (client) client.#lastStderr = line;
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        parsed = { level: "info", msg: line };
      }
      options.onLog?.(host, parsed);
    });
    await new Promise<Hello>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new TransportError(
            `${host}: the agent did not say hello within ${Math.round((options.helloTimeoutMs ?? HELLO_TIMEOUT_MS) / 1000)} s${lastStderr ? ` (last stderr: ${lastStderr})` : ""}`,
          ),
        );
      }, options.helloTimeoutMs ?? HELLO_TIMEOUT_MS);
      channel.onClose((err) => {
        clearTimeout(timer);
        const why = err ? errorMessage(err) : "it exited";
        // The channel's error may quote the last stderr line already; and a
        // line from guidup itself ("guidup serve: cannot read …") means it is
        // installed and started: its own words say what is wrong.
        const stderrPart =
          lastStderr && !why.includes(lastStderr) ? `; last stderr: ${lastStderr}` : "";
        const hint = lastStderr.startsWith("guidup ")
          ? ""
          : "; is guidup installed there and is the command right? (guidup agent install --inventory FILE puts it there)";
        reject(
          new TransportError(
            `${host}: the agent ended before saying hello (${why})${stderrPart}${hint}`,
          ),
        );
        if (client) {
          client.#fail(
            new TransportError(
              `${host}: agent connection closed${err ? `: ${errorMessage(err)}` : ""}`,
              // Keeps what the channel knows (the pid of an agent it gave up on).
              err instanceof GuidupError ? err.detail : undefined,
            ),
          );
        }
      });
      channel.onLine((line) => {
        if (client) {
          client.#onLine(line);
          return;
        }
        clearTimeout(timer);
        let msg: AgentLine;
        try {
          msg = JSON.parse(line) as AgentLine;
        } catch {
          reject(
            new TransportError(
              `${host}: the agent's first line is not JSON: ${line.slice(0, 200)}`,
            ),
          );
          return;
        }
        if (!("type" in msg) || msg.type !== "hello") {
          reject(new TransportError(`${host}: the agent did not start with hello`));
          return;
        }
        if (msg.protocol !== PROTOCOL_VERSION || msg.tool !== TOOL_VERSION) {
          reject(
            new ProtocolVersionError(
              `${host}: the agent there is guidup ${msg.tool} (protocol ${msg.protocol}) and this controller is guidup ${TOOL_VERSION} (protocol ${PROTOCOL_VERSION}); they must be the same version: ${AGENT_VERSION_FIX}`,
              { host, agentTool: msg.tool, agentProtocol: msg.protocol, tool: TOOL_VERSION },
            ),
          );
          return;
        }
        client = new AgentClient(host, msg, channel, options);
        client.#lastStderr = lastStderr;
        resolve(msg);
      });
    }).catch(async (err: unknown) => {
      await channel.close();
      throw err;
    });
    return client!;
  }

  /** Sends one request and resolves with its result (rejects with AgentError). */
  request<K extends Op>(
    op: K,
    args: Requests[K]["args"],
    onProgress?: (p: Record<string, number | string>) => void,
  ): Promise<Requests[K]["result"]> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, {
        op,
        resolve: resolve as (r: unknown) => void,
        reject,
        ...(onProgress ? { onProgress } : {}),
      });
      try {
        // encodeLine's "\n" included: the channel sends it as is, no copy.
        this.channel.send(encodeLine({ id, op, ...args }));
      } catch (err) {
        this.#pending.delete(id);
        reject(new TransportError(`${this.host}: cannot send ${op}: ${errorMessage(err)}`));
      }
    });
  }

  /** Ends the agent (it rolls back anything in progress) and waits for it. */
  async close(): Promise<void> {
    await this.channel.close();
    // An agent that would not exit even when killed may still hold a
    // mailbox's locks: the channel's give-up error names its host and pid.
    // Nothing awaits this close for an answer, so say it as a warning, where
    // the operator sees agent logs.
    const gaveUp = this.#closed;
    if (gaveUp instanceof GuidupError && gaveUp.detail?.agentPid !== undefined)
      this.options.onLog?.(this.host, { level: "warn", msg: gaveUp.message });
    this.#fail(new TransportError(`${this.host}: agent closed`));
  }

  get closed(): boolean {
    return this.#closed !== undefined;
  }

  #onLine(line: string): void {
    let msg: AgentLine;
    try {
      msg = JSON.parse(line) as AgentLine;
    } catch {
      this.#fail(new TransportError(`${this.host}: the agent sent a line that is not JSON`));
      return;
    }
    if (!("id" in msg)) return;
    const pending = msg.id === null ? undefined : this.#pending.get(msg.id);
    if (!pending) return;
    if ("progress" in msg) {
      pending.onProgress?.(msg.progress);
      return;
    }
    this.#pending.delete(msg.id);
    if (msg.ok) pending.resolve(msg.result);
    else pending.reject(AgentError.fromWire(this.host, msg.error));
  }

  #fail(err: Error): void {
    if (!this.#closed) this.#closed = err;
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      p.reject(
        this.#lastStderr && !err.message.includes(this.#lastStderr)
          ? new TransportError(
              `${err.message} (during ${p.op}; last agent log: ${this.#lastStderr})`,
            )
          : err,
      );
    }
  }
}
