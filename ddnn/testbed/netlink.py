"""Just enough netfilter netlink to queue the packets one interface receives to user space.

Used by the ``nfqueue`` shaper on kernels built without ``sch_netem``: an nf_tables rule
(``iif == DEV -> NFQUEUE num Q bypass`` at prerouting, through nft_compat's xtables target, so it
needs neither the ``nft`` nor the ``iptables`` binary) and a ``nfnetlink_queue`` binding that
receives packet ids only (no payload copy) and hands back verdicts. Packets are held on the
receiving side on purpose: held on the sender's egress they would still count against the
sending socket (TCP small queues) and throttle TCP far below the emulated rate. Everything here
acts on the network namespace of the calling process; the testbed runs it inside the namespace
it shapes.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5

NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x400, 0x800
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = ~0xC000

NFNL_SUBSYS_QUEUE, NFNL_SUBSYS_NFTABLES = 3, 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFPROTO_IPV4 = 2

# nf_tables messages and attributes (linux/netfilter/nf_tables.h)
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE = 0, 2, 3, 6
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_TYPE = 1, 3, 4, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 1, 2
NFTA_META_DREG, NFTA_META_KEY, NFT_META_IIF, NFT_META_OIF = 1, 2, 4, 5
NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA, NFT_CMP_EQ, NFTA_DATA_VALUE = 1, 2, 3, 0, 1
NFTA_TARGET_NAME, NFTA_TARGET_REV, NFTA_TARGET_INFO = 1, 2, 3
NFT_REG_1 = 1
NF_INET_PRE_ROUTING, NF_INET_POST_ROUTING = 0, 4
NFQ_FLAG_BYPASS = 0x01

# nfnetlink_queue (linux/netfilter/nfnetlink_queue.h)
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO = 0x1, 0x4
NF_DROP, NF_ACCEPT = 0, 1


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def strz(text: str) -> bytes:
    return text.encode() + b"\0"


def be32(v: int) -> bytes:
    return struct.pack(">I", v & 0xFFFFFFFF)


def nfmsg(subsys: int, msg: int, flags: int, seq: int, family: int, res_id: int, body: bytes = b"") -> bytes:
    """An nfnetlink message: nlmsghdr + nfgenmsg + attributes."""
    payload = struct.pack("=BBH", family, 0, socket.htons(res_id)) + body
    return struct.pack("=IHHII", 16 + len(payload), (subsys << 8) | msg, flags, seq, 0) + payload


def batch_marker(kind: int, seq: int) -> bytes:
    return struct.pack("=IHHII", 20, kind, NLM_F_REQUEST, seq, 0) + struct.pack("=BBH", 0, 0,
                                                                                  socket.htons(NFNL_SUBSYS_NFTABLES))


def messages(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload after the nlmsghdr) for each message in ``buf``."""
    off = 0
    while off + 16 <= len(buf):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", buf, off)
        if length < 16:
            return
        yield kind, seq, buf[off + 16:off + length]
        off += (length + 3) & ~3


def attrs(buf: bytes, off: int = 0) -> dict[int, bytes]:
    out = {}
    while off + 4 <= len(buf):
        n, kind = struct.unpack_from("=HH", buf, off)
        if n < 4:
            break
        out[kind & NLA_TYPE_MASK] = buf[off + 4:off + n]
        off += (n + 3) & ~3
    return out


class NetfilterSocket:
    """A NETLINK_NETFILTER socket in the caller's network namespace."""

    def __init__(self, rcvbuf: int = 8 << 20):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self._seq = 0

    def seq(self) -> int:
        self._seq += 1
        return self._seq

    def request(self, data: bytes, acks: set[int], timeout: float = 5.0) -> None:
        """Send ``data`` and wait for an ACK of every sequence number in ``acks``; raise on an error."""
        self.sock.send(data)
        waiting = set(acks)
        while waiting:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                raise TimeoutError(f"netfilter netlink: no answer for messages {sorted(waiting)}")
            for kind, seq, payload in messages(self.sock.recv(1 << 16)):
                if kind != NLMSG_ERROR:
                    continue
                (err,) = struct.unpack_from("=i", payload)
                if err:
                    raise OSError(-err, f"netfilter netlink: {os.strerror(-err)} (message {seq})")
                waiting.discard(seq)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def queue_rule_batch(nl: NetfilterSocket, table: str, ifindex: int, queue: int,
                     ingress: bool = True) -> tuple[bytes, set[int]]:
    """nf_tables batch: table ``ip TABLE``, a prerouting chain with ``iif IFINDEX queue num QUEUE
    bypass`` (``ingress``), or a postrouting one with ``oif IFINDEX ...``."""
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
    s_table, s_chain, s_rule = nl.seq(), nl.seq(), nl.seq()
    chain, hook, key = ("ingress", NF_INET_PRE_ROUTING, NFT_META_IIF) if ingress else (
        "egress", NF_INET_POST_ROUTING, NFT_META_OIF)
    expr = nested(NFTA_RULE_EXPRESSIONS,
                  nested(NFTA_LIST_ELEM, attr(NFTA_EXPR_NAME, strz("meta")), nested(
                      NFTA_EXPR_DATA, attr(NFTA_META_DREG, be32(NFT_REG_1)), attr(NFTA_META_KEY, be32(key)))),
                  nested(NFTA_LIST_ELEM, attr(NFTA_EXPR_NAME, strz("cmp")), nested(
                      NFTA_EXPR_DATA, attr(NFTA_CMP_SREG, be32(NFT_REG_1)), attr(NFTA_CMP_OP, be32(NFT_CMP_EQ)),
                      nested(NFTA_CMP_DATA, attr(NFTA_DATA_VALUE, struct.pack("=I", ifindex))))),
                  nested(NFTA_LIST_ELEM, attr(NFTA_EXPR_NAME, strz("target")), nested(
                      NFTA_EXPR_DATA, attr(NFTA_TARGET_NAME, strz("NFQUEUE")), attr(NFTA_TARGET_REV, be32(3)),
                      # struct xt_NFQ_info_v3 {u16 queuenum, queues_total, flags}, XT_ALIGN-ed to 8 bytes
                      attr(NFTA_TARGET_INFO, struct.pack("=HHHxx", queue, 1, NFQ_FLAG_BYPASS)))))
    data = b"".join([
        batch_marker(NFNL_MSG_BATCH_BEGIN, nl.seq()),
        nfmsg(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWTABLE, flags, s_table, NFPROTO_IPV4, 0,
              attr(NFTA_TABLE_NAME, strz(table))),
        nfmsg(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWCHAIN, flags, s_chain, NFPROTO_IPV4, 0,
              attr(NFTA_CHAIN_TABLE, strz(table)) + attr(NFTA_CHAIN_NAME, strz(chain))
              + nested(NFTA_CHAIN_HOOK, attr(NFTA_HOOK_HOOKNUM, be32(hook)),
                       attr(NFTA_HOOK_PRIORITY, be32(0)))
              + attr(NFTA_CHAIN_TYPE, strz("filter"))),
        nfmsg(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWRULE, flags | NLM_F_APPEND, s_rule, NFPROTO_IPV4, 0,
              attr(NFTA_RULE_TABLE, strz(table)) + attr(NFTA_RULE_CHAIN, strz(chain)) + expr),
        batch_marker(NFNL_MSG_BATCH_END, nl.seq()),
    ])
    return data, {s_table, s_chain, s_rule}


