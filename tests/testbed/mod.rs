//! Test bed for pdscp's integration tests (`mod testbed;`).
//!
//! Two network namespaces joined by a veth "uplink" (`up0`): `a` is the
//! router that runs pdscp, `b` is the far end. VXLAN tunnels with a fixed
//! outer source port stand in for WireGuard (which this machine lacks): like
//! WireGuard they encapsulate in UDP from a fixed port, write outer DSCP 0 and
//! copy only the ECN bits outwards. On top of that: packet capture, a VXLAN
//! parser, bounded traffic generators, an unrelated legacy tc filter with a
//! hit counter, and a helper that runs the pdscp binary.
//!
//! Everything is unique per test (namespace names carry the process id and a
//! counter) and is removed in `Drop`, so tests may run in parallel threads.
//! Only 198.18.0.0/15 and 2001:db8::/32 are used, and only inside the
//! namespaces made here.
//!
//! `ip netns exec` remounts /sys (hiding bpffs), so external commands enter a
//! namespace with `nsenter --net=...`, and in-process sockets are made on a
//! dedicated thread that called `setns` (which affects only that thread).

// Each test crate uses a different subset of this module.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

/// Name of the veth uplink in both namespaces.
pub const UPLINK: &str = "up0";
/// Underlay addresses of `a` and `b` on [`UPLINK`].
pub const A_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const B_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const A_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// Fixed MACs, so neighbour entries can be static (see [`TestBed::new`]).
const A_MAC: &str = "02:00:00:00:00:01";
const B_MAC: &str = "02:00:00:00:00:02";
/// Outer UDP destination port of every tunnel (the VNI tells tunnels apart).
pub const VXLAN_PORT: u16 = 4789;
/// Veth pair that [`tc_filter_add_counter`] mirrors into (the peer drops it).
pub const COUNTER_SINK: &str = "pdsink0";
pub const COUNTER_SINK_PEER: &str = "pdsink0p";
/// Upper bound for any single step (thread join, accept, connect, pdscp run).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `<tag>-<pid>-<n>`: unique within the machine while this process lives.
fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{}-{n}", std::process::id())
}

/// Runs a command, panicking with its stderr if it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

/// A named network namespace (`/run/netns/<name>`), deleted on drop together
/// with all its devices.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `pdscp-<tag>-<pid>-<n>` and brings its `lo` up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("pdscp-{}", unique(tag));
        // A leftover of a crashed run whose pid was recycled would block `add`.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// `/run/netns/<name>`: what `nsenter --net=` and `setns` take.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `sh -c cmd` inside the namespace and returns whatever happened.
    pub fn try_sh(&self, cmd: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(["sh", "-c", cmd])
            .output()
            .unwrap_or_else(|e| panic!("spawning nsenter: {e}"))
    }

    /// Runs `sh -c cmd` inside the namespace; panics with stderr on failure.
    pub fn sh(&self, cmd: &str) -> String {
        let out = self.try_sh(cmd);
        if !out.status.success() {
            panic!(
                "[{}] `{cmd}` failed ({}):\nstdout: {}\nstderr: {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a new thread that has entered this namespace, for
    /// in-process sockets (setns only moves the calling thread).
    pub fn spawn<T, F>(&self, what: &str, f: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let path = self.path();
        thread::Builder::new()
            .name(format!("{what}@{}", self.name))
            .spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            })
            .expect("spawning a thread")
    }

    /// [`Netns::spawn`] and wait for the result.
    pub fn run_in<T, F>(&self, what: &str, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        join(self.spawn(what, f))
    }

    /// ifindex of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let dev = dev.to_owned();
        self.run_in("ifindex", move || ifindex(&dev))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip").args(["netns", "del", &self.name]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
    }
}

/// Joins a thread, re-raising its panic with the original message.
fn join<T>(h: JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// ifindex of `dev` in the calling thread's namespace.
fn ifindex(dev: &str) -> u32 {
    let c = CString::new(dev).expect("device name");
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(idx != 0, "no device {dev}: {}", std::io::Error::last_os_error());
    idx
}

// ---------------------------------------------------------------------------
// The bed
// ---------------------------------------------------------------------------

/// Address family of a tunnel's outer (underlay) header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underlay {
    V4,
    V6,
}

