// A realistic corporate PAC for benchmarks: 60+ rules over bypass lists, internal
// domains, partner proxies, blocked destinations, address ranges and schemes.
// DNS is only consulted for IP literals, so the baseline loop does no real lookups.
var PROXY = "PROXY proxy1.corp.example:8080; PROXY proxy2.corp.example:8080";
var PARTNER = "PROXY partner-gw.corp.example:3128";
var DEV = "PROXY dev-proxy.corp.example:8888; DIRECT";
var SOCKS = "SOCKS5 socks.corp.example:1080";
var BLOCK = "PROXY reject.docker.internal:1";

var bypassDomains = [".corp.example", ".intranet.example", ".lab.example", ".hr.example",
  ".finance.example", ".wiki.example", ".jira.example", ".git.example", ".ci.example",
  ".monitoring.example", ".printers.example", ".vpn.example"];
var partnerDomains = [".supplier-a.example", ".supplier-b.example", ".bank.example",
  ".insurer.example", ".auditor.example", ".logistics.example"];
var devHosts = ["registry.npmjs.example", "pypi.example", "proxy.golang.example",
  "repo.maven.example", "rubygems.example", "crates.example", "hub.docker.example",
  "ghcr.example", "quay.example"];
var blocked = [".ads.example", ".tracking.example", ".malware.example", ".phishing.example",
  ".coinminer.example", ".gambling.example"];
var privateNets = [["10.0.0.0", "255.0.0.0"], ["172.16.0.0", "255.240.0.0"],
  ["192.168.0.0", "255.255.0.0"], ["127.0.0.0", "255.0.0.0"], ["169.254.0.0", "255.255.0.0"]];
var socksNets = [["100.64.0.0", "255.192.0.0"], ["198.18.0.0", "255.254.0.0"]];

function anyDomain(h, list) { for (var i = 0; i < list.length; i++) if (dnsDomainIs(h, list[i])) return true; return false; }
function anyHost(h, list) { for (var i = 0; i < list.length; i++) if (h == list[i]) return true; return false; }
function anyNet(ip, nets) { for (var i = 0; i < nets.length; i++) if (isInNet(ip, nets[i][0], nets[i][1])) return true; return false; }
function isIPv4(h) { return /^\d+\.\d+\.\d+\.\d+$/.test(h); }

function FindProxyForURL(url, host) {
  host = host.toLowerCase();
  if (isPlainHostName(host) || host == "localhost") return "DIRECT";
  if (anyDomain(host, blocked)) return BLOCK;
  if (anyDomain(host, bypassDomains)) return "DIRECT";
  if (localHostOrDomainIs(host, "mail.corp.example")) return "DIRECT";
  if (isIPv4(host)) {
    if (anyNet(host, privateNets)) return "DIRECT";
    if (anyNet(host, socksNets)) return SOCKS;
    return url.substring(0, 6) == "https:" ? PROXY : BLOCK;
  }
  if (anyDomain(host, partnerDomains)) return PARTNER;
  if (anyHost(host, devHosts)) return DEV;
  if (shExpMatch(host, "*.s3.*.amazonaws.example")) return PROXY;
  if (shExpMatch(host, "update?.vendor.example")) return "DIRECT";
  if (shExpMatch(url, "http://*:8080")) return DEV;
  if (dnsDomainLevels(host) > 6) return BLOCK;
  if (url.substring(0, 5) == "http:") return PROXY + "; DIRECT";
  return PROXY;
}
