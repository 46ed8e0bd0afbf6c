// SPDX-License-Identifier: GPL-2.0
/* Service load-balancing on the host side of container veths (tc ingress:
 * packets leaving a container). Forward: a packet to a service address is
 * DNATed to the backend its flow's Maglev slot names (or connection
 * tracking already chose). Reply: a packet from a backend to a client of a
 * NATed flow gets the service address back as its source. IPv4 now; the
 * map layouts carry IPv6 addresses already. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lb.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, struct lb_svc_key);
	__type(value, struct lb_svc);
} lb_services SEC(".maps");

/* Per service (by id): its Maglev table, an array of backend ids. Tables of
 * any size (BPF_F_INNER_MAP), so 10,000 services need 10,000 x size x 8
 * bytes, not a hash entry per slot; mmapable, so the control side writes
 * slots through memory, in place when the backend set changes (each slot
 * names a live backend at every moment). */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct maglev_table);
} lb_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_backend);
} lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct lb_ct_key);
	__type(value, struct lb_ct);
} lb_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_stats);
} lb_stats SEC(".maps");

/* Service addresses (IPv4; value: unused) the ARP responder answers for. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
} lb_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb_iface);
} lb_ifaces SEC(".maps");

/* An Ethernet/IPv4 ARP packet after the Ethernet header. */
struct arp4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 spa;
	__u8 tha[ETH_ALEN];
	__be32 tpa;
} __attribute__((packed));

#ifndef ETH_P_ARP
#define ETH_P_ARP 0x0806
#endif

/* Answers a container's ARP request for a service address with its
 * gateway's MAC (sent straight back out to the container); anything else
 * passes. Only on interfaces the control side gave a gateway MAC. */
static __always_inline int arp_reply(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct arp4 *a = (void *)(eth + 1);
	if ((void *)(a + 1) > end)
		return TC_ACT_OK;
	if (a->hrd != bpf_htons(1) || a->pro != bpf_htons(ETH_P_IP) || a->hln != ETH_ALEN || a->pln != 4 ||
	    a->op != bpf_htons(1))
		return TC_ACT_OK;
	__u32 ifindex = skb->ifindex;
	struct lb_iface *ifc = bpf_map_lookup_elem(&lb_ifaces, &ifindex);
	if (!ifc)
		return TC_ACT_OK;
	__u32 vip = a->tpa;
	if (!bpf_map_lookup_elem(&lb_vips, &vip))
		return TC_ACT_OK;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, ifc->gw_mac, ETH_ALEN);
	__be32 asker = a->spa;
	__builtin_memcpy(eth->h_dest, a->sha, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	a->op = bpf_htons(2);
	__builtin_memcpy(a->tha, a->sha, ETH_ALEN);
	a->tpa = asker;
	__builtin_memcpy(a->sha, mac, ETH_ALEN);
	a->spa = vip;
	return bpf_redirect(ifindex, 0);
}

/* Counts a packet of `len` bytes (none: a socket-level pick) and a new
 * flow sent to a backend. */
static __always_inline void count(__u32 backend_id, __u32 len, int new_flow)
{
	struct lb_stats *st = bpf_map_lookup_elem(&lb_stats, &backend_id);
	if (!st) {
		struct lb_stats zero = {};
		bpf_map_update_elem(&lb_stats, &backend_id, &zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&lb_stats, &backend_id);
		if (!st)
			return;
	}
	if (len) {
		st->packets++;
		st->bytes += len;
	}
	if (new_flow)
		st->flows++;
}

#define IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define IP_DST_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, daddr))
#define IP_SRC_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))

/* A flow's hash (for its Maglev slot): a murmur-style mix of the tuple. */
static __always_inline __u32 flow_hash(__u32 saddr, __u32 daddr, __u16 sport, __u16 dport, __u8 proto)
{
	__u64 h = ((__u64)saddr << 32) ^ daddr;
	h ^= ((__u64)sport << 24) ^ ((__u64)dport << 8) ^ proto;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return (__u32)h;
}

/* One's-complement incremental update (RFC 1624) of checksum `check`
 * after a 32-bit field changes from `from` to `to` (all as stored in the
 * packet: the arithmetic is byte-order independent). */
