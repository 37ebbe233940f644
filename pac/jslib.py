# ruff: noqa: E501  (embedded JavaScript: its lines follow JS layout, not Python's)
"""The JavaScript side of the engine: our PAC helper functions and the evaluation harness.

One implementation shared by both engines, so the same script gets the same answer on
pacparser and dukpy. pacparser's built-in helpers are replaced (they deviate from browsers,
and its `dnsResolve`/`myIpAddress` do real, blocking lookups); dukpy's host bindings
(`process.env`, `require`, `call_python`, `console`) are removed, so a script can neither
read the proxy's environment nor reach Python or the file system.

Semantics follow Chromium (services/proxy_resolver: pac_js_library.h for the JS helpers,
proxy_resolver_v8.cc for the native ones), quirks included: the helpers below were written
to perform the same operations in the same order, so edge cases (date roll-over, `in` on
plain objects, `'GMT'` as a flag) give the same answers. Where a helper calls another one,
it does so through the global name, as in browsers, so a script that redefines
`dnsResolve` changes `isInNet` too.

DNS is never done here. The harness answers from a table the host (Python) supplies; a name
that is not in the table is recorded as a *miss* and fails for this run. The host then
resolves the misses and runs the evaluation again with the answers (Chromium's
ProxyResolverV8Tracing restarts an evaluation the same way), so one mechanism works for
both engines and across the worker-process boundary.

Everything the script could use to observe the outside world is recorded: names looked up
(and the answers), whether it read the clock (`Date`, time helpers), its own address or
`Math.random`, so a decision cache can be keyed on exactly what a result depends on.
"""

from __future__ import annotations

#: Name of the global entry point pacparser calls (`pacparser_find_proxy` evaluates
#: `findProxyForURL(url, host)`); we own it, in both engines, so they behave alike.
ENTRY = "findProxyForURL"
#: Loads the user's script inside try/catch so syntax errors come back with a line.
LOADER = "__pacLoad"

#: Longest result string we accept; anything longer is a memory abuse, not a proxy list.
MAX_RESULT_CHARS = 64 * 1024
#: At most this many `alert()` messages, each cut to this many characters, per evaluation.
MAX_ALERTS = 50
MAX_ALERT_CHARS = 1000
#: Distinct names one evaluation may look up (Chromium caps DNS per execution, too).
MAX_NAMES = 32

