// A DNS-heavy corporate PAC for benchmarks: after a few name rules, most hosts are resolved
// and the answer is matched against internal ranges (dnsResolve, isInNet on the name,
// isResolvable), as many enterprise PACs do. Where DNS fails, most names go to the proxy.
var PROXY = "PROXY proxy1.corp.example:8080; PROXY proxy2.corp.example:8080";
var PARTNER = "PROXY partner-gw.corp.example:3128";
var SOCKS = "SOCKS5 socks.corp.example:1080";
var BLOCK = "PROXY reject.docker.internal:1";

var bypassDomains = [".corp.example", ".intranet.example", ".lab.example", ".hr.example"];
var blocked = [".ads.example", ".tracking.example", ".malware.example", ".phishing.example"];
var partnerDomains = [".supplier-a.example", ".supplier-b.example", ".bank.example"];
var internalNets = [["10.0.0.0", "255.0.0.0"], ["172.16.0.0", "255.240.0.0"],
  ["192.168.0.0", "255.255.0.0"], ["127.0.0.0", "255.0.0.0"], ["169.254.0.0", "255.255.0.0"]];
var socksNets = [["100.64.0.0", "255.192.0.0"], ["198.18.0.0", "255.254.0.0"]];
var blockedNets = [["203.0.113.0", "255.255.255.0"], ["0.0.0.0", "255.0.0.0"]];

function anyDomain(h, list) { for (var i = 0; i < list.length; i++) if (dnsDomainIs(h, list[i])) return true; return false; }
function anyNet(ip, nets) { for (var i = 0; i < nets.length; i++) if (isInNet(ip, nets[i][0], nets[i][1])) return true; return false; }

function FindProxyForURL(url, host) {
  host = host.toLowerCase();
  if (isPlainHostName(host) || host == "localhost") return "DIRECT";
  if (anyDomain(host, blocked)) return BLOCK;
  if (anyDomain(host, bypassDomains)) return "DIRECT";
  if (anyDomain(host, partnerDomains)) return PARTNER;
  // Names in internal address space go direct, wherever they are registered.
  if (isInNet(host, "10.0.0.0", "255.0.0.0")) return "DIRECT";
  var ip = dnsResolve(host);
  if (ip) {
    if (anyNet(ip, internalNets)) return "DIRECT";
    if (anyNet(ip, socksNets)) return SOCKS;
    if (anyNet(ip, blockedNets)) return BLOCK;
  }
  if (!isResolvable(host)) return url.substring(0, 6) == "https:" ? PROXY : PROXY + "; DIRECT";
  if (shExpMatch(host, "*.s3.*.amazonaws.example")) return PROXY;
  return PROXY + "; DIRECT";
}