/// Namespace `a` (pdscp's router) and `b` (far end), joined by `up0`.
pub struct TestBed {
    pub a: Netns,
    pub b: Netns,
    /// Unique bpffs directory for pdscp's pins; removed on drop.
    pub pin_root: PathBuf,
}

impl TestBed {
    /// Builds the two namespaces and the uplink:
    /// a `up0` 198.18.0.1/24 2001:db8::1/64 <-> b `up0` 198.18.0.2/24 2001:db8::2/64.
    ///
    /// Neighbour entries are static (here and for tunnels), so no ARP/ND
    /// precedes the first packet of a flow and packet counts are exact
    /// without a warm-up ping.
    ///
    /// UDP-tunnel segmentation offload is off on both `up0`: a TCP super-packet
    /// then still crosses the tunnel device and the uplink's tc egress hook
    /// whole, and is cut into MTU-sized frames after it (in
    /// `validate_xmit_skb`), as on a NIC without tunnel TSO. With the veth
    /// defaults, 64 KB frames would reach `b`. Plain TSO/GSO stay on: they do
    /// not matter for tunnel traffic.
    pub fn new() -> TestBed {
        let a = Netns::new("a");
        let b = Netns::new("b");
        a.sh(&format!(
            "ip link add {UPLINK} type veth peer name {UPLINK} netns {}",
            b.name
        ));
        for (ns, mac, v4, v6, peer_mac, peer_v4, peer_v6) in [
            (&a, A_MAC, A_V4, A_V6, B_MAC, B_V4, B_V6),
            (&b, B_MAC, B_V4, B_V6, A_MAC, A_V4, A_V6),
        ] {
            ns.sh(&format!(
                "set -e
                 ip link set {UPLINK} address {mac}
                 ip addr add {v4}/24 dev {UPLINK}
                 ip addr add {v6}/64 dev {UPLINK} nodad
                 ip neigh replace {peer_v4} lladdr {peer_mac} dev {UPLINK} nud permanent
                 ip neigh replace {peer_v6} lladdr {peer_mac} dev {UPLINK} nud permanent
                 ip link set {UPLINK} up"
            ));
            set_features_off(
                ns,
                UPLINK,
                &["tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation"],
            );
        }
        TestBed {
            a,
            b,
            pin_root: PathBuf::from(format!("/sys/fs/bpf/pdscp-test-{}", unique("pins"))),
        }
    }

    /// Creates VXLAN device `name` in both namespaces: VNI `vni`, outer UDP
    /// source port fixed at `srcport` (WireGuard's listen port), destination
    /// port [`VXLAN_PORT`], remote = the other side's underlay address, MTU
    /// derived from `up0` (1450 over IPv4, 1430 over IPv6).
    ///
    /// Inner addresses: 198.19.`inner_index`.1/24 and
    /// 2001:db8:`inner_index`::1/64 in `a`, `.2` / `::2` in `b` (the third
    /// IPv6 group is `inner_index`, so it must be >= 1 to stay off the
    /// underlay's 2001:db8::/64).
    ///
    /// TOS is left at its default 0 (not `inherit`): outer DSCP 0, as with
    /// WireGuard; the kernel still copies the inner ECN bits outwards.
    pub fn add_vxlan(
        &self,
        name: &str,
        vni: u32,
        srcport: u16,
        underlay: Underlay,
        inner_index: u8,
    ) -> Tunnel {
        assert!(
            inner_index >= 1,
            "inner_index 0 would overlap the underlay 2001:db8::/64"
        );
        let srcport_end = srcport.checked_add(1).expect("srcport must be < 65535");
        let i = inner_index;
        let t = Tunnel {
            name: name.to_owned(),
            vni,
            srcport,
            dstport: VXLAN_PORT,
            underlay,
            inner_v4_a: Ipv4Addr::new(198, 19, i, 1),
            inner_v4_b: Ipv4Addr::new(198, 19, i, 2),
            inner_v6_a: Ipv6Addr::new(0x2001, 0xdb8, i.into(), 0, 0, 0, 0, 1),
            inner_v6_b: Ipv6Addr::new(0x2001, 0xdb8, i.into(), 0, 0, 0, 0, 2),
        };
        let (ua, ub): (IpAddr, IpAddr) = match underlay {
            Underlay::V4 => (A_V4.into(), B_V4.into()),
            Underlay::V6 => (A_V6.into(), B_V6.into()),
        };
        let mac_a = format!("02:00:00:01:{i:02x}:01");
        let mac_b = format!("02:00:00:01:{i:02x}:02");
        for (ns, local, remote, mac, v4, v6, peer_mac, peer_v4, peer_v6) in [
            (
                &self.a,
                ua,
                ub,
                &mac_a,
                t.inner_v4_a,
                t.inner_v6_a,
                &mac_b,
                t.inner_v4_b,
                t.inner_v6_b,
            ),
            (
                &self.b,
                ub,
                ua,
                &mac_b,
                t.inner_v4_b,
                t.inner_v6_b,
                &mac_a,
                t.inner_v4_a,
                t.inner_v6_a,
            ),
        ] {
            ns.sh(&format!(
                "set -e
                 ip link add {name} address {mac} type vxlan id {vni} local {local} remote {remote} \
                    dev {UPLINK} dstport {VXLAN_PORT} srcport {srcport} {srcport_end} nolearning
                 ip addr add {v4}/24 dev {name}
                 ip addr add {v6}/64 dev {name} nodad
                 ip neigh replace {peer_v4} lladdr {peer_mac} dev {name} nud permanent
                 ip neigh replace {peer_v6} lladdr {peer_mac} dev {name} nud permanent
                 ip link set {name} up"
            ));
        }
        t
    }