static __always_inline __u16 csum_replace4(__u16 check, __u32 from, __u32 to)
{
	__u32 sum = (__u16)~check;
	sum += (__u16)~(from & 0xffff) + (__u16)~(from >> 16);
	sum += (to & 0xffff) + (to >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Rewrites address (at addr_off) and port (at port_off) of an IPv4 packet,
 * fixing the IP and L4 checksums (csum_off; UDP without checksum keeps 0).
 * The L4 checksum goes through the helper, which knows how the skb's
 * checksum is kept (offloaded, complete or none); the IP header (never
 * offloaded on IPv4) and the fields themselves are written directly: two
 * helper calls instead of five. */
static __always_inline int rewrite(struct __sk_buff *skb, __u32 addr_off, __u32 port_off, __u32 csum_off,
				   __be32 old_addr, __be32 new_addr, __be16 old_port, __be16 new_port, int udp)
{
	__u64 flags = BPF_F_PSEUDO_HDR | sizeof(new_addr);
	if (udp)
		flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, flags) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, (udp ? BPF_F_MARK_MANGLED_0 : 0) | sizeof(new_port)) < 0)
		return -1;
	/* The helpers may have moved the data: fresh pointers. */
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return -1;
	__be32 *addr = data + addr_off;
	__be16 *port = data + port_off;
	if ((void *)(addr + 1) > end || (void *)(port + 1) > end)
		return -1;
	ip->check = csum_replace4(ip->check, old_addr, new_addr);
	*addr = new_addr;
	*port = new_port;
	return 0;
}

/* The reply-direction key of a flow between a backend and a client. */
static __always_inline void reply_key(struct lb_ct_key *k, __be32 backend, __be16 bport, __be32 client, __be16 cport,
				      __u8 proto)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->saddr[0] = backend;
	k->daddr[0] = client;
	k->sport = bport;
	k->dport = cport;
	k->proto = proto;
	k->dir = LB_CT_REPLY;
}

/* Tracks the reply direction of a balanced flow: the backend's answers to
 * the client get the service address back as their source. */
static __always_inline void track_reply(const struct lb_backend *be, __be32 client, __be16 cport, __u8 proto,
					__be32 svc_addr, __be16 svc_port, __u32 svc_id, __u32 backend_id, __u64 now,
					__u16 flags)
{
	struct lb_ct_key k;
	reply_key(&k, be->addr[0], be->port, client, cport, proto);
	struct lb_ct rev = {.last_seen_ns = now, .svc_id = svc_id, .backend_id = backend_id, .flags = flags};
	rev.nat_addr[0] = svc_addr;
	rev.nat_port = svc_port;
	bpf_map_update_elem(&lb_ct, &k, &rev, BPF_ANY);
}

#ifndef AF_INET
#define AF_INET 2
#endif

/* After DNAT: when the backend sits on the very bridge the packet came in
 * on (the client sent it to the gateway's MAC, and the route to the backend
 * leaves through the device owning that MAC), address it to the backend's
 * MAC so the bridge delivers it at layer 2, as it does traffic sent
 * straight to the backend, instead of through the host's IP stack and back
 * out (most of what the VIP path cost over direct). Anything else (no
 * neighbour entry yet, another device, forwarding off) is routed as
 * before. Same bridge means same network: no policy is bypassed. */
static __always_inline void deliver_on_bridge(struct __sk_buff *skb, __be32 saddr, __be32 daddr)
{
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ingress_ifindex;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return;
	for (int i = 0; i < ETH_ALEN; i++)
		if (eth->h_dest[i] != fib.smac[i])
			return;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
}

/* Where a program runs: the three entry points below share one body. */
#define FROM_CONTAINER 0 /* host side of a container veth, ingress */
#define FROM_WORLD 1     /* the node's underlay interface, ingress */
#define TO_WORLD 2       /* the node's underlay interface, egress */

/* Flags kept across a flow's packets (the rest follow its TCP state). */
#define LB_CT_KEEP (LB_CT_NORTH_SOUTH | LB_CT_SNAT)

