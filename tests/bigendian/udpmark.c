/* udpmark: one UDP flow as a tunnel would send it, for scripts/vm-bigendian.sh.
 *
 * Usage: udpmark UPLINK SPORT INNER_TOS OUTER_TOS
 *   e.g. udpmark dummy0 51820 0xb9 0x02
 *
 * One connected UDP socket (a connected socket stamps every packet with its
 * own skb->hash, as WireGuard keeps the inner packet's hash on the outer one)
 * from SPORT to 10.9.0.2:9, which is routed through the tunnel device:
 *   1. unless INNER_TOS is "-", two "inner" packets with INNER_TOS, out by the
 *      route (the tunnel device, where pdscp's reader reads their DSCP);
 *   2. one "outer" packet with OUTER_TOS, bound to UPLINK (SO_BINDTODEVICE),
 *      where pdscp's writer may rewrite its DSCP;
 *   3. that outer packet captured on UPLINK with an AF_PACKET socket (packet
 *      taps see what leaves after tc/TCX egress).
 * Prints "tos=0xNN checksum=ok|bad" for the captured packet (exit 0), or a
 * message and exits 2 if none was seen within 2 s, 1 on other errors.
 * Built static for the guest; the numbers are read on the guest's byte order.
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* The Internet checksum over the header, read as big-endian 16-bit words
 * whatever the host's byte order; 0 for a valid header. */
static unsigned short csum(const unsigned char *p, int n)
{
	unsigned long s = 0;

	for (int i = 0; i + 1 < n; i += 2)
		s += (unsigned long)(p[i] << 8 | p[i + 1]);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (unsigned short)~s;
}

static int parse_tos(const char *s)
{
	char *end;
	long v = strtol(s, &end, 0);

	if (*s == '\0' || *end != '\0' || v < 0 || v > 255) {
		fprintf(stderr, "udpmark: bad TOS %s\n", s);
		exit(1);
	}
	return (int)v;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: udpmark UPLINK SPORT INNER_TOS|- OUTER_TOS\n");
		return 1;
	}
	const char *uplink = argv[1];
	int sport = atoi(argv[2]);
	int inner = strcmp(argv[3], "-") ? parse_tos(argv[3]) : -1;
	int outer = parse_tos(argv[4]);
	unsigned int ifindex = if_nametoindex(uplink);

	if (ifindex == 0 || sport <= 0 || sport > 65535) {
		fprintf(stderr, "udpmark: bad uplink %s or port %s\n", uplink, argv[2]);
		return 1;
	}

	struct sockaddr_in src = { .sin_family = AF_INET, .sin_port = htons(sport) };
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(9) };
	int one = 1, u = socket(AF_INET, SOCK_DGRAM, 0);

	inet_pton(AF_INET, "10.9.0.2", &dst.sin_addr);
	setsockopt(u, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (u < 0 || bind(u, (void *)&src, sizeof(src)) || connect(u, (void *)&dst, sizeof(dst))) {
		perror("udpmark: udp socket");
		return 1;
	}
	if (inner >= 0) {
		if (setsockopt(u, IPPROTO_IP, IP_TOS, &inner, sizeof(inner))) {
			perror("udpmark: IP_TOS");
			return 1;
		}
		for (int i = 0; i < 2; i++)
			if (send(u, "inner", 5, 0) != 5) {
				perror("udpmark: send inner");
				return 1;
			}
	}

	/* SOCK_DGRAM: the capture starts at the network header, whatever the
	 * L2. ETH_P_ALL: only such taps see outgoing packets. */
	int p = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL));
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
				  .sll_ifindex = (int)ifindex };
	struct timeval tv = { .tv_sec = 2 };

	if (p < 0 || bind(p, (void *)&ll, sizeof(ll))) {
		perror("udpmark: packet socket");
		return 1;
	}
	setsockopt(p, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	if (setsockopt(u, IPPROTO_IP, IP_TOS, &outer, sizeof(outer)) ||
	    setsockopt(u, SOL_SOCKET, SO_BINDTODEVICE, uplink, strlen(uplink) + 1)) {
		perror("udpmark: IP_TOS/SO_BINDTODEVICE");
		return 1;
	}
	if (send(u, "outer", 5, 0) != 5) {
		perror("udpmark: send outer");
		return 1;
	}

	unsigned char buf[2048];
	for (;;) {
		struct sockaddr_ll from;
		socklen_t fromlen = sizeof(from);
		ssize_t n = recvfrom(p, buf, sizeof(buf), 0, (void *)&from, &fromlen);

		if (n < 0) {
			printf("udpmark: no UDP packet from port %d seen leaving %s\n", sport, uplink);
			return 2;
		}
		if (from.sll_pkttype != PACKET_OUTGOING || from.sll_protocol != htons(ETH_P_IP) ||
		    n < 28)
			continue;
		struct iphdr *ip = (void *)buf;
		int hlen = ip->ihl * 4;
		if (ip->version != 4 || ip->protocol != IPPROTO_UDP || hlen < 20 || n < hlen + 8)
			continue;
		struct udphdr *udp = (void *)(buf + hlen);
		if (ntohs(udp->source) != sport)
			continue;
		printf("tos=0x%02x checksum=%s\n", ip->tos, csum(buf, hlen) == 0 ? "ok" : "bad");
		return 0;
	}
}