    /// Runs pdscp against namespace `a` with this bed's pin root
    /// (see [`pdscp`]); mounts bpffs first if needed.
    pub fn pdscp(&self, args: &[&str]) -> Output {
        ensure_bpffs();
        pdscp(&self.a, &self.pin_root, args)
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        // Unpinning releases pdscp's programs; the namespaces go after this.
        if self.pin_root.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pin_root) {
                eprintln!("removing {}: {e}", self.pin_root.display());
            }
        }
    }
}

/// What [`TestBed::add_vxlan`] made.
#[derive(Clone, Debug)]
pub struct Tunnel {
    pub name: String,
    pub vni: u32,
    pub srcport: u16,
    pub dstport: u16,
    pub underlay: Underlay,
    pub inner_v4_a: Ipv4Addr,
    pub inner_v4_b: Ipv4Addr,
    pub inner_v6_a: Ipv6Addr,
    pub inner_v6_b: Ipv6Addr,
}

impl Tunnel {
    /// `b`'s inner address of the given family (`v6` false: IPv4).
    pub fn b_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.inner_v6_b.into()
        } else {
            self.inner_v4_b.into()
        }
    }

    /// `a`'s inner address of the given family.
    pub fn a_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.inner_v6_a.into()
        } else {
            self.inner_v4_a.into()
        }
    }
}

// ---------------------------------------------------------------------------
// ethtool features, in-process (so the bed needs no ethtool package)
// ---------------------------------------------------------------------------

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// `struct ifreq` with the `ifr_data` member (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// SIOCETHTOOL on `dev` with `buf` as the command block.
fn ethtool_ioctl(sock: RawFd, dev: &str, buf: &mut [u32]) -> std::io::Result<libc::c_int> {
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: buf.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    assert!(dev.len() < libc::IFNAMSIZ, "device name too long: {dev}");
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: `req` points at a live buffer sized for the command it holds.
    let r = unsafe { libc::ioctl(sock, libc::SIOCETHTOOL as _, &mut req) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `ethtool -K dev <f> off` for each feature name, verified afterwards.
pub fn set_features_off(ns: &Netns, dev: &str, features: &[&str]) {
    let dev = dev.to_owned();
    let features: Vec<String> = features.iter().map(|s| s.to_string()).collect();
    ns.run_in("ethtool", move || {
        let sock = udp_socket_fd();
        let fd = sock.as_raw_fd();
        // How many feature bits the kernel has, then their names.
        // ethtool_sset_info: {cmd, reserved, u64 sset_mask, data[1]}.
        let mask = (1u64 << ETH_SS_FEATURES).to_ne_bytes();
        let word = |b: &[u8]| u32::from_ne_bytes(b.try_into().expect("4 bytes"));
        let mut info = [ETHTOOL_GSSET_INFO, 0, word(&mask[..4]), word(&mask[4..]), 0];
        ethtool_ioctl(fd, &dev, &mut info).expect("ETHTOOL_GSSET_INFO");
        let count = info[4] as usize;
        let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
        strings[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count as u32]);
        ethtool_ioctl(fd, &dev, &mut strings).expect("ETHTOOL_GSTRINGS");
        let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        let names: Vec<String> = bytes
            .chunks(ETH_GSTRING_LEN)
            .map(|c| String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or(&[])).into_owned())
            .collect();
        let bits: Vec<usize> = features
            .iter()
            .map(|f| {
                names
                    .iter()
                    .position(|n| n == f)
                    .unwrap_or_else(|| panic!("no feature {f}"))
            })
            .collect();
        let words = count.div_ceil(32);
        // ethtool_sfeatures: {cmd, size, [{valid, requested}; size]}; requested 0 = off.
        let mut set = vec![0u32; 2 + 2 * words];
        set[..2].copy_from_slice(&[ETHTOOL_SFEATURES, words as u32]);
        for &bit in &bits {
            set[2 + 2 * (bit / 32)] |= 1 << (bit % 32);
        }
        ethtool_ioctl(fd, &dev, &mut set).expect("ETHTOOL_SFEATURES");
        // ethtool_gfeatures: {cmd, size, [{available, requested, active, never_changed}; size]}.
        let mut get = vec![0u32; 2 + 4 * words];
        get[..2].copy_from_slice(&[ETHTOOL_GFEATURES, words as u32]);
        ethtool_ioctl(fd, &dev, &mut get).expect("ETHTOOL_GFEATURES");
        for (&bit, f) in bits.iter().zip(&features) {
            let active = get[2 + 4 * (bit / 32) + 2] & (1 << (bit % 32)) != 0;
            assert!(!active, "{dev}: could not turn {f} off");
        }
    });
}