static __always_inline int lb(struct __sk_buff *skb, const int where)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (where == FROM_CONTAINER && eth->h_proto == bpf_htons(ETH_P_ARP))
		return arp_reply(skb);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return TC_ACT_OK;
	/* Fragments carry no ports: left alone. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return TC_ACT_OK;
	__u8 proto = ip->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return TC_ACT_OK;
	__u32 l4 = ETH_HLEN + ip->ihl * 4;
	__be16 *ports = data + l4;
	if ((void *)(ports + 2) > end)
		return TC_ACT_OK;
	if (proto == IPPROTO_TCP && data + l4 + sizeof(struct tcphdr) > end)
		return TC_ACT_OK;
	if (proto == IPPROTO_UDP && data + l4 + sizeof(struct udphdr) > end)
		return TC_ACT_OK;
	int udp = proto == IPPROTO_UDP;
	__u32 csum_off = l4 + (udp ? __builtin_offsetof(struct udphdr, check) : __builtin_offsetof(struct tcphdr, check));
	__be32 saddr = ip->saddr, daddr = ip->daddr;
	__be16 sport = ports[0], dport = ports[1];
	__u64 now = bpf_ktime_get_ns();
	__u16 closing = 0;
	int syn = 0;
	if (!udp) {
		struct tcphdr *th = data + l4;
		if ((void *)(th + 1) > end)
			return TC_ACT_OK;
		if (th->fin || th->rst)
			closing = LB_CT_CLOSING;
		syn = th->syn && !th->ack;
	}

	/* A reply of a NATed flow: give it the service address back. East-west
	 * at the backend's veth; north-south where it leaves the node (its new
	 * source, a node address, would be a martian coming in on a bridge). */
	struct lb_ct_key key = {};
	key.saddr[0] = saddr;
	key.daddr[0] = daddr;
	key.sport = sport;
	key.dport = dport;
	key.proto = proto;
	key.dir = LB_CT_REPLY;
	if (where != FROM_WORLD) {
		struct lb_ct *rct = bpf_map_lookup_elem(&lb_ct, &key);
		if (rct) {
			int ns = (rct->flags & LB_CT_NORTH_SOUTH) != 0;
			if (ns != (where == TO_WORLD))
				return TC_ACT_OK;
			rct->last_seen_ns = now;
			rct->flags |= LB_CT_SEEN_REPLY | closing;
			if (rewrite(skb, IP_SRC_OFF, l4, csum_off, saddr, rct->nat_addr[0], sport, rct->nat_port, udp) < 0)
				return TC_ACT_SHOT;
			return TC_ACT_OK;
		}
	}
	if (where == TO_WORLD)
		return TC_ACT_OK;

	/* A flow already balanced keeps its backend unless that one is gone. */
	key.dir = LB_CT_FORWARD;
	struct lb_backend *be = 0;
	__u32 backend_id = 0, svc_id = 0;
	__u16 keep = 0;
	int new_flow = 0;
	struct lb_ct *ct = bpf_map_lookup_elem(&lb_ct, &key);
	if (ct) {
		backend_id = ct->backend_id;
		svc_id = ct->svc_id;
		keep = ct->flags & LB_CT_KEEP;
		be = bpf_map_lookup_elem(&lb_backends, &backend_id);
		if (be && be->state == LB_BACKEND_GONE)
			be = 0;
		/* Tracked flows stay on the side they began: from containers or
		 * from the world (a tuple is never both). */
		if (be && (keep & LB_CT_NORTH_SOUTH) != (where == FROM_WORLD ? LB_CT_NORTH_SOUTH : 0))
			return TC_ACT_OK;
		if (be) {
			ct->last_seen_ns = now;
			ct->flags = keep | (syn ? closing : (ct->flags | closing));
			/* A new connection on a tuple tracked before: its reply
			 * entry may be gone (a direct connection from the same
			 * port removed it); write it again. */
			if (syn)
				track_reply(be, saddr, sport, proto, daddr, dport, svc_id, backend_id, now,
					    keep & LB_CT_NORTH_SOUTH);
		}
	}
	if (!be) {
		struct lb_svc_key sk = {};
		sk.addr[0] = daddr;
		sk.port = dport;
		sk.proto = proto;
		sk.family = LB_FAMILY_V4;
		struct lb_svc *svc = bpf_map_lookup_elem(&lb_services, &sk);
		/* Published ports serve the world; VIPs serve containers. */
		if (svc && ((svc->flags & LB_SVC_NORTH_SOUTH) != 0) != (where == FROM_WORLD))
			return TC_ACT_OK;
		if (!svc) {
			/* A new connection straight to an address and port that once
			 * backed a NATed flow from this very client port: the old
			 * reply entry must not rewrite this one's replies. */
			if (syn) {
				struct lb_ct_key stale;
				reply_key(&stale, daddr, dport, saddr, sport, proto);
				bpf_map_delete_elem(&lb_ct, &stale);
			}
			return TC_ACT_OK;
		}
		if (svc->table_size == 0)
			return TC_ACT_SHOT; /* a service without backends: refuse */
		void *table = bpf_map_lookup_elem(&lb_maglev, &svc->id);
		if (!table)
			return TC_ACT_SHOT;
		__u32 slot = flow_hash(saddr, daddr, sport, dport, proto) % svc->table_size;
		__u32 *id = bpf_map_lookup_elem(table, &slot);
		if (!id)
			return TC_ACT_SHOT;
		backend_id = *id;
		svc_id = svc->id;
		be = bpf_map_lookup_elem(&lb_backends, &backend_id);
		if (!be || be->state == LB_BACKEND_GONE)
			return TC_ACT_SHOT;
		if (svc->flags & LB_SVC_NORTH_SOUTH)
			keep = LB_CT_NORTH_SOUTH | ((svc->flags & LB_SVC_SNAT) ? LB_CT_SNAT : 0);
		struct lb_ct fwd = {.last_seen_ns = now, .svc_id = svc_id, .backend_id = backend_id, .flags = keep | closing};
		fwd.nat_addr[0] = be->addr[0];
		fwd.nat_port = be->port;
		bpf_map_update_elem(&lb_ct, &key, &fwd, BPF_ANY);
		track_reply(be, saddr, sport, proto, daddr, dport, svc_id, backend_id, now,
			    closing | (keep & LB_CT_NORTH_SOUTH));
		new_flow = 1;
	}
	if (where == FROM_WORLD)
		skb->mark |= LB_MARK_NORTH_SOUTH | ((keep & LB_CT_SNAT) ? LB_MARK_SNAT : 0);
	count(backend_id, skb->len, new_flow);
	__be32 to_addr = be->addr[0];
	__be16 to_port = be->port;
	if (rewrite(skb, IP_DST_OFF, l4 + 2, csum_off, daddr, to_addr, dport, to_port, udp) < 0)
		return TC_ACT_SHOT;
	if (where == FROM_CONTAINER)
		deliver_on_bridge(skb, saddr, to_addr);
	return TC_ACT_OK;
}

