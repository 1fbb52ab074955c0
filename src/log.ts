// Logs in nginx's error-log format (so fail2ban and CrowdSec rules for nginx mail keep working)
// or one JSON object per line. The core never writes anywhere itself: lines go to an injected sink.

import type { LogLevel, LogTarget } from "./config/types.ts";
import { escapeForLog } from "./util/bytes.ts";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, notice: 2, warn: 3, error: 4, crit: 5, alert: 6, emerg: 7 };

/** What a session line carries once known; nginx appends these after the message. */
export interface SessionLogContext {
  readonly sid: number;
  readonly proto: string;
  client: string; // address only, as nginx's "client:" (the PROXY protocol may replace it)
  readonly server: string; // listen address "host:port"
  login?: string;
  upstream?: string;
  action?: string; // nginx's "while ..." phrase
  readonly bare?: boolean; // "*N message" without the client/server suffix (the "connected" line)
}

export type LogSink = (dest: string, line: string) => void;

export interface Logger {
  log(level: LogLevel, message: string, session?: SessionLogContext): void;
  enabled(level: LogLevel): boolean;
}

function pad(n: number, w = 2): string {
  return String(n).padStart(w, "0");
}

function nginxTime(d: Date): string {
  return `${d.getFullYear()}/${pad(d.getMonth() + 1)}/${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatText(level: LogLevel, message: string, pid: number, at: Date, s?: SessionLogContext): string {
  let line = `${nginxTime(at)} [${level}] ${pid}#0: `;
  if (!s) return line + message;
  line += `*${s.sid} ${message}`;
  if (s.bare) return line;
  if (s.action) line += ` while ${s.action}`;
  line += `, client: ${s.client}, server: ${s.server}`;
  if (s.login !== undefined && s.login !== "") line += `, login: "${escapeForLog(s.login)}"`;
  if (s.upstream) line += `, upstream: ${s.upstream}`;
  return line;
}

export function formatJson(level: LogLevel, message: string, pid: number, at: Date, s?: SessionLogContext): string {
  const o: Record<string, unknown> = { time: at.toISOString(), level, pid };
  if (s) {
    o.sid = s.sid;
    o.proto = s.proto;
    o.client = s.client;
    o.server = s.server;
    if (s.login !== undefined && s.login !== "") o.login = escapeForLog(s.login);
    if (s.upstream) o.upstream = s.upstream;
    if (s.action) o.phase = s.action;
  }
  o.msg = message;
  return JSON.stringify(o);
}

export function createLogger(targets: readonly LogTarget[], sink: LogSink, pid: number, now: () => Date = () => new Date()): Logger {
  const min = Math.min(...targets.map((t) => RANK[t.level]));
  return {
    enabled: (level) => RANK[level] >= min,
    log(level, message, session) {
      if (RANK[level] < min) return;
      const at = now();
      for (const t of targets) {
        if (RANK[level] < RANK[t.level]) continue;
        const line = t.format === "json" ? formatJson(level, message, pid, at, session) : formatText(level, message, pid, at, session);
        sink(t.dest, line);
      }
    },
  };
}
