#!/usr/bin/env python3
"""Writes the small seed corpus in fuzz/seeds/<target>/ (committed).

Rulesets come from ruleset/tests/cases.txt (each case's files, in the
`--- NAME` form the `ruleset` target splits on) plus the README example;
frames, pcap and pcapng files are built here byte by byte. Run from the
repository root: `python3 fuzz/make_seeds.py`.
"""
import os
import re
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- ruleset: the files of every case in cases.txt, and the README example.
def ruleset_seeds():
    text = open(os.path.join(ROOT, "ruleset", "tests", "cases.txt")).read()
    cases = re.split(r"^=== .*\n", text, flags=re.M)[1:]
    n = 0
    for case in cases:
        out = []
        keep = False
        for line in case.splitlines(keepends=True):
            if line.startswith("--- "):
                name = line[4:].strip()
                keep = name.endswith(".fg")
                if keep:
                    out.append(line)
                continue
            if keep:
                out.append(line)
        body = "".join(out)
        if body.startswith("--- gateway.fg\n"):
            body = body[len("--- gateway.fg\n"):]
        if body.strip():
            n += 1
            write("ruleset", f"case-{n:02}.txt", body)
    write("ruleset", "readme.txt", """default drop
set web { 80, 443, 8000-8099 }
iif "ext0" vlan 42 proto udp dport 11211 drop
--- acme.fg
tenant acme
prefixes { 203.0.113.0/24, 2001:db8:ac::/48 }
default drop
set office { 198.51.100.0/28 }
daddr 203.0.113.25 proto tcp dport { 25, 587 } pass
proto tcp dport 22 saddr @office pass
proto tcp dport 3306 flags S/SA drop
proto icmp icmp-type 8 count
proto tcp dport @web pass
guard "tcp 198.51.100.7:40000 -> 203.0.113.25:587 flags S" pass
guard "tcp 192.0.2.9:40000 -> 203.0.113.25:3306 flags S" drop
""")


# --- guard packets: the text form of PacketHeader.
GUARDS = [
    "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S",
    "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags SA",
    "udp [2001:db8::1]:53 -> [2001:db8:1::2]:5353 vlan 42 iif eth1",
    "icmp 192.0.2.1 -> 203.0.113.10 type 8 code 0",
    "icmpv6 2001:db8::1 -> 2001:db8::2 type 128 code 0",
    "tcp 192.0.2.1 -> 203.0.113.10",
    "47 192.0.2.1 -> 198.51.100.2",
    "udp 10.0.0.1:1 -> 10.0.0.2:65535 vlan 4095",
]

# --- ClassBench filter and trace lines.
FILTERS = (
    "@192.168.0.0/16\t10.0.0.0/8\t0 : 65535\t1024 : 1024\t0x06/0xFF\t0x0000/0x0000\n"
    "@0.0.0.0/0\t10.1.0.0/16\t53 : 53\t0 : 65535\t0x11/0xFF\n"
    "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 90\t0x00/0x00\t0x0000/0x0000\n"
    "@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF\t0x1000/0x1000\n"
)
FW = "@0.0.0.0/0\t192.0.2.0/24\t0 : 65535\t0 : 65535\t0x01/0xFF\n@0.0.0.0/0\t192.0.2.0/24\t0 : 65535\t1136 : 1136\t0x2F/0xFF\n"
TRACE = "3232235777\t167772161\t5000\t1024\t6\t0\t1\n167772161\t167837697\t53\t80\t17\t0\t2\n3221225985\t3325256706\t25\t1136\t47\n"


# --- frames.
def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


MACS = bytes.fromhex("020000000002020000000001")


def eth(ethertype, payload, vlans=()):
    out = MACS
    for tpid, vid in vlans:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", ethertype) + payload


def ipv4(proto, l4, src="198.51.100.7", dst="203.0.113.10", frag=0, ihl=5):
    opts = b"\x01" * ((ihl - 5) * 4)
    total = 4 * ihl + len(l4)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0,
                      bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))) + opts
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + l4


def ipv6(nh, l4, src=b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x01", dst=b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x02"):
    return struct.pack("!IHBB", 0x60000000, len(l4), nh, 64) + src + dst + l4


def tcp(sport, dport, flags):
    return struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 65535, 0, 0)


def udp(sport, dport):
    return struct.pack("!HHHH", sport, dport, 8, 0)


def icmp(ty, code):
    return struct.pack("!BBHI", ty, code, 0, 0)


FRAMES = {
    "v4-tcp-syn": eth(0x0800, ipv4(6, tcp(40000, 443, 0x02))),
    "v4-udp-vlan": eth(0x0800, ipv4(17, udp(53, 5353)), [(0x8100, 42)]),
    "v4-icmp-qinq": eth(0x0800, ipv4(1, icmp(8, 0)), [(0x88A8, 100), (0x8100, 200)]),
    "v4-fragment": eth(0x0800, ipv4(6, b"\0" * 8, frag=185)),
    "v4-options": eth(0x0800, ipv4(17, udp(1, 2), ihl=6)),
    "v4-gre": eth(0x0800, ipv4(47, b"\0" * 8)),
    "v6-tcp": eth(0x86DD, ipv6(6, tcp(1234, 22, 0x12))),
    "v6-icmpv6": eth(0x86DD, ipv6(58, icmp(128, 0))),
    # hop-by-hop options, then a fragment header (first fragment), then UDP
    "v6-ext-frag": eth(0x86DD, ipv6(0, bytes([44, 0]) + b"\0" * 6 + bytes([17, 0, 0, 1]) + b"\0" * 4 + udp(53, 53))),
    "arp": eth(0x0806, b"\0\x01\x08\x00\x06\x04\x00\x01" + b"\0" * 20),
    "truncated": eth(0x0800, ipv4(6, tcp(1, 2, 0)))[:30],
}


def pcap(frames):
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, f in enumerate(frames):
        out += struct.pack("<IIII", 1700000000 + i, 0, len(f), len(f)) + f
    return out


def pad4(b):
    return b + b"\0" * (-len(b) % 4)


def block(btype, body):
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


def pcapng(frames):
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 1, 0, 65535))
    out = shb + idb
    for f in frames:
        out += block(6, struct.pack("<IIIII", 0, 0, 0, len(f), len(f)) + pad4(f))
    out += block(3, struct.pack("<I", len(FRAMES["arp"])) + pad4(FRAMES["arp"]))
    return out


def main():
    ruleset_seeds()
    for i, g in enumerate(GUARDS):
        write("guard_packet", f"guard-{i + 1:02}.txt", g)
    write("classbench", "acl.filters", FILTERS)
    write("classbench", "fw.filters", FW)
    write("classbench", "acl.trace", TRACE)
    write("classbench", "acl-and-trace.txt", FILTERS + "---\n" + TRACE)
    write("classbench", "fw-and-trace.txt", FW + "---\n" + TRACE)
    for name, f in FRAMES.items():
        write("packet_parser", f"{name}.bin", f)
    two = [FRAMES["v4-tcp-syn"], FRAMES["v6-icmpv6"]]
    write("pcap", "two.pcap", pcap(two))
    write("pcap", "two.pcapng", pcapng(two))


if __name__ == "__main__":
    main()
