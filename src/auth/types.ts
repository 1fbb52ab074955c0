// The auth_http exchange in both directions, in nginx's terms.

import type { AuthMethod } from "../protocol/types.ts";

/** What nginx puts in an auth_http request, before escaping. Strings are latin1 (one char per byte). */
export interface AuthQuery {
  readonly method: AuthMethod;
  readonly user: string;
  readonly pass: string;
  readonly salt?: string;
  readonly protocol: "imap" | "pop3" | "smtp";
  readonly loginAttempt: number;
  readonly clientIp: string;
  readonly clientHost?: string;
  readonly proxyProtocol?: { readonly addr: string; readonly port: number; readonly serverAddr: string; readonly serverPort: number };
  readonly smtp?: { readonly helo: string; readonly from: string; readonly to: string };
  readonly ssl?: {
    readonly protocol?: string;
    readonly cipher?: string;
    readonly verify?: string; // SUCCESS, FAILED:reason, NONE
    readonly subject?: string;
    readonly issuer?: string;
    readonly serial?: string;
    readonly fingerprint?: string;
    readonly cert?: string; // PEM, when auth_http_pass_client_cert is on
  };
}

/** The response headers nginx reads; absent headers are undefined. */
export interface AuthReply {
  readonly status?: string;
  readonly server?: string;
  readonly port?: string;
  readonly user?: string;
  readonly pass?: string;
  readonly wait?: string;
  readonly errorCode?: string;
}

export interface AuthService {
  ask(query: AuthQuery): Promise<AuthReply>;
}