HARNESS_JS = r"""
(function (G) {
"use strict";
// Captured before the user's script runs, so redefining a built-in cannot break the harness.
var RealDate = G.Date, apply = Reflect.apply, construct = Reflect.construct, jsonStringify = JSON.stringify,
    realRandom = Math.random, geval = G.eval,
    objectKeys = Object.keys, defineProperty = Object.defineProperty,
    isArray = Array.isArray, StringCtor = String, MapCtor = Map,
    mapGet = Map.prototype.get, mapHas = Map.prototype.has, mapSet = Map.prototype.set,
    strCharCode = String.prototype.charCodeAt, strSlice = String.prototype.slice,
    strIndexOf = String.prototype.indexOf, strSplit = String.prototype.split,
    strReplace = String.prototype.replace, regexExec = RegExp.prototype.exec,
    arrPush = Array.prototype.push, arrJoin = Array.prototype.join;

var MAX_RESULT = __MAX_RESULT__, MAX_ALERTS = __MAX_ALERTS__, MAX_ALERT_CHARS = __MAX_ALERT__,
    MAX_NAMES = __MAX_NAMES__;

// `h`: the table is all there is (no resolver behind it), so a miss is final (see lookupAll).
var env = { dns: new MapCtor(), my: [], now: null, h: false };
var reads = null;

// Allocated lazily: most evaluations read nothing but their arguments.
function resetReads() {
  reads = { d: null, seen: null, miss: null, c: false, i: false, x: false, a: null, n: 0, u: false };
}
resetReads();

function push(arr, v) { apply(arrPush, arr, [v]); }

function setEnv(e) {
  var m = new MapCtor();
  var dns = e.dns || {};
  var keys = objectKeys(dns);
  for (var i = 0; i < keys.length; i++) apply(mapSet, m, [keys[i], dns[keys[i]]]);
  env = { dns: m, my: isArray(e.my) ? e.my : [], now: typeof e.now === "number" ? e.now : null,
          h: e.h === true };
}

function nowMs() {
  reads.c = true;
  return env.now === null ? apply(RealDate.now, RealDate, []) : env.now;
}
function nowDate() { return new RealDate(nowMs()); }

// ---- the clock the script sees -------------------------------------------------------------
function PacDate() {
  if (!new.target) return StringCtor(new RealDate(nowMs()));
  return arguments.length === 0 ? construct(RealDate, [nowMs()], new.target)
                                : construct(RealDate, arguments, new.target);
}
PacDate.prototype = RealDate.prototype;
PacDate.now = function now() { return nowMs(); };
PacDate.parse = RealDate.parse;
PacDate.UTC = RealDate.UTC;
defineProperty(RealDate.prototype, "constructor", { value: PacDate, writable: true, configurable: true });
G.Date = PacDate;
Math.random = function random() { reads.x = true; return realRandom(); };
// Host bindings that are not part of the PAC environment (and would leak or print).
var hostGlobals = ["console", "performance", "queueMicrotask", "process", "require", "dukpy",
                   "call_python", "_dukpy_cjs_source_compiles", "_dukpy_eval_cjs_source",
                   "convert_addr6", "isInNetEx4", "isInNetEx6", "setTimeout", "setInterval",
                   "print", "std", "os"];
for (var h = 0; h < hostGlobals.length; h++) { try { delete G[hostGlobals[h]]; } catch (e) {} }

// ---- addresses ----------------------------------------------------------------------------
function asciiLower(s) {
  return apply(strReplace, s, [/[A-Z]/g, function (c) { return StringCtor.fromCharCode(apply(strCharCode, c, [0]) + 32); }]);
}
var NON_ASCII = /[^\x00-\x7f]/;
function isAscii(s) { return apply(regexExec, NON_ASCII, [s]) === null; }
// Strict dotted-quad IPv4 literal -> 4 bytes, else null.
function parseV4(s) {
  var m = apply(regexExec, /^(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$/, [s]);
  if (m === null) return null;
  var b = [+m[1], +m[2], +m[3], +m[4]];
  for (var i = 0; i < 4; i++) if (b[i] > 255) return null;
  return b;
}
// IPv6 literal (RFC 4291 text form, optional dotted-quad tail, no zone) -> 16 bytes, else null.
// The longest literal is 45 characters (six full groups and a dotted quad): anything longer
// is refused before it is split, so a long string of colons costs nothing.
function parseV6(s) {
  if (typeof s !== "string" || s.length > 45 || apply(strIndexOf, s, [":"]) < 0) return null;
  var tail = null, dbl = apply(strIndexOf, s, ["::"]);
  if (dbl >= 0 && apply(strIndexOf, s, ["::", dbl + 1]) >= 0) return null;
  var head = dbl >= 0 ? apply(strSlice, s, [0, dbl]) : s;
  var rest = dbl >= 0 ? apply(strSlice, s, [dbl + 2]) : "";
  function groups(part) {
    if (part === "") return [];
    var p = apply(strSplit, part, [":"]), out = [];
    for (var i = 0; i < p.length; i++) {
      if (i === p.length - 1 && apply(strIndexOf, p[i], ["."]) >= 0) {
        var v4 = parseV4(p[i]);
        if (v4 === null) return null;
        tail = v4;
        continue;
      }
      if (apply(regexExec, /^[0-9A-Fa-f]{1,4}$/, [p[i]]) === null) return null;
      push(out, parseInt(p[i], 16));
    }
    return out;
  }
  var hg = groups(head);
  if (hg === null || (dbl >= 0 && tail !== null)) return null;
  var rg = groups(rest);
  if (rg === null) return null;
  var words = hg.length + rg.length + (tail !== null ? 2 : 0);
  if (dbl >= 0 ? words > 7 : words !== 8) return null;
  var all = hg.slice();
  for (var z = 0; z < (dbl >= 0 ? 8 - words : 0); z++) push(all, 0);
  for (var r = 0; r < rg.length; r++) push(all, rg[r]);
  if (tail !== null) { push(all, tail[0] * 256 + tail[1]); push(all, tail[2] * 256 + tail[3]); }
  var bytes = [];
  for (var w = 0; w < 8; w++) { push(bytes, all[w] >> 8); push(bytes, all[w] & 255); }
  return bytes;
}
// RFC 5952 text of 16 bytes (lower case, longest zero run of 2+ words compressed).
function formatV6(b) {
  var w = [], bestAt = -1, bestLen = 1, runAt = -1;
  for (var i = 0; i < 8; i++) push(w, b[2 * i] * 256 + b[2 * i + 1]);
  for (var j = 0; j <= 8; j++) {
    if (j < 8 && w[j] === 0) { if (runAt < 0) runAt = j; }
    else if (runAt >= 0) { if (j - runAt > bestLen) { bestAt = runAt; bestLen = j - runAt; } runAt = -1; }
  }
  var parts = [];
  for (var k = 0; k < 8; k++) {
    if (k === bestAt) { push(parts, k === 0 ? ":" : ""); k += bestLen - 1; if (k === 7) push(parts, ""); continue; }
    push(parts, w[k].toString(16));
  }
  return apply(arrJoin, parts, [":"]);
}
function parseIp(s) {
  var v4 = parseV4(s);
  if (v4 !== null) return v4;
  return parseV6(s);
}

// Every address a name has, in resolver order, or null when it does not resolve (or is a
// miss the host will answer on the next run). IP literals resolve to themselves.
function lookupAll(name) {
  if (parseV4(name) !== null) return [name];
  var v6 = parseV6(name);
  if (v6 !== null) return [formatV6(v6)];
  var key = isAscii(name) ? asciiLower(name) : name;
  if (reads.seen === null) { reads.seen = new MapCtor(); reads.d = []; reads.miss = []; }
  if (apply(mapHas, reads.seen, [key])) return apply(mapGet, reads.seen, [key]);
  var answer = null;
  if (apply(mapHas, env.dns, [key])) {
    answer = apply(mapGet, env.dns, [key]);
    push(reads.d, [key, answer]);
  } else if (reads.n < MAX_NAMES) {
    push(reads.miss, key);
    reads.n++;
    // With a fixed table, a name spelled canonically (as the host's table keys are) that the
    // table lacks does not resolve, and the host would only record that: settled here
    // (`envelope`). Another spelling (upper case, a trailing dot, non-ASCII) is the host's
    // to canonicalise and look up.
    if (!env.h || key.length > 253 || apply(regexExec, CANONICAL_NAME, [key]) === null) reads.u = true;
  }
  if (answer !== null && answer.length === 0) answer = null;
  apply(mapSet, reads.seen, [key, answer]);
  return answer;
}
var CANONICAL_NAME = /^[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*$/;
function firstV4(list) {
  if (list === null) return null;
  for (var i = 0; i < list.length; i++) if (parseV4(list[i]) !== null) return list[i];
  return null;
}

// ---- native helpers in Chromium (proxy_resolver_v8.cc) ----------------------------------------
G.isPlainHostName = function isPlainHostName(host) {
  if (typeof host !== "string") throw new TypeError("Requires 1 string parameter");
  return apply(strIndexOf, host, ["."]) < 0 && parseV6(host) === null;
};
G.dnsResolve = function dnsResolve(host) {
  if (typeof host !== "string") return null;
  return firstV4(lookupAll(host));
};
G.dnsResolveEx = function dnsResolveEx(host) {
  if (typeof host !== "string") return undefined;
  var all = lookupAll(host);
  return all === null ? "" : apply(arrJoin, all, [";"]);
};
G.myIpAddress = function myIpAddress() {
  reads.i = true;
  // Chromium: IPv4 first, else the first address known (IPv6), 127.0.0.1 only with none.
  var ip = firstV4(env.my);
  if (ip === null && env.my.length > 0) ip = env.my[0];
  return ip === null ? "127.0.0.1" : ip;
};
G.myIpAddressEx = function myIpAddressEx() {
  reads.i = true;
  return apply(arrJoin, env.my, [";"]);
};
G.alert = function alert(msg) {
  var text;
  try { text = arguments.length === 0 ? "undefined" : StringCtor(msg); } catch (e) { return; }
  if (reads.a === null) reads.a = [];
  if (reads.a.length < MAX_ALERTS) push(reads.a, apply(strSlice, text, [0, MAX_ALERT_CHARS]));
};
function compareBytes(a, b) {
  if (a.length !== b.length) return a.length > b.length ? -1 : 1;  // IPv6 before IPv4
  for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}
G.sortIpAddressList = function sortIpAddressList(list) {
  if (typeof list !== "string" || !isAscii(list)) return null;
  var cleaned = apply(strReplace, list, [/[ \t]/g, ""]);
  if (cleaned === "") return false;
  var tokens = apply(strSplit, cleaned, [";"]), entries = [];
  for (var i = 0; i < tokens.length; i++) {
    if (tokens[i] === "") continue;
    var b = parseIp(tokens[i]);
    if (b === null) return false;
    push(entries, { s: tokens[i], b: b, i: i });
  }
  if (entries.length === 0) return false;
  entries.sort(function (x, y) { return compareBytes(x.b, y.b) || x.i - y.i; });
  var out = [];
  for (var k = 0; k < entries.length; k++) push(out, entries[k].s);
  return apply(arrJoin, out, [";"]);
};
// ::ffff:a.b.c.d as 16 bytes (built with the captured push: the helper is native in
// Chromium, so a script that redefines Array methods must not change its answers).
var ASCII_TRIM = /^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g;
function mappedV6(v4) {
  var out = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255];
  for (var i = 0; i < 4; i++) push(out, v4[i]);
  return out;
}
G.isInNetEx = function isInNetEx(ip, prefix) {
  if (typeof ip !== "string" || typeof prefix !== "string") return null;
  if (!isAscii(ip) || !isAscii(prefix)) return false;
  var addr = parseIp(ip);
  if (addr === null) return false;
  // Chromium's ParseCIDRBlock: exactly one "/", ASCII whitespace around either part
  // ignored, the length in decimal digits (leading zeros allowed), at most the address's bits.
  var parts = apply(strSplit, prefix, ["/"]);
  if (parts.length !== 2) return false;
  var net = parseIp(apply(strReplace, parts[0], [ASCII_TRIM, ""]));
  var lenMatch = apply(regexExec, /^0*([0-9]{1,3})$/, [apply(strReplace, parts[1], [ASCII_TRIM, ""])]);
  if (net === null || lenMatch === null) return false;
  var bits = +lenMatch[1];
  if (bits > net.length * 8) return false;
  // Mixed families (Chromium's IPAddressMatchesPrefix): the IPv4 side becomes its
  // IPv4-mapped IPv6 form (::ffff:a.b.c.d), and an IPv4 prefix gets 96 more bits. So
  // "::/0" and "::ffff:0:0/96" match every IPv4 address too (lint warns about such prefixes).
  if (addr.length !== net.length) {
    if (addr.length === 4) addr = mappedV6(addr);
    else { net = mappedV6(net); bits += 96; }
  }
  for (var i = 0; i < bits; i++) {
    var m = 128 >> (i % 8);
    if ((addr[i >> 3] & m) !== (net[i >> 3] & m)) return false;
  }
  return true;
};

// ---- the JavaScript library (pac_js_library.h semantics) ------------------------------------
G.dnsDomainIs = function dnsDomainIs(host, domain) {
  return host.length >= domain.length &&
         host.substring(host.length - domain.length) == domain;
};
G.dnsDomainLevels = function dnsDomainLevels(host) { return host.split(".").length - 1; };
G.isValidIpAddress = function isValidIpAddress(ipchars) {
  var m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ipchars);
  if (m == null) return false;
  return !(m[1] > 255 || m[2] > 255 || m[3] > 255 || m[4] > 255);
};
G.convert_addr = function convert_addr(ipchars) {
  var b = ipchars.split(".");
  return ((b[0] & 0xff) << 24) | ((b[1] & 0xff) << 16) | ((b[2] & 0xff) << 8) | (b[3] & 0xff);
};
G.isInNet = function isInNet(ipaddr, pattern, maskstr) {
  if (!isValidIpAddress(pattern) || !isValidIpAddress(maskstr)) return false;
  if (!isValidIpAddress(ipaddr)) {
    ipaddr = dnsResolve(ipaddr);
    if (ipaddr == null) return false;
  }
  var a = convert_addr(ipaddr), p = convert_addr(pattern), m = convert_addr(maskstr);
  return (a & m) == (p & m);
};
G.isResolvable = function isResolvable(host) { return dnsResolve(host) != null; };
G.isResolvableEx = function isResolvableEx(host) { return dnsResolveEx(host) != ""; };
G.localHostOrDomainIs = function localHostOrDomainIs(host, hostdom) {
  return host == hostdom || hostdom.lastIndexOf(host + ".", 0) == 0;
};
// Chromium turns the glob into a regular expression (`.` escaped, `*` -> `.*`, `?` -> `.`,
// anchored) and runs it on a backtracking engine: with a few `*`, a name the client chooses
// makes that take exponential time. A pattern whose only syntax is `*` and `?` (nearly all)
// is matched by `globMatch` instead, with the regular expression's answers in time
// proportional to the string's length times the pattern's. Anything else keeps the
// regular expression, as in Chromium, which honours `[a-z]`, `(a|b)`, `+`... in patterns.
var REGEX_SYNTAX = /[\\^$+()[\]{}|]/, LINE_END = /[\n\r\u2028\u2029]/;
function isLineEnd(c) { return c === "\n" || c === "\r" || c === "\u2028" || c === "\u2029"; }
// Patterns seen, split at `*` (null: keeps the regex); a script's patterns are few and
// constant, and the host it matches them against is the same string call after call.
// String methods are called directly here (the engine is slow at `Reflect.apply`): a script
// that redefines them changes only its own answers, as it can in Chromium's shExpMatch.
var globs = Object.create(null), globCount = 0, GLOB_CACHE = 512;
var lastText = null, lastHasLineEnd = false;
function compileGlob(p) {
  var g = globs[p];
  if (g !== undefined) return g;
  g = null;
  if (!REGEX_SYNTAX.test(p)) {
    g = { segs: p.split("*"), q: [] };
    for (var i = 0; i < g.segs.length; i++) g.q[i] = g.segs[i].indexOf("?") >= 0;
  }
  if (++globCount > GLOB_CACHE) { globs = Object.create(null); globCount = 1; }
  globs[p] = g;
  return g;
}
// Does `seg` (literals and `?`) match `s` at `pos`? (`s` has no line terminator here.)
function segAt(s, pos, seg, hasQ) {
  if (!hasQ) return s.startsWith(seg, pos);
  if (pos + seg.length > s.length) return false;
  for (var k = 0; k < seg.length; k++) if (seg[k] !== "?" && seg[k] !== s[pos + k]) return false;
  return true;
}
function segFind(s, seg, hasQ, from, end) {
  if (!hasQ) return s.indexOf(seg, from);
  for (var pos = from; pos + seg.length <= end; pos++) if (segAt(s, pos, seg, true)) return pos;
  return -1;
}
// No line terminator in `s` (the usual case): the pieces between `*` in order, the first at
// the start, the last at the end, each other one at its leftmost place after the previous
// one (a later place never helps), so nothing is ever tried twice.
function globMatch(s, p, g) {
  if (s !== lastText) { lastText = s; lastHasLineEnd = LINE_END.test(s); }
  if (lastHasLineEnd) return globMatchLines(s, p);
  var segs = g.segs, q = g.q, k = segs.length, n = s.length;
  if (k === 1) return n === segs[0].length && segAt(s, 0, segs[0], q[0]);
  var first = segs[0], last = segs[k - 1], end = n - last.length;
  if (end < first.length || !segAt(s, 0, first, q[0]) || !segAt(s, end, last, q[k - 1])) return false;
  var pos = first.length;
  for (var i = 1; i < k - 1; i++) {
    var seg = segs[i];
    if (seg === "") continue;
    var at = segFind(s, seg, q[i], pos, end);
    if (at < 0 || at + seg.length > end) return false;
    pos = at + seg.length;
  }
  return true;
}
// A string with line terminators: the pattern as a set of states, advanced one character
// at a time (no backtracking at all).
function globMatchLines(s, p) {
  var n = s.length, m = p.length, cur = [], next, i, j, c, any;
  function close(set) { for (var k = 0; k < m; k++) if (set[k] && p[k] === "*") set[k + 1] = true; }
  for (j = 0; j <= m; j++) push(cur, j === 0);
  close(cur);
  for (i = 0; i < n; i++) {
    c = s[i];
    next = [];
    any = false;
    for (j = 0; j <= m; j++) push(next, false);
    for (j = 0; j < m; j++) {
      if (!cur[j]) continue;
      if (p[j] === "*") { if (!isLineEnd(c)) next[j] = any = true; }
      else if (p[j] === "?" ? !isLineEnd(c) : p[j] === c) next[j + 1] = any = true;
    }
    if (!any) return false;
    close(next);
    cur = next;
  }
  return cur[m];
}
G.shExpMatch = function shExpMatch(url, pattern) {
  var g = typeof url === "string" && typeof pattern === "string" ? compileGlob(pattern) : null;
  if (g !== null) return globMatch(url, pattern, g);
  var re = pattern.replace(/\./g, "\\.").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp("^" + re + "$").test(url);
};
// Globals in browsers too; the helpers keep private copies so a script cannot break them.
var WDAYS = {SUN: 0, MON: 1, TUE: 2, WED: 3, THU: 4, FRI: 5, SAT: 6};
var MONTHS = {JAN: 0, FEB: 1, MAR: 2, APR: 3, MAY: 4, JUN: 5, JUL: 6, AUG: 7, SEP: 8, OCT: 9,
              NOV: 10, DEC: 11};
G.wdays = {SUN: 0, MON: 1, TUE: 2, WED: 3, THU: 4, FRI: 5, SAT: 6};
G.months = {JAN: 0, FEB: 1, MAR: 2, APR: 3, MAY: 4, JUN: 5, JUL: 6, AUG: 7, SEP: 8, OCT: 9,
            NOV: 10, DEC: 11};
function dayIndex(d) { return d in WDAYS ? WDAYS[d] : -1; }
function monthIndex(m) { return m in MONTHS ? MONTHS[m] : -1; }
// Browsers turn `date` into "local fields equal to the UTC fields" one setter at a time.
function utcAsLocal(d) {
  d.setFullYear(d.getUTCFullYear());
  d.setMonth(d.getUTCMonth());
  d.setDate(d.getUTCDate());
  d.setHours(d.getUTCHours());
  d.setMinutes(d.getUTCMinutes());
  d.setSeconds(d.getUTCSeconds());
  return d;
}
function inRange(lo, hi, t) { return lo <= hi ? (lo <= t && t <= hi) : (hi >= t || t >= lo); }
G.weekdayRange = function weekdayRange() {
  var argc = arguments.length;
  if (argc < 1) return false;
  var now = nowDate(), wday;
  if (arguments[argc - 1] == "GMT") { argc--; wday = now.getUTCDay(); } else { wday = now.getDay(); }
  var d1 = dayIndex(arguments[0]);
  var d2 = argc == 2 ? dayIndex(arguments[1]) : d1;
  if (d1 == -1 || d2 == -1) return false;
  return d1 <= d2 ? (d1 <= wday && wday <= d2) : (d2 >= wday || wday >= d1);
};
G.dateRange = function dateRange() {
  var now = nowDate(), argc = arguments.length, i, v;
  if (argc < 1) return false;
  var isGMT = arguments[argc - 1] == "GMT";
  if (isGMT) argc--;
  if (argc == 1) {
    v = parseInt(arguments[0]);
    if (isNaN(v)) return (isGMT ? now.getUTCMonth() : now.getMonth()) == monthIndex(arguments[0]);
    if (v < 32) return (isGMT ? now.getUTCDate() : now.getDate()) == v;
    return (isGMT ? now.getUTCFullYear() : now.getFullYear()) == v;
  }
  var year = now.getFullYear();
  var lo = new RealDate(year, 0, 1, 0, 0, 0), hi = new RealDate(year, 11, 31, 23, 59, 59);
  var adjustMonth = false, half = argc >> 1;
  for (i = 0; i < half; i++) {
    v = parseInt(arguments[i]);
    if (isNaN(v)) lo.setMonth(monthIndex(arguments[i]));
    else if (v < 32) { adjustMonth = argc <= 2; lo.setDate(v); }
    else lo.setFullYear(v);
  }
  for (i = half; i < argc; i++) {
    v = parseInt(arguments[i]);
    if (isNaN(v)) hi.setMonth(monthIndex(arguments[i]));
    else if (v < 32) hi.setDate(v);
    else hi.setFullYear(v);
  }
  if (adjustMonth) { lo.setMonth(now.getMonth()); hi.setMonth(now.getMonth()); }
  if (isGMT) now = utcAsLocal(now);
  return inRange(lo, hi, now);
};
G.timeRange = function timeRange() {
  var argc = arguments.length, now = nowDate(), isGMT = false;
  if (argc < 1) return false;
  if (arguments[argc - 1] == "GMT") { isGMT = true; argc--; }
  var hour = isGMT ? now.getUTCHours() : now.getHours();
  var lo = nowDate(), hi = nowDate();
  if (argc == 1) return hour == arguments[0];
  if (argc == 2) return arguments[0] <= hour && hour <= arguments[1];
  if (argc != 4 && argc != 6) throw "timeRange: bad number of arguments";
  if (argc == 6) { lo.setSeconds(arguments[2]); hi.setSeconds(arguments[5]); }
  var mid = argc >> 1;
  lo.setHours(arguments[0]);
  lo.setMinutes(arguments[1]);
  hi.setHours(arguments[mid]);
  hi.setMinutes(arguments[mid + 1]);
  if (mid == 2) hi.setSeconds(59);
  if (isGMT) now = utcAsLocal(now);
  return inRange(lo, hi, now);
};

// ---- loading and calling ------------------------------------------------------------------
function describe(e) {
  try {
    if (e !== null && typeof e === "object" && typeof e.name === "string" && typeof e.message === "string")
      return e.name + ": " + e.message;
    return StringCtor(e);
  } catch (x) { return "(an exception that cannot be printed)"; }
}
function lineOf(e) {
  try {
    var st = e !== null && typeof e === "object" ? e.stack : null;
    if (typeof st !== "string") return null;
    var m = apply(regexExec, /<input>:(\d+)(?::\d+)?/, [st]);
    return m === null ? null : +m[1];
  } catch (x) { return null; }
}
function errorKind(e) {
  var d = describe(e);
  if (d === "InternalError: out of memory" || d === "InternalError: string too long" ||
      d === "RangeError: invalid array length") return "memory";
  return "exception";
}
function envelope(out) {
  if (typeof out.r === "string" && reads.seen === null && reads.a === null && !reads.c && !reads.i && !reads.x)
    return '{"r":' + jsonStringify(out.r) + "}";  // the common case, cheaply
  if (reads.seen !== null) {
    if (!reads.u) {  // every miss is settled (lookupAll): read, did not resolve, after the others
      for (var i = 0; i < reads.miss.length; i++) push(reads.d, [reads.miss[i], []]);
      reads.miss = [];
    }
    out.d = reads.d; out.miss = reads.miss;
  }
  if (reads.a !== null) out.a = reads.a;
  out.c = reads.c; out.i = reads.i; out.x = reads.x;
  return jsonStringify(out);
}
// Chromium's words, and what the name holds when it is there but not a function.
function noEntryMessage() {
  var t = typeof G.FindProxyForURL;
  return "FindProxyForURL() is undefined" + (t === "undefined" ? "" : " (it is a " + t + ", not a function)");
}
var loadResult = null;
function load(src) {
  if (src === "") return envelope({ k: "script_error", m: "the PAC script is empty", l: null });
  try { geval(src); }
  catch (err) {
    var kind = errorKind(err);
    return envelope({ k: kind === "memory" ? "memory" : "script_error", m: describe(err), l: lineOf(err) });
  }
  // Chromium calls FindProxyForURL only (a script with FindProxyForURLEx alone does not
  // load there either: pacparser and WinHTTP would call it, a browser never does).
  if (typeof G.FindProxyForURL !== "function")
    return envelope({ k: "no_entrypoint", m: noEntryMessage(), l: null });
  return envelope({ k: null });
}
// Loads the user's script (indirect eval: global scope) and keeps the outcome, which
// pacparser can only fetch through findProxyForURL (with the url "\x01load").
defineProperty(G, "__pacLoad", { writable: false, configurable: false, enumerable: false,
  value: function (src, e) {
    setEnv(e || {});
    resetReads();
    loadResult = load(src);
    return loadResult;
  } });
// pacparser declares findProxyForURL itself (non-configurable): replace its value and make it
// read-only without touching the other attributes, which is allowed either way.
defineProperty(G, "__pacEnv", { writable: false, configurable: false, enumerable: false,
  value: function (e) { setEnv(e); } });
defineProperty(G, "findProxyForURL", { writable: false,
  value: function (url, host) {
    if (url === "\x01load") return loadResult;
    resetReads();
    var fn = G.FindProxyForURL;
    if (typeof fn !== "function")
      return envelope({ r: null, k: "no_entrypoint", m: noEntryMessage() });
    var r;
    try { r = apply(fn, G, [url, host]); }
    catch (err) { return envelope({ r: null, k: errorKind(err), m: describe(err), l: lineOf(err) }); }
    if (typeof r !== "string")
      return envelope({ r: null, k: "non_string",
                        m: "FindProxyForURL() did not return a string (got " + (r === null ? "null" : typeof r) + ")" });
    if (r.length > MAX_RESULT)
      return envelope({ r: null, k: "memory", m: "FindProxyForURL() returned " + r.length + " characters" });
    if (!isAscii(r))
      return envelope({ r: null, k: "non_ascii", m: "FindProxyForURL() returned a non-ASCII string: " + apply(strSlice, r, [0, 200]) });
    return envelope({ r: r, k: null });
  } });
})(globalThis);
"""


def harness_js() -> str:
    """The harness with its limits filled in (one source of truth for the numbers)."""
    return (
        HARNESS_JS.replace("__MAX_RESULT__", str(MAX_RESULT_CHARS))
        .replace("__MAX_ALERTS__", str(MAX_ALERTS))
        .replace("__MAX_ALERT__", str(MAX_ALERT_CHARS))
        .replace("__MAX_NAMES__", str(MAX_NAMES))
    )
