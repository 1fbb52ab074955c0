// Inputs and actions shared by the three protocol machines (sans-I/O: the driver owns sockets and clocks).

import type { ServerConfig } from "../config/types.ts";

export type AuthMethod = "plain" | "login" | "apop" | "cram-md5" | "external" | "none";

/** What a session hands to the auth step once the client has given its credentials. */
export interface Credentials {
  readonly method: AuthMethod;
  readonly login: string; // bytes as latin1 chars: exactly what the client sent
  readonly password: string; // "" for EXTERNAL; the digest for CRAM-MD5/APOP
  readonly salt?: string; // "<...>" for CRAM-MD5 and APOP
  readonly loginAttempt: number;
  readonly smtp?: { readonly helo: string; readonly from: string; readonly to: string };
}

/** The auth service's answer, already read as nginx reads auth_http response headers. */
export type AuthOutcome =
  | { readonly kind: "ok"; readonly host: string; readonly port: number; readonly login: string; readonly password: string }
  | { readonly kind: "fail"; readonly message: string; readonly errorCode?: string; readonly keepOpen: boolean }
  | { readonly kind: "error"; readonly why: string };

export type Input =
  | { readonly kind: "bytes"; readonly bytes: Uint8Array }
  | { readonly kind: "auth-result"; readonly outcome: AuthOutcome }
  | { readonly kind: "tls-started" }
  | { readonly kind: "delay-done" }; // the "delay" action's time passed with no client input

export type Action =
  | { readonly kind: "reply"; readonly text: string } // latin1 string: one char per byte
  | { readonly kind: "ask-auth"; readonly credentials: Credentials }
  | { readonly kind: "start-tls" }
  | {
    readonly kind: "proxy";
    readonly to: { host: string; port: number };
    readonly login: string;
    readonly password: string;
    readonly leftover: Uint8Array; // pipelined client bytes, for the backend after login
    readonly tag: string; // IMAP: the client's tag (with its space), reused for the backend LOGIN
    readonly smtp?: UpstreamStart["smtp"];
  }
  | { readonly kind: "log"; readonly level: "info" | "warn" | "debug" | "error"; readonly message: string }
  /** Wait `ms` before going on (smtp_greeting_delay); a client that talks first gets `earlyReply` and is closed. */
  | { readonly kind: "delay"; readonly ms: number; readonly earlyReply: string }
  | { readonly kind: "close"; readonly why: string };

export interface SessionStart {
  readonly server: CompiledServer;
  readonly tls: boolean; // the connection is already TLS (implicit)
  readonly nowSec: number;
  readonly random: number; // for the APOP/CRAM-MD5 salt
  readonly clientAddr: string;
  /** The client's forward-confirmed reverse DNS name, "[UNAVAILABLE]" or "[TEMPUNAVAIL]" (resolver). */
  readonly clientHost: string;
}

export interface Step<S> {
  readonly state: S;
  readonly actions: Action[];
}

/** Logging in to the backend: lines in, lines out, then hand over to the relay. */
export type UpstreamInput = { readonly kind: "bytes"; readonly bytes: Uint8Array } | { readonly kind: "tls-started" };

export type UpstreamAction =
  | { readonly kind: "send"; readonly text: string } // latin1
  | { readonly kind: "start-tls" }
  | { readonly kind: "done"; readonly toClient: Uint8Array; readonly leftover: Uint8Array } // relay from here
  | { readonly kind: "fail"; readonly toClient: string; readonly log: string }; // reply (or internal error) then close

export interface UpstreamStart {
  readonly server: CompiledServer;
  readonly login: string;
  readonly password: string;
  readonly clientTag: string; // IMAP: the client's tag with its trailing space
  readonly clientAddr: string;
  readonly clientHost: string; // "[UNAVAILABLE]" when unknown
  readonly clientPort: number;
  readonly starttls: boolean; // proxy_ssl: starttls
  readonly smtp?: { readonly helo: string; readonly heloCommand: string; readonly from: string; readonly to: readonly string[]; readonly authMethod: AuthMethod };
}

/** A server's configuration plus the replies built once at load. */
export interface CompiledServer {
  readonly config: ServerConfig;
  readonly replies: Readonly<Record<string, string>>;
}

export interface ProtocolMachine<S, U> {
  readonly name: "imap" | "pop3" | "smtp";
  readonly internalError: string;
  /** nginx's replies when ssl_verify_client refuses the client's certificate, or its absence. */
  readonly certError: string;
  readonly noCertError: string;
  /** Look up the client's DNS name before the greeting when a resolver is configured (SMTP). */
  readonly resolvesClient: boolean;
  compile(config: ServerConfig): CompiledServer;
  start(init: SessionStart): Step<S>;
  step(state: S, input: Input): Step<S>;
  /** Bytes the session holds but has not consumed (pipelined input). */
  pending(state: S): Uint8Array;
  upstreamStart(init: UpstreamStart): { state: U; actions: UpstreamAction[] };
  upstreamStep(state: U, input: UpstreamInput): { state: U; actions: UpstreamAction[] };
}