fn udp_socket_fd() -> OwnedFd {
    // SAFETY: plain socket(2); the result is checked before being owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

// ---------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------

/// One captured frame; `outgoing` is true for frames the device sent
/// (`PACKET_OUTGOING`), false for frames it received.
#[derive(Clone, Debug)]
pub struct Frame {
    pub data: Vec<u8>,
    pub outgoing: bool,
}

/// AF_PACKET capture of one device in one namespace, on its own thread.
pub struct Capture {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Frame>>>,
}

/// How long the capture waits in one receive; also the quiet period that
/// ends a capture after `stop` (so frames still in flight are kept).
const CAPTURE_POLL: Duration = Duration::from_millis(100);

impl Capture {
    /// Starts capturing every frame `ifname` sends or receives. Returns once
    /// the socket is bound, so nothing sent afterwards is missed.
    pub fn start(ns: &Netns, ifname: &str) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let ifname = ifname.to_owned();
        let stop2 = stop.clone();
        let handle = ns.spawn("capture", move || {
            let sock = packet_socket(&ifname);
            ready_tx.send(()).expect("capture starter went away");
            capture_loop(&sock, &ifname, &stop2)
        });
        if ready_rx.recv_timeout(STEP_TIMEOUT).is_err() {
            // The thread panicked (its message is the useful one) or hung.
            join(handle);
            panic!("capture did not start");
        }
        Capture {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops after the device has been quiet for a moment and returns the
    /// frames of both directions, in order.
    pub fn stop(self) -> Vec<Vec<u8>> {
        self.stop_frames().into_iter().map(|f| f.data).collect()
    }

    /// Like [`Capture::stop`], keeping the direction of each frame.
    pub fn stop_frames(mut self) -> Vec<Frame> {
        self.stop.store(true, Ordering::Relaxed);
        join(self.handle.take().expect("capture already stopped"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
    }
}

/// An AF_PACKET socket bound to `ifname` in the calling thread's namespace.
fn packet_socket(ifname: &str) -> OwnedFd {
    // Protocol 0 receives nothing until bind() names the protocol and the
    // device; ETH_P_ALL here would queue frames of every device meanwhile.
    // SAFETY: plain socket(2); the result is checked before being owned.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // Room for a 1 MB burst even if this thread is slow to be scheduled.
    if setsockopt(&sock, sockopt::RcvBufForce, &(32 << 20)).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &(32 << 20));
    }
    let tv = TimeVal::new(0, CAPTURE_POLL.as_micros() as _);
    setsockopt(&sock, sockopt::ReceiveTimeout, &tv).expect("SO_RCVTIMEO");
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex(ifname) as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the given length.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert!(
        r == 0,
        "binding capture to {ifname}: {}",
        std::io::Error::last_os_error()
    );
    sock
}

const PACKET_OUTGOING: u8 = 4;
const PACKET_STATISTICS: libc::c_int = 6;

fn capture_loop(sock: &OwnedFd, ifname: &str, stop: &AtomicBool) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 1 << 18];
    loop {
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `sll` are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n >= 0 {
            let n = n as usize;
            assert!(n <= buf.len(), "{ifname}: {n}-byte frame truncated");
            frames.push(Frame {
                data: buf[..n].to_vec(),
                outgoing: sll.sll_pkttype == PACKET_OUTGOING,
            });
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            ErrorKind::WouldBlock | ErrorKind::Interrupted => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            _ => panic!("capture on {ifname}: {err}"),
        }
    }
    // A silently dropped frame would show up as a flaky count: fail loudly.
    let mut stats = [0u32; 2]; // struct tpacket_stats { tp_packets, tp_drops }
    let mut len = size_of::<[u32; 2]>() as libc::socklen_t;
    // SAFETY: `stats` is valid for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_STATISTICS,
            stats.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert!(r == 0, "PACKET_STATISTICS: {}", std::io::Error::last_os_error());
    assert_eq!(stats[1], 0, "capture on {ifname} dropped {} frames", stats[1]);
    frames
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// DSCP of a TOS / traffic-class byte.
pub fn dscp(tos: u8) -> u8 {
    tos >> 2
}

/// ECN bits of a TOS / traffic-class byte.
pub fn ecn(tos: u8) -> u8 {
    tos & 3
}

/// The fields of a VXLAN packet that the tests look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPacket {
    pub outer_version: u8,
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    /// IPv4 TOS or IPv6 traffic class.
    pub outer_tos: u8,
    /// Header checksum verifies (always true for IPv6, which has none).
    pub outer_ipv4_checksum_ok: bool,
    /// Outer IP packet length, header included (frame length minus 14).
    pub outer_len: usize,
    pub outer_sport: u16,
    pub outer_dport: u16,
    pub vni: u32,
    pub inner_version: u8,
    pub inner_src: IpAddr,
    pub inner_dst: IpAddr,
    pub inner_tos: u8,
    /// IPPROTO_*; for IPv6 the first next header.
    pub inner_proto: u8,
    /// Inner IP packet length, header included.
    pub inner_len: usize,
    /// Ports of an inner TCP or UDP header.
    pub inner_sport: Option<u16>,
    pub inner_dport: Option<u16>,
}

