//! `pdscp status --watch` under a pseudo-terminal: the rate it shows is the
//! rate sent, q and Ctrl-C end it with exit 0, and the terminal is left as
//! it was.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, SpecialCharacterIndices};

use super::*;

const EF: u8 = 0xb8;
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Everything the master side of a pty reads, gathered on a thread until stopped.
struct Screen {
    text: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Screen {
    fn read(master: OwnedFd) -> Screen {
        let text = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (into, done) = (text.clone(), stop.clone());
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
                if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) == 0 {
                    continue;
                }
                match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                    Ok(n) if n > 0 => into.lock().expect("screen").extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
        });
        Screen {
            text,
            stop,
            reader: Some(reader),
        }
    }

    fn now(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().expect("screen")).into_owned()
    }

    fn finish(mut self) -> String {
        thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            r.join().expect("reader");
        }
        self.now()
    }
}

/// PKT/S of the `ef` row on each complete screen drawn so far (wg0 is the
/// only tunnel; its rows come before the UPLINK heading).
fn ef_rates(screens: &str) -> Vec<f64> {
    let drawn: Vec<&str> = screens.split(CLEAR).skip(1).collect();
    // The last screen may still be arriving.
    drawn[..drawn.len().saturating_sub(1)]
        .iter()
        .filter_map(|s| {
            let rows = s.lines().take_while(|l| !l.starts_with("UPLINK"));
            let row = rows
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|w| w.contains(&"ef"))?;
            let at = row.iter().position(|w| *w == "ef")?;
            row.get(at + 1)?.parse().ok()
        })
        .collect()
}

#[test]
fn the_live_view_shows_the_rate_sent_and_quits_leaving_the_terminal_as_it_was() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    for (key, name) in [(b'q', "q"), (3u8, "Ctrl-C")] {
        let size = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        let before = tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
        let sender = SteadyUdp::start(&bed.a, t.b_addr(false), 9700, EF, 200);
        thread::sleep(Duration::from_millis(500));
        let mut cmd = pdscp_cmd(&bed.pin_root, Some(&bed.a), &["status", "--watch", "1"]);
        let tty = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
        cmd.stdin(tty(&pty.slave))
            .stdout(tty(&pty.slave))
            .stderr(tty(&pty.slave));
        let mut child = cmd.spawn().expect("pdscp status --watch");
        let screen = Screen::read(pty.master.try_clone().expect("dup"));
        thread::sleep(Duration::from_millis(4300));
        let rates = ef_rates(&screen.now());
        let mut master = std::fs::File::from(pty.master);
        master.write_all(&[key]).expect("a key");
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "{name} did not end the view");
            thread::sleep(Duration::from_millis(50));
        };
        let text = screen.finish();
        sender.stop();
        assert!(status.success(), "{name}: exit {status:?}:\n{text}");
        assert!(
            rates.len() >= 2,
            "{name}: at least two screens with wg0's EF:\n{text}"
        );
        for r in &rates {
            assert!(
                (r - 200.0).abs() <= 20.0,
                "{name}: {r} shown for 200 sent a second: {rates:?}\n{text}"
            );
        }
        let after = tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
        assert_eq!(
            after.local_flags, before.local_flags,
            "{name}: terminal modes restored"
        );
        for c in [SpecialCharacterIndices::VMIN, SpecialCharacterIndices::VTIME] {
            assert_eq!(
                after.control_chars[c as usize], before.control_chars[c as usize],
                "{name}: {c:?}"
            );
        }
        assert!(
            text.ends_with("\x1b[?25h\r\n"),
            "{name}: cursor shown again: {:?}",
            &text[text.len().saturating_sub(40)..]
        );
        let last = text.rsplit(CLEAR).next().unwrap_or_default();
        assert!(
            last.lines().all(|l| l.chars().count() <= 80),
            "{name}: 80 columns:\n{last}"
        );
        eprintln!(
            "live view ({name} to quit): EF rates shown {rates:?} for 200/s sent; last screen:\n{last}"
        );
    }
}
