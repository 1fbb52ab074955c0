// The SMTP descriptor: what the driver needs to run an SMTP session without knowing it is SMTP.

import type { ProtocolMachine } from "../types.ts";
import { compileSmtp, pendingSmtp, SMTP_INTERNAL_ERROR, type SmtpState, startSmtp, stepSmtp } from "./session.ts";
import { type SmtpUpstreamState, startSmtpUpstream, stepSmtpUpstream } from "./upstream.ts";

export const smtp: ProtocolMachine<SmtpState, SmtpUpstreamState> = {
  name: "smtp",
  internalError: SMTP_INTERNAL_ERROR,
  certError: "421 4.7.1 SSL certificate error\r\n",
  noCertError: "421 4.7.1 No required SSL certificate\r\n",
  resolvesClient: true, // nginx looks up the client's name before the SMTP greeting (resolver)
  compile: compileSmtp,
  start: startSmtp,
  step: stepSmtp,
  pending: pendingSmtp,
  upstreamStart: startSmtpUpstream,
  upstreamStep: stepSmtpUpstream,
};