/* Socket-level balancing: a container's socket that connects (or, UDP,
 * sends) to a VIP is given a backend's address right there, so its packets
 * need no NAT at all; the tc programs then see plain traffic to a backend. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct lb_sock);
} lb_socks SEC(".maps");

/* Points a socket asking for a VIP at one of its backends (same backend
 * for the socket's life: the Maglev slot of its cookie). */
static __always_inline void sock_pick(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct lb_svc_key sk = {};
	sk.addr[0] = ctx->user_ip4;
	sk.port = (__be16)ctx->user_port;
	sk.proto = proto;
	sk.family = LB_FAMILY_V4;
	struct lb_svc *svc = bpf_map_lookup_elem(&lb_services, &sk);
	if (!svc || (svc->flags & LB_SVC_NORTH_SOUTH) || svc->table_size == 0)
		return;
	void *table = bpf_map_lookup_elem(&lb_maglev, &svc->id);
	if (!table)
		return;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 slot = flow_hash((__u32)cookie, (__u32)(cookie >> 32), sk.port, 0, proto) % svc->table_size;
	__u32 *id = bpf_map_lookup_elem(table, &slot);
	if (!id)
		return;
	__u32 backend_id = *id;
	struct lb_backend *be = bpf_map_lookup_elem(&lb_backends, &backend_id);
	if (!be || be->state != LB_BACKEND_ACTIVE)
		return;
	struct lb_sock *old = bpf_map_lookup_elem(&lb_socks, &cookie);
	int new_flow = !old || old->vip != sk.addr[0] || old->vport != sk.port || old->backend != be->addr[0];
	if (new_flow) {
		struct lb_sock s = {.vip = sk.addr[0], .vport = sk.port, .backend = be->addr[0], .bport = be->port};
		bpf_map_update_elem(&lb_socks, &cookie, &s, BPF_ANY);
		count(backend_id, 0, 1);
	}
	ctx->user_ip4 = be->addr[0];
	ctx->user_port = be->port;
}

/* The VIP shown back where the socket would see the backend. */
static __always_inline void sock_unpick(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct lb_sock *s = bpf_map_lookup_elem(&lb_socks, &cookie);
	if (s && ctx->user_ip4 == s->backend && (__be16)ctx->user_port == s->bport) {
		ctx->user_ip4 = s->vip;
		ctx->user_port = s->vport;
	}
}

SEC("cgroup/connect4")
int lb_sock_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_UDP)
		sock_pick(ctx, ctx->protocol);
	return 1;
}

SEC("cgroup/sendmsg4")
int lb_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == IPPROTO_UDP)
		sock_pick(ctx, IPPROTO_UDP);
	return 1;
}

SEC("cgroup/recvmsg4")
int lb_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	sock_unpick(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int lb_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	sock_unpick(ctx);
	return 1;
}

/* Packets leaving a container: VIPs balanced, replies reverse-NATed, ARP
 * for VIPs answered. */
SEC("classifier")
int lb_from_container(struct __sk_buff *skb)
{
	return lb(skb, FROM_CONTAINER);
}

/* Packets arriving at the node: published ports balanced. */
SEC("classifier")
int lb_from_world(struct __sk_buff *skb)
{
	return lb(skb, FROM_WORLD);
}

/* Packets leaving the node: replies of published ports reverse-NATed. */
SEC("classifier")
int lb_to_world(struct __sk_buff *skb)
{
	return lb(skb, TO_WORLD);
}