impl TunnelPacket {
    pub fn outer_dscp(&self) -> u8 {
        dscp(self.outer_tos)
    }
    pub fn outer_ecn(&self) -> u8 {
        ecn(self.outer_tos)
    }
    pub fn inner_dscp(&self) -> u8 {
        dscp(self.inner_tos)
    }
    pub fn inner_ecn(&self) -> u8 {
        ecn(self.inner_tos)
    }
}

/// An IP header's fields, from either family.
struct IpHeader {
    version: u8,
    src: IpAddr,
    dst: IpAddr,
    tos: u8,
    proto: u8,
    /// Whole packet length as the header states it.
    total_len: usize,
    header_len: usize,
    checksum_ok: bool,
    /// A non-first fragment has no transport header.
    later_fragment: bool,
    fragmented: bool,
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn parse_ip(b: &[u8]) -> Option<IpHeader> {
    match b.first()? >> 4 {
        4 => {
            let header_len = usize::from(b[0] & 0x0f) * 4;
            let h = b.get(..header_len).filter(|_| header_len >= 20)?;
            let sum = h
                .chunks(2)
                .fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
            let folded = (sum & 0xffff) + (sum >> 16);
            let frag = be16(h, 6)?;
            Some(IpHeader {
                version: 4,
                src: Ipv4Addr::new(h[12], h[13], h[14], h[15]).into(),
                dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]).into(),
                tos: h[1],
                proto: h[9],
                total_len: be16(h, 2)?.into(),
                header_len,
                checksum_ok: (folded & 0xffff) + (folded >> 16) == 0xffff,
                later_fragment: frag & 0x1fff != 0,
                fragmented: frag & 0x3fff != 0,
            })
        }
        6 => {
            let h = b.get(..40)?;
            let addr = |off: usize| -> IpAddr {
                let a: [u8; 16] = h[off..off + 16].try_into().expect("16 bytes");
                Ipv6Addr::from(a).into()
            };
            Some(IpHeader {
                version: 6,
                src: addr(8),
                dst: addr(24),
                tos: (h[0] << 4) | (h[1] >> 4),
                proto: h[6],
                total_len: 40 + usize::from(be16(h, 4)?),
                header_len: 40,
                checksum_ok: true,
                later_fragment: false,
                fragmented: false,
            })
        }
        _ => None,
    }
}

