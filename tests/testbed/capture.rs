//! Packet capture: AF_PACKET on one device in one namespace, on its own thread.

use std::io::ErrorKind;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::bed::TestBed;
use super::namespaces::{ifindex_here, join, Netns, STEP_TIMEOUT};

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
    sll.sll_ifindex = ifindex_here(ifname) as i32;
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

/// Captures on `b`'s side of several uplinks at once.
pub struct Wire(Vec<Capture>);

/// Starts capturing on `b`'s side of each of `devs`.
pub fn wire(bed: &TestBed, devs: &[&str]) -> Wire {
    Wire(devs.iter().map(|d| Capture::start(&bed.b, d)).collect())
}

impl Wire {
    /// Stops every capture (each after its device was quiet for a moment)
    /// and returns the frames of all of them.
    pub fn stop(self) -> Vec<Vec<u8>> {
        thread::scope(|s| {
            let hs: Vec<_> = self.0.into_iter().map(|c| s.spawn(move || c.stop())).collect();
            hs.into_iter().flat_map(|h| h.join().expect("capture")).collect()
        })
    }
}
