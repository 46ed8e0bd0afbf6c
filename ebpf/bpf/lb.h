/* Shared between the C programs and Rust (ebpf/src/maps.rs mirrors every
 * struct with #[repr(C)]; a test checks sizes and offsets against the
 * object's BTF). Addresses and ports in network byte order; IPv4 uses
 * addr[0], IPv6 all four words. */
#ifndef NETD_LB_H
#define NETD_LB_H

#include <linux/types.h>

#define LB_FAMILY_V4 4
#define LB_FAMILY_V6 6

/* Capacities (mirrored in maps.rs; the control side refuses more). */
#define LB_MAX_SERVICES 65536
#define LB_MAX_BACKENDS 262144

/* Backend states. */
#define LB_BACKEND_ACTIVE 0
#define LB_BACKEND_DRAINING 1 /* no new flows; established ones continue */
#define LB_BACKEND_GONE 2     /* flows move to a live backend at once */

/* Connection-tracking directions. */
#define LB_CT_FORWARD 0 /* client -> service */
#define LB_CT_REPLY 1   /* backend -> client: reverse NAT */

struct lb_svc_key {
	__u32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 family;
};

/* Service flags (struct lb_svc.flags). */
#define LB_SVC_NORTH_SOUTH 1 /* a published port on a node address: balanced for traffic from outside only */
#define LB_SVC_SNAT 2        /* and its clients' source becomes the node's (netd's nftables masquerade) */

/* Marks on north-south packets, for netd's nftables table: forwarded into
 * the bridge (they are not conntrack DNAT), and masqueraded (SNAT mode). */
#define LB_MARK_NORTH_SOUTH 0x10000000
#define LB_MARK_SNAT 0x20000000

struct lb_svc {
	__u32 id;
	__u32 table_size; /* Maglev slots; 0: no backends */
	__u32 flags;
	__u32 pad;
};

struct lb_backend {
	__u32 addr[4];
	__be16 port;
	__u8 state;
	__u8 family;
};

struct lb_ct_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

/* Connection-tracking flags (struct lb_ct.flags). */
#define LB_CT_SEEN_REPLY 1 /* the backend answered */
#define LB_CT_CLOSING 2    /* FIN or RST seen: a short timeout */
#define LB_CT_NORTH_SOUTH 4 /* reverse NAT where the reply leaves the node, not at the backend's veth */
#define LB_CT_SNAT 8        /* forward entries of SNAT-mode flows: packets get LB_MARK_SNAT */

struct lb_ct {
	__u64 last_seen_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 svc_id;
	__u32 backend_id;
	__u32 nat_addr[4]; /* reply entries: the service address to restore */
	__be16 nat_port;
	__u16 flags;
	__u32 pad2;
};

/* Per attached interface (by ifindex): the MAC of the gateway its
 * container uses (its bridge). ARP requests for a service address from the
 * container are answered with it, so VIPs inside the network's subnet work
 * and their packets reach the datapath addressed as routed ones are. */
struct lb_iface {
	__u8 gw_mac[6];
	__u16 flags;
};

/* Socket-level balancing (by socket cookie): the VIP a socket asked for
 * and the backend it was given, to show the VIP back (getpeername, the
 * source of UDP replies). */
struct lb_sock {
	__u32 vip;
	__be16 vport;
	__u16 pad;
	__u32 backend;
	__be16 bport;
	__u16 pad2;
};

/* Per backend, per CPU: what the datapath sent it. */
struct lb_stats {
	__u64 packets;
	__u64 bytes;
	__u64 flows;
};

#endif
