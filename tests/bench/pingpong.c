/*
 * pingpong: latency with exactly one packet in flight over one DPDK port.
 *
 * Sends one UDP frame, busy-polls until that frame comes back (a reflector on the other
 * side: testpmd in macswap mode, or an OVS flow "actions=in_port"), records the round trip
 * in TSC cycles, and only then sends the next.  testpmd has no such mode, hence this file;
 * the benchmark compiles it at run time with the packaged DPDK (pkg-config libdpdk).
 *
 *   pingpong <EAL args> -- --sizes 60,1514 --count 20000 [--warmup-s 10] [--timeout-us 200000] [--hold-stdin]
 *
 * --hold-stdin: after the results, print "pingpong: done" and keep the port open until stdin
 * ends, so the caller can stop the peer's forwarding first (DPDK 22.11's memif can crash a peer
 * that polls while its other side closes).
 *
 * Sizes are frame lengths without the 4-byte FCS (60 = a 64-byte frame on the wire).
 * Prints one JSON object per size on stdout, e.g.
 *   {"size": 60, "count": 20000, "lost": 0, "min_ns": 9000, "p50_ns": ..., ...}
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#define MAGIC 0x70696e67u /* "ping" */
#define HDR_LEN (sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) + sizeof(struct rte_udp_hdr))
#define MAX_SIZES 8
#define BURST 32

struct payload {
	uint32_t magic;
	uint32_t seq;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *sorted, unsigned n, double q)
{
	/* nearest rank */
	unsigned rank = (unsigned)(q * n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

static struct rte_mbuf *make_frame(struct rte_mempool *pool, const struct rte_ether_addr *src, unsigned size, uint32_t seq)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
	if (m == NULL)
		return NULL;
	char *data = rte_pktmbuf_append(m, (uint16_t)size);
	if (data == NULL) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	memset(data, 0, size);
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)data;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	struct rte_udp_hdr *udp = (struct rte_udp_hdr *)(ip + 1);
	struct payload *pl = (struct payload *)(udp + 1);
	static const struct rte_ether_addr dst = {{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}};
	rte_ether_addr_copy(&dst, &eth->dst_addr);
	rte_ether_addr_copy(src, &eth->src_addr);
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(size - sizeof(*eth)));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = rte_cpu_to_be_32(RTE_IPV4(10, 251, 0, 1));
	ip->dst_addr = rte_cpu_to_be_32(RTE_IPV4(10, 251, 0, 2));
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	udp->src_port = rte_cpu_to_be_16(9000);
	udp->dst_port = rte_cpu_to_be_16(9001);
	udp->dgram_len = rte_cpu_to_be_16((uint16_t)(size - sizeof(*eth) - sizeof(*ip)));
	pl->magic = MAGIC;
	pl->seq = seq;
	return m;
}

/* One round trip: 0 and the cycles taken, or -1 on timeout. */
static int ping_once(uint16_t port, struct rte_mempool *pool, const struct rte_ether_addr *src, unsigned size, uint32_t seq,
		     uint64_t timeout_cycles, uint64_t *cycles)
{
	struct rte_mbuf *m = make_frame(pool, src, size, seq);
	struct rte_mbuf *rx[BURST];
	if (m == NULL)
		return -1;
	uint64_t t0 = rte_rdtsc_precise();
	while (rte_eth_tx_burst(port, 0, &m, 1) == 0) {
		if (rte_rdtsc() - t0 > timeout_cycles) {
			rte_pktmbuf_free(m);
			return -1;
		}
	}
	for (;;) {
		uint16_t n = rte_eth_rx_burst(port, 0, rx, BURST);
		int found = 0;
		uint64_t t1 = 0;
		if (n)
			t1 = rte_rdtsc_precise();
		for (uint16_t i = 0; i < n; i++) {
			if (rte_pktmbuf_data_len(rx[i]) >= HDR_LEN + sizeof(struct payload)) {
				const struct payload *pl = rte_pktmbuf_mtod_offset(rx[i], const struct payload *, HDR_LEN);
				if (pl->magic == MAGIC && pl->seq == seq)
					found = 1;
			}
			rte_pktmbuf_free(rx[i]);
		}
		if (found) {
			*cycles = t1 - t0;
			return 0;
		}
		if (rte_rdtsc() - t0 > timeout_cycles)
			return -1;
	}
}

