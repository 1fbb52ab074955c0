// The YAML document as a small tree of scalars, lists and maps, each node carrying
// the line and column it was written at. Aliases are resolved here, so the loader
// never sees the yaml package's node classes.

import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
import type { Document } from "yaml";

export interface Pos {
  readonly line: number;
  readonly col: number;
}

export type YScalarValue = string | number | boolean | null;

export interface YScalar {
  readonly kind: "scalar";
  readonly value: YScalarValue;
  /** The scalar as written in the file (numbers keep "0123"); strings: their value. */
  readonly text: string;
  readonly pos: Pos;
}

export interface YSeq {
  readonly kind: "seq";
  readonly items: readonly Y[];
  readonly pos: Pos;
}

export interface YEntry {
  readonly key: string;
  readonly keyPos: Pos;
  readonly value: Y;
}

export interface YMap {
  readonly kind: "map";
  readonly entries: readonly YEntry[];
  readonly pos: Pos;
}

export type Y = YScalar | YSeq | YMap;

export interface YamlProblem {
  readonly pos: Pos;
  readonly message: string;
}

export type YamlResult = { ok: true; root: Y | undefined; warnings: YamlProblem[] } | {
  ok: false;
  errors: YamlProblem[];
};

const MAX_DEPTH = 64; // config nesting is shallow; deeper means an alias loop or a mistake

/** Parses YAML text into a positioned tree; syntax errors come back with their positions. */
export function parseYamlTree(text: string): YamlResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number): Pos => {
    const p = lineCounter.linePos(offset);
    return { line: Math.max(p.line, 1), col: Math.max(p.col, 1) };
  };
  const problems = (list: readonly { pos: [number, number]; message: string }[]) =>
    list.map((e) => ({ pos: at(e.pos[0]), message: firstLine(e.message) }));
  if (doc.errors.length > 0) return { ok: false, errors: problems(doc.errors) };
  const errors: YamlProblem[] = [];
  const root = doc.contents === null ? undefined : toTree(doc.contents, doc, at, { line: 1, col: 1 }, 0, errors);
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, root, warnings: problems(doc.warnings) };
}

function firstLine(message: string): string {
  const m = message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
  return m.charAt(0).toLowerCase() + m.slice(1);
}

function toTree(
  node: unknown,
  doc: Document,
  at: (offset: number) => Pos,
  fallback: Pos,
  depth: number,
  errors: YamlProblem[],
): Y {
  if (depth > MAX_DEPTH) {
    errors.push({ pos: fallback, message: "nesting too deep" });
    return { kind: "scalar", value: null, text: "", pos: fallback };
  }
  if (isAlias(node)) {
    const target = node.resolve(doc);
    const pos = node.range ? at(node.range[0]) : fallback;
    if (target === undefined) {
      errors.push({ pos, message: `unknown alias "*${node.source}"` });
      return { kind: "scalar", value: null, text: "", pos };
    }
    return toTree(target, doc, at, pos, depth + 1, errors);
  }
  const pos = hasRange(node) && node.range ? at(node.range[0]) : fallback;
  if (isScalar(node)) {
    const v = node.value;
    // "key:" with no value: point at the key, as there is nothing else to point at
    if (v === null || v === undefined) return { kind: "scalar", value: null, text: "", pos: fallback };
    if (typeof v === "string" || typeof v === "boolean" || typeof v === "number") {
      const text = typeof v === "string" ? v : node.source ?? String(v);
      return { kind: "scalar", value: v, text, pos };
    }
    errors.push({ pos, message: "unsupported YAML value (binary, timestamp, set?): write it as a plain string" });
    return { kind: "scalar", value: null, text: "", pos };
  }
  if (isSeq(node)) {
    return { kind: "seq", items: node.items.map((i) => toTree(i, doc, at, pos, depth + 1, errors)), pos };
  }
  if (isMap(node)) {
    const entries: YEntry[] = [];
    for (const pair of node.items) {
      if (!isPair(pair)) continue;
      const k = pair.key;
      const keyNode = isAlias(k) ? k.resolve(doc) : k;
      const keyPos = hasRange(k) && k.range ? at(k.range[0]) : pos;
      if (!isScalar(keyNode) || keyNode.value === null || typeof keyNode.value === "object") {
        errors.push({ pos: keyPos, message: "map keys must be plain words" });
        continue;
      }
      const key = String(keyNode.value);
      entries.push({ key, keyPos, value: toTree(pair.value, doc, at, keyPos, depth + 1, errors) });
    }
    return { kind: "map", entries, pos };
  }
  if (node === null || node === undefined) return { kind: "scalar", value: null, text: "", pos: fallback };
  errors.push({ pos, message: "unsupported YAML node" });
  return { kind: "scalar", value: null, text: "", pos };
}

function hasRange(node: unknown): node is { range?: readonly [number, number, number] | null } {
  return typeof node === "object" && node !== null && "range" in node;
}

/** What a node is, for messages: "a list", "a map", or the scalar as written. */
export function describeNode(node: Y): string {
  if (node.kind === "seq") return "a list";
  if (node.kind === "map") return "a map";
  if (node.value === null) return "nothing";
  return typeof node.value === "string" ? JSON.stringify(node.value) : node.text;
}
