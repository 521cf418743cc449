// Failures of reaching an agent, one class per thing the operator can act on.
// HostKeyError lives with the known_hosts code in known-hosts.ts.

import { ERRORS, type ErrorCode, GuidupError } from "../errors.js";

/** A host could not be reached: DNS failure, connection refused, no route, timeout. */
export class HostUnreachableError extends GuidupError {
  readonly code: ErrorCode = ERRORS.hostUnreachable.code;
}

/** The SSH server refused every credential we had (identity file, ssh-agent keys). */
export class SshAuthError extends GuidupError {
  readonly code: ErrorCode = ERRORS.sshAuth.code;
}

/**
 * A connection or agent that was up went away: the SSH connection dropped,
 * the agent exited before it was asked to, the agent command could not start.
 */
export class TransportError extends GuidupError {
  readonly code: ErrorCode = ERRORS.transport.code;
}