int main(int argc, char **argv)
{
	int ret = rte_eal_init(argc, argv);
	if (ret < 0) {
		fprintf(stderr, "pingpong: EAL init failed\n");
		return 2;
	}
	argc -= ret;
	argv += ret;

	unsigned sizes[MAX_SIZES] = {60};
	unsigned n_sizes = 1, count = 10000;
	double warmup_s = 10.0, timeout_us = 200000.0;
	int hold_stdin = 0;
	static const struct option opts[] = {
		{"sizes", required_argument, NULL, 's'},
		{"count", required_argument, NULL, 'c'},
		{"warmup-s", required_argument, NULL, 'w'},
		{"timeout-us", required_argument, NULL, 't'},
		{"hold-stdin", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 's': {
			n_sizes = 0;
			for (char *tok = strtok(optarg, ","); tok && n_sizes < MAX_SIZES; tok = strtok(NULL, ","))
				sizes[n_sizes++] = (unsigned)strtoul(tok, NULL, 10);
			break;
		}
		case 'c':
			count = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'w':
			warmup_s = strtod(optarg, NULL);
			break;
		case 't':
			timeout_us = strtod(optarg, NULL);
			break;
		case 'h':
			hold_stdin = 1;
			break;
		default:
			fprintf(stderr, "pingpong: unknown option\n");
			return 2;
		}
	}
	for (unsigned i = 0; i < n_sizes; i++) {
		if (sizes[i] < HDR_LEN + sizeof(struct payload) || sizes[i] > 1514) {
			fprintf(stderr, "pingpong: size %u out of range\n", sizes[i]);
			return 2;
		}
	}
	if (count == 0 || rte_eth_dev_count_avail() < 1) {
		fprintf(stderr, "pingpong: no port (or --count 0)\n");
		return 2;
	}
	uint16_t port = 0;
	RTE_ETH_FOREACH_DEV(port) break;

	struct rte_mempool *pool = rte_pktmbuf_pool_create("pingpong", 1023, 32, 0, RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof(conf));
	if (pool == NULL || rte_eth_dev_configure(port, 1, 1, &conf) < 0 ||
	    rte_eth_rx_queue_setup(port, 0, 256, (unsigned)rte_eth_dev_socket_id(port), NULL, pool) < 0 ||
	    rte_eth_tx_queue_setup(port, 0, 256, (unsigned)rte_eth_dev_socket_id(port), NULL) < 0 || rte_eth_dev_start(port) < 0) {
		fprintf(stderr, "pingpong: port setup failed\n");
		return 3;
	}
	struct rte_ether_addr mac;
	rte_eth_macaddr_get(port, &mac);
	uint64_t hz = rte_get_tsc_hz();
	uint64_t timeout_cycles = (uint64_t)(timeout_us * 1e-6 * (double)hz);
	uint64_t *samples = calloc(count, sizeof(uint64_t));
	if (samples == NULL)
		return 3;
	uint32_t seq = 0;
	int status = 0;

	for (unsigned s = 0; s < n_sizes; s++) {
		/* warm up: until the reflector answers (links come up, vhost-user reconnects) */
		uint64_t start = rte_rdtsc(), cycles = 0;
		int answered = 0;
		while (rte_rdtsc() - start < (uint64_t)(warmup_s * (double)hz)) {
			if (ping_once(port, pool, &mac, sizes[s], ++seq, hz / 10, &cycles) == 0 && ++answered >= 100)
				break;
		}
		if (answered == 0) {
			printf("{\"size\": %u, \"count\": 0, \"lost\": 0, \"error\": \"no answer within %.0f s\"}\n", sizes[s], warmup_s);
			fflush(stdout);
			status = 4;
			continue;
		}
		unsigned got = 0, lost = 0;
		while (got < count && lost < 100) {
			if (ping_once(port, pool, &mac, sizes[s], ++seq, timeout_cycles, &cycles) == 0)
				samples[got++] = cycles;
			else
				lost++;
		}
		qsort(samples, got, sizeof(uint64_t), cmp_u64);
		double ns = 1e9 / (double)hz, sum = 0;
		for (unsigned i = 0; i < got; i++)
			sum += (double)samples[i];
		printf("{\"size\": %u, \"count\": %u, \"lost\": %u, \"min_ns\": %.0f, \"p50_ns\": %.0f, \"p95_ns\": %.0f, \"p99_ns\": %.0f, "
		       "\"max_ns\": %.0f, \"mean_ns\": %.0f}\n",
		       sizes[s], got, lost, got ? (double)samples[0] * ns : 0, got ? (double)pct(samples, got, 0.50) * ns : 0,
		       got ? (double)pct(samples, got, 0.95) * ns : 0, got ? (double)pct(samples, got, 0.99) * ns : 0,
		       got ? (double)samples[got - 1] * ns : 0, got ? sum / got * ns : 0);
		fflush(stdout);
	}
	free(samples);
	if (hold_stdin) {
		char buf[64];
		printf("pingpong: done\n");
		fflush(stdout);
		while (read(0, buf, sizeof(buf)) > 0)
			;
	}
	rte_eth_dev_stop(port);
	rte_eth_dev_close(port);
	rte_eal_cleanup();
	return status;
}
