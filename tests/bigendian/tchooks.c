/* tchooks: what runs on a device's tc and TCX hooks, for scripts/vm-bigendian.sh
 * (the guest has busybox, whose tc cannot list clsact filters, and no bpftool).
 *
 * Usage: tchooks DEV...
 * Prints, one line each:
 *   DEV qdisc KIND                               every qdisc (e.g. clsact)
 *   DEV filter ingress|egress KIND [name=N] [id=I]  every clsact filter
 *   DEV tcx ingress|egress N                     programs attached by TCX
 *   DEV tcx unsupported                          kernel without TCX (< 6.6)
 * Its own netlink and bpf() code, independent of pdscp's. Exits 1 on errors.
 */
#include <errno.h>
#include <linux/bpf.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Not in the 6.1 uapi headers of Debian 12's cross libc. */
#define PDSCP_BPF_TCX_INGRESS 46
#define PDSCP_BPF_TCX_EGRESS 47

static int nl;
static unsigned int seq;

static void print_filter(const char *dev, const char *dir, struct nlmsghdr *h)
{
	struct tcmsg *t = NLMSG_DATA(h);
	int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*t));
	char kind[32] = "?", name[256] = "";
	unsigned int id = 0;

	for (struct rtattr *a = (void *)((char *)t + NLMSG_ALIGN(sizeof(*t))); RTA_OK(a, len);
	     a = RTA_NEXT(a, len)) {
		if (a->rta_type == TCA_KIND) {
			snprintf(kind, sizeof(kind), "%.*s", (int)RTA_PAYLOAD(a), (char *)RTA_DATA(a));
		} else if (a->rta_type == TCA_OPTIONS) {
			int olen = (int)RTA_PAYLOAD(a);
			for (struct rtattr *o = RTA_DATA(a); RTA_OK(o, olen); o = RTA_NEXT(o, olen)) {
				if (o->rta_type == TCA_BPF_NAME)
					snprintf(name, sizeof(name), "%.*s", (int)RTA_PAYLOAD(o),
						 (char *)RTA_DATA(o));
				else if (o->rta_type == TCA_BPF_ID && RTA_PAYLOAD(o) >= 4)
					memcpy(&id, RTA_DATA(o), 4);
			}
		}
	}
	/* A filter chain's head (handle 0) carries only the kind. */
	if (t->tcm_handle == 0 && !name[0] && !id)
		return;
	printf("%s filter %s %s", dev, dir, kind);
	if (name[0])
		printf(" name=%s", name);
	if (id)
		printf(" id=%u", id);
	printf("\n");
}

static void print_qdisc(const char *dev, int ifindex, struct nlmsghdr *h)
{
	struct tcmsg *t = NLMSG_DATA(h);
	int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*t));

	if (t->tcm_ifindex != ifindex)
		return;
	for (struct rtattr *a = (void *)((char *)t + NLMSG_ALIGN(sizeof(*t))); RTA_OK(a, len);
	     a = RTA_NEXT(a, len))
		if (a->rta_type == TCA_KIND)
			printf("%s qdisc %.*s\n", dev, (int)RTA_PAYLOAD(a), (char *)RTA_DATA(a));
}

/* One netlink dump; 0, or -errno if the kernel refused it. */
static int dump(int type, int ifindex, uint32_t parent, const char *dev, const char *dir)
{
	struct {
		struct nlmsghdr h;
		struct tcmsg t;
	} req = {
		.h = { .nlmsg_len = sizeof(req), .nlmsg_type = (unsigned short)type,
		       .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = ++seq },
		.t = { .tcm_family = AF_UNSPEC, .tcm_ifindex = ifindex, .tcm_parent = parent },
	};
	static char buf[65536];

	if (send(nl, &req, sizeof(req), 0) < 0)
		return -errno;
	for (;;) {
		ssize_t n = recv(nl, buf, sizeof(buf), 0);
		int left = (int)n;

		if (n < 0)
			return -errno;
		for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_seq != seq)
				continue;
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(h);
				return e->error;
			}
			if (type == RTM_GETTFILTER && h->nlmsg_type == RTM_NEWTFILTER)
				print_filter(dev, dir, h);
			else if (type == RTM_GETQDISC && h->nlmsg_type == RTM_NEWQDISC)
				print_qdisc(dev, ifindex, h);
		}
	}
}

/* Programs on a TCX hook: BPF_PROG_QUERY by ifindex. -errno on failure. */
static long tcx_count(int ifindex, unsigned int type)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.query.target_fd = (unsigned int)ifindex; /* target_ifindex since 6.6 */
	attr.query.attach_type = type;
	if (syscall(SYS_bpf, BPF_PROG_QUERY, &attr, sizeof(attr)) < 0)
		return -errno;
	return attr.query.prog_cnt;
}

int main(int argc, char **argv)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	int status = 0;

	nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (nl < 0 || bind(nl, (void *)&sa, sizeof(sa))) {
		perror("tchooks: netlink");
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		const char *dev = argv[i];
		int ifindex = (int)if_nametoindex(dev);
		long in, out;
		int err;

		if (!ifindex) {
			fprintf(stderr, "tchooks: no device %s\n", dev);
			status = 1;
			continue;
		}
		if ((err = dump(RTM_GETQDISC, ifindex, 0, dev, NULL)) < 0) {
			fprintf(stderr, "tchooks: %s: qdisc dump: %s\n", dev, strerror(-err));
			status = 1;
		}
		/* Without a clsact qdisc the kernel refuses the filter dump (EINVAL):
		 * then there are no filters to list. */
		err = dump(RTM_GETTFILTER, ifindex, TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS), dev,
			   "ingress");
		if (err < 0 && err != -EINVAL && err != -ENOENT) {
			fprintf(stderr, "tchooks: %s: filter dump: %s\n", dev, strerror(-err));
			status = 1;
		}
		err = dump(RTM_GETTFILTER, ifindex, TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS), dev,
			   "egress");
		if (err < 0 && err != -EINVAL && err != -ENOENT) {
			fprintf(stderr, "tchooks: %s: filter dump: %s\n", dev, strerror(-err));
			status = 1;
		}
		in = tcx_count(ifindex, PDSCP_BPF_TCX_INGRESS);
		out = tcx_count(ifindex, PDSCP_BPF_TCX_EGRESS);
		if (in == -EINVAL || out == -EINVAL) {
			printf("%s tcx unsupported\n", dev);
		} else if (in < 0 || out < 0) {
			fprintf(stderr, "tchooks: %s: BPF_PROG_QUERY: %s\n", dev,
				strerror((int)-(in < 0 ? in : out)));
			status = 1;
		} else {
			printf("%s tcx ingress %ld\n%s tcx egress %ld\n", dev, in, dev, out);
		}
	}
	return status;
}