def add_queue_rule(table: str, ifindex: int, queue: int, ingress: bool = True) -> None:
    """Queue every IPv4 packet arriving on (``ingress``) or leaving interface ``ifindex`` to nfqueue
    ``queue``; packets are accepted if nobody listens."""
    nl = NetfilterSocket(rcvbuf=1 << 20)
    try:
        data, acks = queue_rule_batch(nl, table, ifindex, queue, ingress)
        nl.request(data, acks)
    finally:
        nl.close()


def delete_table(table: str) -> None:
    """Remove the table (and its rule); a missing table is not an error."""
    nl = NetfilterSocket(rcvbuf=1 << 20)
    try:
        seq = nl.seq()
        data = b"".join([batch_marker(NFNL_MSG_BATCH_BEGIN, nl.seq()),
                         nfmsg(NFNL_SUBSYS_NFTABLES, NFT_MSG_DELTABLE, NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO_IPV4,
                               0, attr(NFTA_TABLE_NAME, strz(table))),
                         batch_marker(NFNL_MSG_BATCH_END, nl.seq())])
        try:
            nl.request(data, {seq})
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    finally:
        nl.close()


class PacketQueue:
    """A bound nfnetlink_queue: packet ids in arrival order, verdicts out. Metadata only, GSO kept whole."""

    def __init__(self, queue: int, maxlen: int = 65536):
        self.queue = queue
        self.nl = NetfilterSocket()
        flags = NLM_F_REQUEST | NLM_F_ACK
        s1, s2 = self.nl.seq(), self.nl.seq()
        bind = nfmsg(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, flags, s1, socket.AF_UNSPEC, queue,
                     attr(NFQA_CFG_CMD, struct.pack("=BxH", NFQNL_CFG_CMD_BIND, socket.htons(socket.AF_INET))))
        params = nfmsg(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, flags, s2, socket.AF_UNSPEC, queue,
                       attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META))
                       + attr(NFQA_CFG_QUEUE_MAXLEN, be32(maxlen))
                       + attr(NFQA_CFG_MASK, be32(NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO))
                       + attr(NFQA_CFG_FLAGS, be32(NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO)))
        self.nl.request(bind, {s1})
        self.nl.request(params, {s2})
        self.nl.sock.setblocking(False)

    def fileno(self) -> int:
        return self.nl.fileno()

    def read(self) -> list[int]:
        """Ids of the packets waiting on the socket now (non-blocking)."""
        ids: list[int] = []
        while True:
            try:
                buf = self.nl.sock.recv(1 << 18)
            except BlockingIOError:
                return ids
            except OSError as exc:  # ENOBUFS is off, but never let a burst kill the shaper
                if exc.errno == errno.ENOBUFS:
                    continue
                raise
            for kind, _seq, payload in messages(buf):
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    hdr = attrs(payload, 4).get(NFQA_PACKET_HDR)
                    if hdr:
                        ids.append(struct.unpack_from(">I", hdr)[0])

    def verdict(self, packet_id: int, verdict: int, batch: bool = False) -> None:
        """Verdict on one packet, or with ``batch`` on every queued packet with an id up to ``packet_id``."""
        msg = NFQNL_MSG_VERDICT_BATCH if batch else NFQNL_MSG_VERDICT
        data = nfmsg(NFNL_SUBSYS_QUEUE, msg, NLM_F_REQUEST, 0, socket.AF_UNSPEC, self.queue,
                     attr(NFQA_VERDICT_HDR, struct.pack(">II", verdict, packet_id)))
        while True:
            try:
                self.nl.sock.send(data)
                return
            except BlockingIOError:
                select.select([], [self.nl.sock], [], 1.0)

    def close(self) -> None:
        self.nl.close()
