// The IMAP descriptor: what the driver needs to run an IMAP session without knowing it is IMAP.

import type { ProtocolMachine } from "../types.ts";
import { compileImap, IMAP_INTERNAL_ERROR, type ImapState, pendingImap, startImap, stepImap } from "./session.ts";
import { type ImapUpstreamState, startImapUpstream, stepImapUpstream } from "./upstream.ts";

export const imap: ProtocolMachine<ImapState, ImapUpstreamState> = {
  name: "imap",
  internalError: IMAP_INTERNAL_ERROR,
  certError: "* BYE SSL certificate error\r\n",
  noCertError: "* BYE No required SSL certificate\r\n",
  resolvesClient: false,
  compile: compileImap,
  start: startImap,
  step: stepImap,
  pending: pendingImap,
  upstreamStart: startImapUpstream,
  upstreamStep: stepImapUpstream,
};