/// Parses an Ethernet frame carrying IPv4/IPv6 + UDP + VXLAN + Ethernet +
/// IPv4/IPv6. Anything else (ARP, other UDP, outer fragments, truncated
/// frames, non-IP inner payload) gives `None`.
pub fn parse_vxlan(frame: &[u8]) -> Option<TunnelPacket> {
    const ETH: usize = 14;
    let ethertype = be16(frame, 12)?;
    if ethertype != 0x0800 && ethertype != 0x86dd {
        return None;
    }
    let outer = parse_ip(frame.get(ETH..)?)?;
    if outer.proto != IPPROTO_UDP || outer.fragmented {
        return None;
    }
    let udp = frame.get(ETH + outer.header_len..)?;
    let (outer_sport, outer_dport) = (be16(udp, 0)?, be16(udp, 2)?);
    let vxlan = udp.get(8..16)?;
    if outer_dport != VXLAN_PORT || vxlan[0] & 0x08 == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
    let inner_eth = udp.get(16..)?;
    let inner_type = be16(inner_eth, 12)?;
    if inner_type != 0x0800 && inner_type != 0x86dd {
        return None;
    }
    let inner_ip = inner_eth.get(ETH..)?;
    let inner = parse_ip(inner_ip)?;
    let ports = match inner.proto {
        IPPROTO_TCP | IPPROTO_UDP if !inner.later_fragment => {
            let l4 = inner_ip.get(inner.header_len..)?;
            Some((be16(l4, 0)?, be16(l4, 2)?))
        }
        _ => None,
    };
    Some(TunnelPacket {
        outer_version: outer.version,
        outer_src: outer.src,
        outer_dst: outer.dst,
        outer_tos: outer.tos,
        outer_ipv4_checksum_ok: outer.checksum_ok,
        outer_len: outer.total_len,
        outer_sport,
        outer_dport,
        vni,
        inner_version: inner.version,
        inner_src: inner.src,
        inner_dst: inner.dst,
        inner_tos: inner.tos,
        inner_proto: inner.proto,
        inner_len: inner.total_len,
        inner_sport: ports.map(|p| p.0),
        inner_dport: ports.map(|p| p.1),
    })
}

/// Parses every frame, dropping what is not VXLAN.
pub fn parse_all(frames: &[Vec<u8>]) -> Vec<TunnelPacket> {
    frames.iter().filter_map(|f| parse_vxlan(f)).collect()
}

// ---------------------------------------------------------------------------
// Traffic generators
// ---------------------------------------------------------------------------

/// Sets IP_TOS (IPv4) or IPV6_TCLASS (IPv6) on a socket.
pub fn set_tos(fd: &impl std::os::fd::AsFd, v6: bool, tos: u8) {
    let tos = i32::from(tos);
    if v6 {
        setsockopt(fd, sockopt::Ipv6TClass, &tos).expect("IPV6_TCLASS");
    } else {
        setsockopt(fd, sockopt::IpTos, &tos).expect("IP_TOS");
    }
}

/// Sends `count` small UDP datagrams from `ns` to `dst:dport` with TOS /
/// traffic class `tos`, 2 ms apart; returns the source port. Neighbours are
/// static in the bed, so no packet waits for ARP/ND and none is lost. Nobody
/// listens on `dport` unless the test does: `b` answers with (rate-limited)
/// ICMP port-unreachable, which an unconnected socket ignores.
pub fn send_udp(ns: &Netns, dst: IpAddr, dport: u16, tos: u8, count: usize) -> u16 {
    ns.run_in("send_udp", move || {
        let any: IpAddr = if dst.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let sock = UdpSocket::bind((any, 0)).expect("binding UDP socket");
        set_tos(&sock, dst.is_ipv6(), tos);
        for i in 0..count {
            let payload = format!("pdscp-testbed {i}");
            sock.send_to(payload.as_bytes(), (dst, dport))
                .expect("sending UDP");
            thread::sleep(Duration::from_millis(2));
        }
        sock.local_addr().expect("local_addr").port()
    })
}

