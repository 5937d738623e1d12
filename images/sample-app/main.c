/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sample-app: a reflector on port 0 for dpdk-oci-hook containers.
 *
 * Every packet received on port 0 goes back out of port 0, addressed to its sender and sent
 * from the port's own MAC.  Counters are printed every -s SECONDS (default: never) and when
 * SIGINT or SIGTERM stops it.  Start it through dpdk-entrypoint, which passes the EAL
 * arguments the hook wrote (cores, hugepages, the vhost-user port):
 *
 *     dpdk-entrypoint /usr/local/bin/dpdk-app -s 1
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#define BURST 32
#define RING_SIZE 1024
#define NB_MBUFS 4095

static volatile sig_atomic_t quit;
static uint64_t rx_count, tx_count, drop_count; /* written by the forwarding lcore only */
static struct rte_ether_addr port_mac;

static void on_signal(int sig)
{
	(void)sig;
	quit = 1;
}

static int reflect(void *arg)
{
	uint16_t port = *(uint16_t *)arg;
	struct rte_mbuf *pkts[BURST];

	while (!quit) {
		uint16_t n = rte_eth_rx_burst(port, 0, pkts, BURST);
		if (n == 0)
			continue;
		for (uint16_t i = 0; i < n; i++) {
			struct rte_ether_hdr *eth = rte_pktmbuf_mtod(pkts[i], struct rte_ether_hdr *);
			eth->dst_addr = eth->src_addr;
			eth->src_addr = port_mac;
		}
		uint16_t sent = rte_eth_tx_burst(port, 0, pkts, n);
		if (sent < n)
			rte_pktmbuf_free_bulk(&pkts[sent], n - sent);
		__atomic_store_n(&rx_count, rx_count + n, __ATOMIC_RELAXED);
		__atomic_store_n(&tx_count, tx_count + sent, __ATOMIC_RELAXED);
		__atomic_store_n(&drop_count, drop_count + (n - sent), __ATOMIC_RELAXED);
	}
	return 0;
}

static void print_counts(const char *when)
{
	printf("sample-app: %s rx=%" PRIu64 " tx=%" PRIu64 " dropped=%" PRIu64 "\n", when,
	       __atomic_load_n(&rx_count, __ATOMIC_RELAXED), __atomic_load_n(&tx_count, __ATOMIC_RELAXED),
	       __atomic_load_n(&drop_count, __ATOMIC_RELAXED));
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int ret = rte_eal_init(argc, argv);
	if (ret < 0)
		rte_exit(EXIT_FAILURE, "EAL init failed: start me through dpdk-entrypoint\n");
	argc -= ret;
	argv += ret;

	unsigned int period = 0;
	int opt;
	while ((opt = getopt(argc, argv, "s:")) != -1) {
		if (opt != 's')
			rte_exit(EXIT_FAILURE, "usage: %s [EAL args] -- [-s STATS_SECONDS]\n", argv[0]);
		period = (unsigned int)strtoul(optarg, NULL, 10);
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	uint16_t port = 0;
	if (!rte_eth_dev_is_valid_port(port))
		rte_exit(EXIT_FAILURE, "no port 0: give the container a port (dpdk-oci-hook/vhost-user=1)\n");
	struct rte_mempool *pool = rte_pktmbuf_pool_create("mbufs", NB_MBUFS, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
							   rte_eth_dev_socket_id(port));
	if (pool == NULL)
		rte_exit(EXIT_FAILURE, "cannot create the mbuf pool: %s\n", rte_strerror(rte_errno));
	struct rte_eth_conf conf = {0};
	if (rte_eth_dev_configure(port, 1, 1, &conf) < 0 ||
	    rte_eth_rx_queue_setup(port, 0, RING_SIZE, rte_eth_dev_socket_id(port), NULL, pool) < 0 ||
	    rte_eth_tx_queue_setup(port, 0, RING_SIZE, rte_eth_dev_socket_id(port), NULL) < 0 ||
	    rte_eth_dev_start(port) < 0)
		rte_exit(EXIT_FAILURE, "cannot set up port %u\n", port);
	rte_eth_macaddr_get(port, &port_mac);

	unsigned int worker = rte_get_next_lcore(-1, 1, 0);
	printf("sample-app: reflecting on port %u (" RTE_ETHER_ADDR_PRT_FMT ") from lcore %u\n", port,
	       RTE_ETHER_ADDR_BYTES(&port_mac), worker < RTE_MAX_LCORE ? worker : rte_lcore_id());
	fflush(stdout);
	if (worker < RTE_MAX_LCORE) {
		rte_eal_remote_launch(reflect, &port, worker);
		for (unsigned int tick = 1; !quit; tick++) {
			sleep(1);
			if (period && tick % period == 0)
				print_counts("running");
		}
		rte_eal_wait_lcore(worker);
	} else {
		reflect(&port);
	}
	print_counts("stopped");
	rte_eth_dev_stop(port);
	rte_eth_dev_close(port);
	rte_eal_cleanup();
	return 0;
}
