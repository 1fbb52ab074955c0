// The POP3 descriptor: what the driver needs to run a POP3 session without knowing it is POP3.

import type { ProtocolMachine } from "../types.ts";
import { compilePop3, pendingPop3, POP3_INTERNAL_ERROR, type Pop3State, startPop3, stepPop3 } from "./session.ts";
import { type Pop3UpstreamState, startPop3Upstream, stepPop3Upstream } from "./upstream.ts";

export const pop3: ProtocolMachine<Pop3State, Pop3UpstreamState> = {
  name: "pop3",
  internalError: POP3_INTERNAL_ERROR,
  certError: "-ERR SSL certificate error\r\n",
  noCertError: "-ERR No required SSL certificate\r\n",
  resolvesClient: false,
  compile: compilePop3,
  start: startPop3,
  step: stepPop3,
  pending: pendingPop3,
  upstreamStart: startPop3Upstream,
  upstreamStep: stepPop3Upstream,
};