/// A TCP socket with TOS / traffic class set before connecting (so the SYN
/// carries it too), connected to `dst` within [`STEP_TIMEOUT`].
fn tcp_connect(dst: SocketAddr, tos: u8) -> TcpStream {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};
    let family = if dst.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let sock = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("TCP socket");
    set_tos(&sock, dst.is_ipv6(), tos);
    // SO_SNDTIMEO also bounds a blocking connect().
    let tv = TimeVal::new(STEP_TIMEOUT.as_secs() as _, 0);
    setsockopt(&sock, sockopt::SendTimeout, &tv).expect("SO_SNDTIMEO");
    let r = match dst {
        SocketAddr::V4(a) => connect(sock.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => connect(sock.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    r.unwrap_or_else(|e| panic!("connecting to {dst}: {e}"));
    TcpStream::from(sock)
}

/// Sends `bytes` bytes over one TCP connection from `client` to a server in
/// `server` listening on `dst:port`, the client socket marked with `tos`.
/// Returns how many bytes the server read (the caller compares). The client
/// half-closes and waits for the server's close, so every byte has been
/// delivered when this returns. Each step is bounded by a timeout.
pub fn tcp_bulk(client: &Netns, server: &Netns, dst: IpAddr, port: u16, tos: u8, bytes: usize) -> usize {
    let (ready_tx, ready_rx) = mpsc::channel();
    let srv = server.spawn("tcp_server", move || {
        let listener = TcpListener::bind((dst, port)).unwrap_or_else(|e| panic!("binding {dst}:{port}: {e}"));
        // Linux applies SO_RCVTIMEO to accept() as well.
        let tv = TimeVal::new(STEP_TIMEOUT.as_secs() as _, 0);
        setsockopt(&listener, sockopt::ReceiveTimeout, &tv).expect("SO_RCVTIMEO");
        ready_tx.send(()).expect("tcp_bulk went away");
        let (mut conn, _) = listener.accept().expect("accepting the bulk connection");
        conn.set_read_timeout(Some(STEP_TIMEOUT)).expect("read timeout");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match conn.read(&mut buf).expect("server read") {
                0 => break total,
                n => total += n,
            }
        }
    });
    if ready_rx.recv_timeout(STEP_TIMEOUT).is_err() {
        join(srv);
        panic!("tcp server did not start");
    }
    let cli = client.spawn("tcp_client", move || {
        let mut conn = tcp_connect(SocketAddr::new(dst, port), tos);
        conn.set_write_timeout(Some(STEP_TIMEOUT)).expect("write timeout");
        conn.set_read_timeout(Some(STEP_TIMEOUT)).expect("read timeout");
        let chunk = vec![0x5au8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            conn.write_all(&chunk[..n]).expect("client write");
            left -= n;
        }
        conn.shutdown(Shutdown::Write).expect("shutdown");
        // EOF from the server means it has read everything.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest)
            .expect("waiting for the server to close");
    });
    join(cli);
    join(srv)
}

/// `ping [-6] -Q tos -c count -i 0.2 -W 1 dst` in `ns` (iputils-ping).
pub fn ping(ns: &Netns, dst: IpAddr, tos: u8, count: u32) -> Output {
    let family = if dst.is_ipv6() { "-6" } else { "-4" };
    ns.try_sh(&format!(
        "ping {family} -n -q -Q {tos} -c {count} -i 0.2 -W 1 {dst}"
    ))
}

// ---------------------------------------------------------------------------
// An unrelated legacy tc filter with a hit counter
// ---------------------------------------------------------------------------

/// Side of a clsact qdisc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcDir {
    Ingress,
    Egress,
}

impl TcDir {
    pub fn as_str(self) -> &'static str {
        match self {
            TcDir::Ingress => "ingress",
            TcDir::Egress => "egress",
        }
    }
}

