"""The rule text, checked without a kernel: what must be there, in which order, and what never.

The e2e tests (tests/e2e/test_firewall.py) prove the same rules on real packets; these pin
the properties that would otherwise only show up as a silent hole.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from rules.redirect_rules import (
    CHAINS,
    GUARD_FWD,
    GUARD_IN,
    GUARD_OUT,
    NAT_OUT,
    NAT_PRE,
    FirewallError,
    FirewallSpec,
    SavedState,
    chain_rules,
    iptables_restore,
    iptables_script,
    multiport_chunks,
    nft_ruleset,
    parse_saved,
    resolvers_from_resolv_conf,
)

EMPTY = SavedState({}, {})

FULL = FirewallSpec(
    ports=((80, 80), (443, 443), (8000, 8100)),
    proxy_port=15001,
    exclude_uids=(1001,),
    from_interfaces=("br0",),
    block_unredirected=True,
    dns_servers=("203.0.113.53", "2001:db8::53"),
    upstreams=(("198.51.100.7", 3128), ("2001:db8::7", 8080)),
)


def lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def chain_lines(text: str, chain: str) -> list[str]:
    return lines(text, f"-A {chain} ")


# ---------------------------------------------------------------- spec validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mark": 0},  # every unmarked packet has mark 0: it would exempt everything
        {"mark": 2**32},
        {"proxy_port": 0},
        {"ports": ((443, 80),)},
        {"ports": ((0, 80),)},
        {"ports": ((80, 65536),)},
        {"from_interfaces": ("br0 -j ACCEPT",)},  # injection into the restore text
        {"from_interfaces": ("br0\n-A OUTPUT",)},
        {"from_interfaces": ("lo",)},
        {"from_interfaces": ("a-very-long-interface-name",)},
        {"dns_servers": ("resolver.example",)},
        {"upstreams": (("proxy.example", 3128),)},
        {"upstreams": (("198.51.100.7", 0),)},
        {"exclude_uids": (-1,)},
        {"ipv6": "maybe"},
    ],
)
def test_unsafe_specs_are_refused(kwargs: dict) -> None:
    with pytest.raises(FirewallError):
        FirewallSpec(**kwargs)


# ---------------------------------------------------------------- nat


def test_nat_output_order_loopback_then_exemptions_then_redirect() -> None:
    v4 = iptables_restore(FULL, "ipv4", EMPTY)
    rules = chain_lines(v4, NAT_OUT)
    assert rules[0].startswith(f"-A {NAT_OUT} -d 127.0.0.0/8 ")
    assert "-m mark --mark 0x4147 " in rules[1] and rules[1].endswith("-j RETURN")
    assert "-m owner --uid-owner 1001 " in rules[2] and rules[2].endswith("-j RETURN")
    assert rules[3].endswith("-j REDIRECT --to-ports 15001")
    assert "--dports 80,443,8000:8100 " in rules[3]
    assert len(rules) == 4
    # loopback is matched by destination, never by `-o lo` (every local address is -o lo)
    assert not any("-o lo" in r for r in rules)


def test_ipv6_gets_the_same_redirect() -> None:
    v6 = iptables_restore(FULL, "ipv6", EMPTY)
    rules = chain_lines(v6, NAT_OUT)
    assert rules[0].startswith(f"-A {NAT_OUT} -d ::1/128 ")
    assert rules[-1].endswith("-j REDIRECT --to-ports 15001")
    assert "--dports 80,443,8000:8100 " in rules[-1]


def test_all_ports_redirects_all_tcp() -> None:
    spec = FirewallSpec(ports=None)
    for family in ("ipv4", "ipv6"):
        rules = chain_lines(iptables_restore(spec, family, EMPTY), NAT_OUT)
        assert rules[-1].startswith(f"-A {NAT_OUT} -p tcp -m comment")
        assert "multiport" not in rules[-1]


def test_no_ports_redirects_nothing() -> None:
    rules = chain_lines(iptables_restore(FirewallSpec(ports=()), "ipv4", EMPTY), NAT_OUT)
    assert not any("REDIRECT" in r for r in rules)


def test_from_interface_redirects_in_prerouting() -> None:
    rules = chain_lines(iptables_restore(FULL, "ipv4", EMPTY), NAT_PRE)
    assert rules == [
        f"-A {NAT_PRE} -i br0 -p tcp -m multiport --dports 80,443,8000:8100 -m comment"
        ' --comment "transparent ports from br0 to the proxy" -j REDIRECT --to-ports 15001'
    ]


def test_multiport_chunks_cover_every_port_within_15_slots() -> None:
    ports = (*((p, p) for p in range(1000, 1040, 2)), (2000, 2010), (3000, 3005))
    chunks = multiport_chunks(ports)
    for chunk in chunks:
        assert sum(1 if lo == hi else 2 for lo, hi in chunk) <= 15
    covered = {p for chunk in chunks for lo, hi in chunk for p in range(lo, hi + 1)}
    wanted = {p for lo, hi in ports for p in range(lo, hi + 1)}
    assert covered == wanted
    rules = chain_lines(iptables_restore(FirewallSpec(ports=ports), "ipv4", EMPTY), NAT_OUT)
    assert sum("REDIRECT" in r for r in rules) == len(chunks) > 1


def test_multiport_chunks_merge_overlaps() -> None:
    assert multiport_chunks(((80, 90), (85, 100), (101, 101))) == [((80, 101),)]


# ---------------------------------------------------------------- guard


def test_guard_order() -> None:
    rules = chain_lines(iptables_restore(FULL, "ipv4", EMPTY), GUARD_OUT)
    text = [r.split(" -m comment")[0] + " " + r.split(" -j ")[-1] for r in rules]
    assert text == [
        f"-A {GUARD_OUT} -m mark --mark 0x4147 RETURN",
        f"-A {GUARD_OUT} -m owner --uid-owner 1001 RETURN",
        f"-A {GUARD_OUT} -m conntrack --ctstate ESTABLISHED --ctdir REPLY RETURN",
        f"-A {GUARD_OUT} -p tcp -m conntrack --ctorigdst 198.51.100.7 --ctorigdstport 3128"
        " REJECT --reject-with tcp-reset",
        f"-A {GUARD_OUT} -m addrtype --dst-type LOCAL RETURN",
        f"-A {GUARD_OUT} -p tcp -m multiport --dports 80,443,8000:8100"
        " REJECT --reject-with tcp-reset",
        f"-A {GUARD_OUT} -p tcp RETURN",
        f"-A {GUARD_OUT} -d 203.0.113.53 -p udp --dport 53 RETURN",
        f"-A {GUARD_OUT} -p icmp -m conntrack --ctstate RELATED RETURN",
        f"-A {GUARD_OUT} -p tcp REJECT --reject-with tcp-reset",
        f"-A {GUARD_OUT} REJECT --reject-with icmp-admin-prohibited",
    ]


def test_guard_ipv6_has_its_own_addresses_and_link_icmpv6() -> None:
    v6 = iptables_restore(FULL, "ipv6", EMPTY)
    rules = chain_lines(v6, GUARD_OUT)
    assert any("--ctorigdst 2001:db8::7 --ctorigdstport 8080" in r for r in rules)
    assert not any("198.51.100.7" in r or "203.0.113.53" in r for r in rules)
    assert any("-d 2001:db8::53 -p udp --dport 53" in r for r in rules)
    for icmp_type in ("neighbour-solicitation", "neighbour-advertisement"):
        assert any(f"--icmpv6-type {icmp_type} " in r for r in rules)
    assert not any("echo-request" in r for r in rules)
    assert rules[-1].endswith("-j REJECT --reject-with icmp6-adm-prohibited")


def test_forward_guard_only_for_the_given_interfaces_and_without_exemptions() -> None:
    rules = chain_lines(iptables_restore(FULL, "ipv4", EMPTY), GUARD_FWD)
    assert rules and all(r.startswith(f"-A {GUARD_FWD} -i br0 ") for r in rules)
    assert not any("--mark" in r or "--uid-owner" in r or "addrtype" in r for r in rules)
    assert rules[-1].endswith("-j REJECT --reject-with icmp-admin-prohibited")


def test_all_ports_guard_rejects_every_unredirected_tcp() -> None:
    spec = FirewallSpec(ports=None, block_unredirected=True)
    rules = chain_lines(iptables_restore(spec, "ipv4", EMPTY), GUARD_OUT)
    first_tcp = next(r for r in rules if "-p tcp" in r and "conntrack" not in r)
    assert first_tcp.endswith("REJECT --reject-with tcp-reset")


def test_without_guard_no_filter_table_is_touched() -> None:
    text = iptables_restore(FirewallSpec(), "ipv4", EMPTY)
    assert "*filter" not in text and "*nat" in text


def test_ipv6_drop_rejects_all_ipv6_and_keeps_ipv4_redirect() -> None:
    spec = FirewallSpec(ipv6="drop")
    v6 = iptables_restore(spec, "ipv6", EMPTY)
    assert "*nat" not in v6
    rules = chain_lines(v6, GUARD_OUT)
    assert rules[-1].endswith("-j REJECT --reject-with icmp6-adm-prohibited")
    assert not any("-p tcp -j RETURN" in r or "other TCP" in r for r in rules)
    v4 = iptables_restore(spec, "ipv4", EMPTY)
    assert "*filter" not in v4 and "REDIRECT" in v4


def test_ipv6_absent_writes_nothing_for_ipv6() -> None:
    assert iptables_restore(FirewallSpec(ipv6="absent"), "ipv6", EMPTY) == ""
    assert chain_rules(FirewallSpec(ipv6="absent"), "ipv6") == {}


def test_lockdown_rejects_everything_but_loopback() -> None:
    spec = FULL.as_lockdown()
    for family in ("ipv4", "ipv6"):
        text = iptables_restore(spec, family, EMPTY)
        assert "*nat" not in text
        out = chain_lines(text, GUARD_OUT)
        assert [r.split(" -m comment")[0] for r in out] == [
            f"-A {GUARD_OUT} -m addrtype --dst-type LOCAL",
            f"-A {GUARD_OUT} -p tcp",
            f"-A {GUARD_OUT}",
        ]
        fwd = chain_lines(text, GUARD_FWD)
        assert all("-i br0" in r and "REJECT" in r for r in fwd) and fwd


# ---------------------------------------------------------------- state: apply twice, remove


SAVED = """# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:AIRGAP-GUARD-FWD - [0:0]
:AIRGAP-GUARD-OUT - [0:0]
-A FORWARD -j AIRGAP-GUARD-FWD
-A OUTPUT -j AIRGAP-GUARD-OUT
-A OUTPUT -p udp -m udp --dport 9 -j ACCEPT
-A AIRGAP-GUARD-OUT -o lo -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:AIRGAP-NAT-OUT - [0:0]
-A OUTPUT -j AIRGAP-NAT-OUT
-A OUTPUT -d 10.0.0.1/32 -j AIRGAP-NAT-OUT
COMMIT
"""


def test_parse_saved_finds_our_chains_and_every_jump() -> None:
    state = parse_saved(SAVED)
    assert state.chains == {"filter": {GUARD_FWD, GUARD_OUT}, "nat": {NAT_OUT}}
    assert state.jumps == {
        "filter": [("FORWARD", f"-j {GUARD_FWD}"), ("OUTPUT", f"-j {GUARD_OUT}")],
        "nat": [("OUTPUT", f"-j {NAT_OUT}"), ("OUTPUT", f"-d 10.0.0.1/32 -j {NAT_OUT}")],
    }
    assert not state.empty and EMPTY.empty


def test_apply_over_an_earlier_apply_replaces_it() -> None:
    text = iptables_restore(FirewallSpec(block_unredirected=True), "ipv4", parse_saved(SAVED))
    filter_part, nat_part = text.split("*nat")
    # every old jump is deleted (duplicates too), then exactly one is inserted at the top
    assert lines(filter_part, "-D ") == [
        f"-D FORWARD -j {GUARD_FWD}",
        f"-D OUTPUT -j {GUARD_OUT}",
    ]
    assert lines(filter_part, "-I ") == [f"-I OUTPUT 1 -j {GUARD_OUT}"]
    # the forward guard is no longer wanted: flushed and deleted
    assert f":{GUARD_FWD} - [0:0]\n-X {GUARD_FWD}" in filter_part
    assert lines(nat_part, "-D ") == [
        f"-D OUTPUT -j {NAT_OUT}",
        f"-D OUTPUT -d 10.0.0.1/32 -j {NAT_OUT}",
    ]
    assert lines(nat_part, "-I ") == [f"-I OUTPUT 1 -j {NAT_OUT}"]
    # the user's own rule is never touched
    assert "--dport 9" not in text


def test_guard_is_committed_before_redirect_and_removed_after_it() -> None:
    apply = iptables_restore(FULL, "ipv4", EMPTY)
    assert apply.index("*filter") < apply.index("*nat")
    remove = iptables_restore(None, "ipv4", parse_saved(SAVED))
    assert remove.index("*nat") < remove.index("*filter")
    assert lines(remove, "-A ") == [] and lines(remove, "-I ") == []
    ours = (GUARD_FWD, GUARD_OUT, NAT_OUT)
    assert sorted(lines(remove, "-X ")) == sorted(f"-X {c}" for c in ours)


def test_remove_with_nothing_installed_is_a_no_op() -> None:
    assert iptables_restore(None, "ipv4", EMPTY) == ""


def test_script_is_runnable_shell_and_independent_of_what_is_installed() -> None:
    import subprocess

    script = iptables_script(FULL)
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0
    blocks = script.split("| iptables-restore --noflush\n")
    assert blocks[0].startswith("{ echo '*filter'\n  iptables-save -t filter 2>/dev/null | sed")
    assert "{ echo '*nat'\n  ip6tables-save -t nat 2>/dev/null" in script
    assert script.index("echo '*filter'") < script.index("echo '*nat'")
    assert script.endswith("COMMIT\nEOF\n} | ip6tables-restore --noflush\n")
    # no jump deletion is baked in from the state at print time: it is read when it runs
    assert "\n-D " not in script
    # every chain of ours is declared (created or flushed), unwanted ones deleted
    no_fwd = iptables_script(FirewallSpec(block_unredirected=True))
    for chain in CHAINS:
        assert f":{chain} - [0:0]" in no_fwd
    for chain in (GUARD_FWD, GUARD_IN, NAT_PRE):
        assert f"-X {chain}" in no_fwd
    assert "ip6tables" not in iptables_script(FirewallSpec(ipv6="absent"))


def test_script_deletes_the_jumps_iptables_save_shows() -> None:
    import subprocess

    from rules.redirect_rules import _DELETE_JUMPS

    out = subprocess.run(
        ["sh", "-c", _DELETE_JUMPS], input=SAVED, text=True, capture_output=True, check=True
    ).stdout
    assert out.splitlines() == [
        f"-D FORWARD -j {GUARD_FWD}",
        f"-D OUTPUT -j {GUARD_OUT}",
        f"-D OUTPUT -j {NAT_OUT}",
        f"-D OUTPUT -d 10.0.0.1/32 -j {NAT_OUT}",
    ]


def test_every_chain_is_jumped_to_from_the_top() -> None:
    spec = replace(FULL, upstreams=(*FULL.upstreams, ("127.0.0.1", 3128)))
    text = iptables_restore(spec, "ipv4", EMPTY)
    for chain, (_table, builtin) in CHAINS.items():
        assert f"-I {builtin} 1 -j {chain}" in text


# ---------------------------------------------------------------- nft


def test_nft_replaces_its_own_table_atomically() -> None:
    text = nft_ruleset(FULL)
    assert text.startswith(
        "table inet airgap_proxy\ndelete table inet airgap_proxy\ntable inet airgap_proxy {\n"
    )
    assert nft_ruleset(None) == "table inet airgap_proxy\ndelete table inet airgap_proxy\n"
    # the guard chains come before the nat chains, and run before iptables-nft's
    assert text.index("chain guard_output") < text.index("chain nat_output")
    assert "type nat hook output priority -110;" in text
    assert "type filter hook output priority -10;" in text


def test_nft_every_rule_names_its_family() -> None:
    text = nft_ruleset(FULL)
    rules = [
        line.strip()
        for line in text.splitlines()
        if line.startswith("\t\t") and not line.strip().startswith("type ")
    ]
    assert rules and all(r.startswith(("meta nfproto ipv4 ", "meta nfproto ipv6 ")) for r in rules)
    assert 'meta nfproto ipv4 ip daddr 127.0.0.0/8 return comment "loopback stays local"' in rules
    assert 'meta nfproto ipv6 ip6 daddr ::1/128 return comment "loopback stays local"' in rules
    assert (
        "meta nfproto ipv4 tcp dport { 80, 443, 8000-8100 } redirect to :15001"
        ' comment "transparent ports to the proxy"'
    ) in rules
    assert any("ct original ip6 daddr 2001:db8::7 ct original proto-dst 8080" in r for r in rules)
    assert any(r.startswith('meta nfproto ipv6 iifname "br0" ') for r in rules)


def test_nft_ipv6_drop_has_no_ipv6_redirect() -> None:
    text = nft_ruleset(FirewallSpec(ipv6="drop"))
    assert "meta nfproto ipv6 tcp dport" not in text
    assert "meta nfproto ipv4 tcp dport { 80, 443 } redirect" in text
    assert "meta nfproto ipv6 reject with icmpx type admin-prohibited" in text


# ---------------------------------------------------------------- resolv.conf


def test_resolvers_from_resolv_conf() -> None:
    text = (
        "# Generated by Docker Engine.\n"
        "nameserver 127.0.0.11\n"
        "nameserver 203.0.113.53\n"
        "nameserver fe80::1%eth0\n"
        "nameserver not-an-ip\n"
        "options ndots:0\n"
        "# ExtServers: [host(127.0.0.53) 198.51.100.53 203.0.113.53]\n"
    )
    assert resolvers_from_resolv_conf(text) == ("203.0.113.53", "fe80::1", "198.51.100.53")


# ---------------------------------------------------------------- an upstream on this host


def _local(upstreams: tuple[tuple[str, int], ...], **kw: object) -> FirewallSpec:
    return FirewallSpec(block_unredirected=True, upstreams=upstreams, **kw)  # type: ignore[arg-type]


LOCAL_GUARD = {
    "ipv4": [
        f"-A {GUARD_OUT} -d 127.0.0.0/8 -p tcp -m multiport --dports 3128",
        f"-A {GUARD_OUT} -m addrtype --dst-type LOCAL -p tcp -m multiport --dports 3128",
    ],
    "ipv6": [
        f"-A {GUARD_OUT} -d ::1/128 -p tcp -m multiport --dports 3128",
        f"-A {GUARD_OUT} -m addrtype --dst-type LOCAL -p tcp -m multiport --dports 3128",
    ],
}


def _guard_heads(spec: FirewallSpec, family: str) -> list[str]:
    rules = chain_lines(iptables_restore(spec, family, EMPTY), GUARD_OUT)  # type: ignore[arg-type]
    return [r.split(" -m comment")[0] for r in rules]


@pytest.mark.parametrize(
    "upstream",
    [
        ("127.0.0.1", 3128),
        ("127.0.0.2", 3128),
        ("::1", 3128),  # an IPv6 upstream on `[::]` also answers IPv4 127.x
        ("::ffff:127.0.0.1", 3128),
        ("0.0.0.0", 3128),  # Linux connects it to this host
        ("::", 3128),
        ("198.51.100.2", 3128),  # one of this namespace's own addresses
        ("2001:db8:1::2", 3128),
    ],
)
def test_a_local_upstream_is_guarded_on_every_local_address_of_both_families(
    upstream: tuple[str, int],
) -> None:
    spec = _local((upstream,), local_addresses=("198.51.100.2", "2001:db8:1::2"))
    assert spec.local_upstream_ports == (3128,) and spec.remote_upstreams == ()
    for family in ("ipv4", "ipv6"):
        heads = _guard_heads(spec, family)
        local_return = heads.index(f"-A {GUARD_OUT} -m addrtype --dst-type LOCAL")
        # after the exemptions and the replies, before "stays on this host"
        assert heads[2:4] == LOCAL_GUARD[family] and local_return == 4, heads
        # not the one exact address: that is what left 127.0.0.2, ::1 and eth0 open
        assert not any("--ctorigdst" in h for h in heads)
    text = iptables_restore(spec, "ipv4", EMPTY)
    assert text.count("REJECT --reject-with tcp-reset") >= 2


def test_an_upstream_elsewhere_keeps_its_exact_match() -> None:
    spec = _local((("198.51.100.7", 3128),), local_addresses=("198.51.100.2",))
    assert spec.local_upstream_ports == () and spec.remote_upstreams == (("198.51.100.7", 3128),)
    heads = _guard_heads(spec, "ipv4")
    assert f"-A {GUARD_OUT} -p tcp -m conntrack --ctorigdst 198.51.100.7 --ctorigdstport 3128" in (
        heads
    )
    assert not any("--dports 3128" in h for h in heads + _guard_heads(spec, "ipv6"))


def test_local_upstream_ports_are_merged_into_one_match() -> None:
    spec = _local((("127.0.0.1", 3128), ("::1", 1080), ("127.0.0.1", 3128)))
    assert spec.local_upstream_ports == (1080, 3128)
    assert LOCAL_GUARD["ipv4"][1].replace("3128", "1080,3128") in _guard_heads(spec, "ipv4")


def test_a_local_upstream_on_a_transparent_port_is_not_redirected() -> None:
    # redirected, the proxy would carry the client to it (its own traffic is exempt)
    spec = _local((("127.0.0.1", 8080),), ports=None, from_interfaces=("br0",))
    for family in ("ipv4", "ipv6"):
        text = iptables_restore(spec, family, EMPTY)
        nat = [r.split(" -m comment")[0] for r in chain_lines(text, NAT_OUT)]
        assert (
            nat[1] == f"-A {NAT_OUT} -m addrtype --dst-type LOCAL -p tcp -m multiport --dports 8080"
        )
        assert chain_lines(text, NAT_OUT)[1].endswith("-j RETURN")
        pre = [r.split(" -m comment")[0] for r in chain_lines(text, NAT_PRE)]
        assert pre[0] == (
            f"-A {NAT_PRE} -i br0 -m addrtype --dst-type LOCAL -p tcp -m multiport --dports 8080"
        )
    # not on a port that is not redirected anyway, and not without the guard
    quiet = _local((("127.0.0.1", 3128),))
    assert not any(
        "addrtype" in r for r in chain_lines(iptables_restore(quiet, "ipv4", EMPTY), NAT_OUT)
    )
    unguarded = FirewallSpec(ports=None, upstreams=(("127.0.0.1", 8080),))
    text = iptables_restore(unguarded, "ipv4", EMPTY)
    assert not any("addrtype" in r for r in chain_lines(text, NAT_OUT))


def test_a_local_upstream_is_closed_to_forwarded_clients_in_input() -> None:
    spec = _local((("127.0.0.1", 3128),), from_interfaces=("br0",))
    for family in ("ipv4", "ipv6"):
        text = iptables_restore(spec, family, EMPTY)
        rules = [
            r.split(" -m comment")[0] + " " + r.split(" -j ")[-1]
            for r in chain_lines(text, GUARD_IN)
        ]
        assert rules == [
            f"-A {GUARD_IN} -i br0 -m conntrack --ctstate ESTABLISHED --ctdir REPLY RETURN",
            f"-A {GUARD_IN} -i br0 -p tcp -m multiport --dports 3128"
            " REJECT --reject-with tcp-reset",
        ]
        assert f"-I INPUT 1 -j {GUARD_IN}" in text
    # no INPUT chain without a local upstream
    assert GUARD_IN not in iptables_restore(FULL, "ipv4", EMPTY)


def test_ipv6_drop_keeps_the_local_upstream_guard_before_this_host() -> None:
    spec = FirewallSpec(ipv6="drop", upstreams=(("127.0.0.1", 3128),))
    heads = _guard_heads(spec, "ipv6")
    assert heads.index(LOCAL_GUARD["ipv6"][1]) < heads.index(
        f"-A {GUARD_OUT} -m addrtype --dst-type LOCAL"
    )


def test_a_local_upstream_on_the_proxy_port_is_refused() -> None:
    with pytest.raises(FirewallError, match="the proxy's own port"):
        FirewallSpec(upstreams=(("127.0.0.1", 15001),))
    FirewallSpec(upstreams=(("198.51.100.7", 15001),))  # elsewhere: no conflict


def test_nft_guards_a_local_upstream_by_fib_and_loopback() -> None:
    text = nft_ruleset(_local((("127.0.0.1", 3128),), ports=None, from_interfaces=("br0",)))
    comment = 'comment "only the proxy may use the upstream proxy on this host"'
    for nf, ip, loop in (("ipv4", "ip", "127.0.0.0/8"), ("ipv6", "ip6", "::1/128")):
        assert (
            f"meta nfproto {nf} {ip} daddr {loop} tcp dport {{ 3128 }}"
            f" reject with tcp reset {comment}" in text
        )
        assert (
            f"meta nfproto {nf} fib daddr type local tcp dport {{ 3128 }}"
            f" reject with tcp reset {comment}" in text
        )
        assert (
            f'meta nfproto {nf} iifname "br0" tcp dport {{ 3128 }} reject with tcp reset {comment}'
            in text
        )
        assert f"meta nfproto {nf} fib daddr type local tcp dport {{ 3128 }} return" in text
    guard = text[text.index("chain guard_output") : text.index("chain guard_forward")]
    assert guard.index("fib daddr type local tcp dport") < guard.index(
        "fib daddr type local return"
    )
    assert "chain guard_input {\n\t\ttype filter hook input priority -10;" in text
    assert "ct original ip daddr 127.0.0.1" not in text


# ---------------------------------------------------------------- the apply side's inputs


def test_unreadable_namespace_addresses_refuse_rather_than_guess_remote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    from proxy import firewall_apply as apply_side

    def no_ip(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 127, "", "ip: not found")

    monkeypatch.setattr(apply_side, "run", no_ip)
    # loopback upstreams need no lookup: they are on this host whatever the addresses
    assert apply_side.namespace_addresses([("127.0.0.1", 3128), ("::1", 3128)]) == ()
    with pytest.raises(apply_side.FirewallFailure, match="on this host"):
        apply_side.namespace_addresses([("198.51.100.2", 3128)])

    def some_ip(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        out = '[{"addr_info": [{"local": "198.51.100.2"}, {"local": "fe80::1"}]}, {}]'
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(apply_side, "run", some_ip)
    assert apply_side.namespace_addresses([("198.51.100.2", 3128)]) == ("198.51.100.2", "fe80::1")


# ---------------------------------------------------------------- forwarded only (a node)


def test_forwarded_only_leaves_this_hosts_own_traffic_alone() -> None:
    # A node-wide proxy on the pods' bridge: the node's kubelet, image pulls and overlay
    # tunnels (UDP, IPIP) must neither go to the proxy nor meet the guard in OUTPUT.
    spec = replace(FULL, forwarded_only=True)
    for family in ("ipv4", "ipv6"):
        chains = chain_rules(spec, family)
        assert set(chains) == {GUARD_FWD, NAT_PRE}
        assert chains[NAT_PRE] == chain_rules(FULL, family)[NAT_PRE]
        assert chains[GUARD_FWD] == chain_rules(FULL, family)[GUARD_FWD]
    text = iptables_restore(spec, "ipv4", EMPTY)
    assert "-j AIRGAP-NAT-OUT" not in text and "-j AIRGAP-GUARD-OUT" not in text
    nft = nft_ruleset(spec)
    assert "hook output" not in nft and "hook forward" in nft and "hook prerouting" in nft


def test_forwarded_only_lockdown_rejects_only_what_is_forwarded() -> None:
    chains = chain_rules(replace(FULL, forwarded_only=True, lockdown=True), "ipv4")
    assert set(chains) == {GUARD_FWD}
    assert [r.verdict for r in chains[GUARD_FWD]] == ["reject"]


def test_forwarded_only_needs_an_interface() -> None:
    with pytest.raises(FirewallError, match="need at least one --from-interface"):
        FirewallSpec(forwarded_only=True)


def test_reapplying_forwarded_only_drops_the_earlier_output_jumps() -> None:
    # what iptables-save shows after the earlier apply: the jumps appended, not inserted
    earlier = re.sub(r"-I (\w+) 1 ", r"-A \1 ", iptables_restore(FULL, "ipv4", EMPTY))
    text = iptables_restore(replace(FULL, forwarded_only=True), "ipv4", parse_saved(earlier))
    for chain, builtin in ((GUARD_OUT, "OUTPUT"), (NAT_OUT, "OUTPUT")):
        assert f"-D {builtin} -j {chain}" in text and f"-X {chain}" in text
        assert f"-I {builtin} 1 -j {chain}" not in text
    assert "-I FORWARD 1 -j AIRGAP-GUARD-FWD" in text
    assert "-I PREROUTING 1 -j AIRGAP-NAT-PRE" in text