/// Adds the clsact qdisc to `dev` unless it is there already.
pub fn ensure_clsact(ns: &Netns, dev: &str) {
    let out = ns.try_sh(&format!("tc qdisc add dev {dev} clsact"));
    if !out.status.success() && !ns.sh(&format!("tc qdisc show dev {dev}")).contains("clsact") {
        panic!("adding clsact to {dev}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Installs a match-everything u32 filter at `prio` on `dev`'s clsact hook,
/// whose action mirrors each packet into [`COUNTER_SINK`] and then
/// `continue`s, so classification goes on exactly as without it. This kernel
/// has neither matchall nor gact, so mirred is the action with a counter;
/// the sink's peer drops the copies (wrong MAC). Capturing on
/// [`COUNTER_SINK_PEER`] shows what the hook saw (e.g. GSO super-packets).
pub fn tc_filter_add_counter(ns: &Netns, dev: &str, dir: TcDir, prio: u16) {
    ensure_clsact(ns, dev);
    ns.sh(&format!(
        "set -e
         if ! ip link show {COUNTER_SINK} >/dev/null 2>&1; then
             ip link add {COUNTER_SINK} type veth peer name {COUNTER_SINK_PEER}
             ip link set {COUNTER_SINK} addrgenmode none
             ip link set {COUNTER_SINK_PEER} addrgenmode none
             ip link set {COUNTER_SINK} up
             ip link set {COUNTER_SINK_PEER} up
         fi
         tc filter add dev {dev} {dir} prio {prio} protocol all u32 match u32 0 0 \
            action mirred egress mirror dev {COUNTER_SINK} continue",
        dir = dir.as_str()
    ));
}

/// Packets counted by the filter at `prio` (0 if there is none any more).
pub fn tc_filter_packets(ns: &Netns, dev: &str, dir: TcDir, prio: u16) -> u64 {
    let json = ns.sh(&format!(
        "tc -s -j filter show dev {dev} {} prio {prio}",
        dir.as_str()
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("tc json {e}: {json}"));
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.pointer("/options/actions")?.as_array())
        .flatten()
        .filter_map(|a| a.pointer("/stats/packets")?.as_u64())
        .sum()
}

/// Whether a filter exists at `prio` on `dev`'s clsact hook.
pub fn tc_filter_exists(ns: &Netns, dev: &str, dir: TcDir, prio: u16) -> bool {
    let out = ns.try_sh(&format!(
        "tc -j filter show dev {dev} {} prio {prio}",
        dir.as_str()
    ));
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"kind\"")
}

// ---------------------------------------------------------------------------
// pdscp
// ---------------------------------------------------------------------------

/// bpffs magic (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts bpffs on /sys/fs/bpf unless one is there already.
pub fn ensure_bpffs() {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let st = nix::sys::statfs::statfs("/sys/fs/bpf").expect("statfs /sys/fs/bpf");
    if st.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        nix::mount::mount(
            Some("bpf"),
            "/sys/fs/bpf",
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting bpffs on /sys/fs/bpf");
    }
}

/// Runs `pdscp --pin-root <pin_root> --netns <ns.name> <args...>` (from the
/// host namespace: pdscp enters `ns` itself), killing it after
/// [`STEP_TIMEOUT`]. Panics only if the crate has no `pdscp` binary, so tests
/// that never call this do not depend on it.
pub fn pdscp(ns: &Netns, pin_root: &Path, args: &[&str]) -> Output {
    // option_env!, not env!: a test crate must compile even without the bin.
    let Some(bin) = option_env!("CARGO_BIN_EXE_pdscp") else {
        panic!("the crate has no pdscp binary");
    };
    let mut cmd = Command::new(bin);
    cmd.arg("--pin-root")
        .arg(pin_root)
        .arg("--netns")
        .arg(&ns.name)
        .args(args);
    run_bounded(cmd, STEP_TIMEOUT)
}

/// Runs `cmd` with no stdin and its output captured, killing it (and
/// panicking) after `timeout`. The pipes are drained while waiting, so a
/// chatty child cannot block on them.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            v
        })
    };
    let out_t = drain(Box::new(child.stdout.take().expect("stdout")));
    let err_t = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for a child") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: join(out_t),
        stderr: join(err_t),
    }
}

/// A command's stdout and stderr, for assertion messages.
fn output_text(out: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A command that must succeed; returns its stdout.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "pdscp failed: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A refused command: non-zero exit (not a crash) and exactly one line on
/// stderr that contains `expect`; returns that line.
pub fn refused(out: Output, expect: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "should have been refused: {}",
        output_text(&out)
    );
    assert_eq!(stderr.lines().count(), 1, "one line of error: {stderr:?}");
    assert!(stderr.contains(expect), "error {stderr:?} should say {expect:?}");
    stderr
}
