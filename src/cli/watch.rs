//! `pdscp status --watch [SECONDS]`: the live view, redrawn in place. The
//! terminal is put in non-canonical mode without echo or signals, so q,
//! Ctrl-C or Ctrl-D quit at once, and it is restored however the view ends
//! (a key, SIGTERM, SIGHUP, an error). Plain VT100 (home, clear, cursor
//! off/on): fine over SSH into a router's busybox shell. Not on a terminal,
//! it prints one screen after another.
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

use super::screen;
use crate::commands::status::{self, Report};
use crate::state::pin_root::PinRoot;

/// Set by SIGINT, SIGTERM or SIGHUP.
static QUIT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    QUIT.store(true, Ordering::Relaxed);
}

/// The terminal as it was, put back on drop.
struct RawTerminal(Termios);

impl RawTerminal {
    fn enter() -> Result<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("setting the terminal up")?;
        Ok(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
}

pub fn watch(pin_root: &Path, every: f64) -> Result<()> {
    let on_tty = std::io::stdout().is_terminal();
    let keys = std::io::stdin().is_terminal();
    let handler = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &handler) }.context("installing a signal handler")?;
    }
    let _terminal = if keys { Some(RawTerminal::enter()?) } else { None };
    let mut out = std::io::stdout();
    if on_tty {
        write!(out, "\x1b[?25l")?;
    }
    let result = run(pin_root, every, on_tty, keys, &mut out);
    if on_tty {
        let _ = writeln!(out, "\x1b[?25h");
        let _ = out.flush();
    }
    result
}

fn run(pin_root: &Path, every: f64, on_tty: bool, keys: bool, out: &mut impl Write) -> Result<()> {
    let interval = Duration::from_secs_f64(every);
    let mut prev = sample(pin_root)?;
    let mut prev_at = Instant::now();
    loop {
        if wait(interval, keys)? {
            return Ok(());
        }
        let cur = sample(pin_root)?;
        let now = Instant::now();
        let lines = screen::render(&prev, &cur, (now - prev_at).as_secs_f64(), &clock(), every);
        if on_tty {
            let (width, height) = terminal_size();
            let mut screen = String::from("\x1b[H\x1b[2J");
            for (i, line) in lines.iter().enumerate() {
                if i + 1 >= height && lines.len() > height {
                    screen.push_str(&format!("... {} more lines", lines.len() - i));
                    break;
                }
                screen.extend(line.chars().take(width));
                screen.push('\n');
            }
            out.write_all(screen.as_bytes())?;
        } else {
            writeln!(out, "{}\n", lines.join("\n"))?;
        }
        out.flush()?;
        prev = cur;
        prev_at = now;
    }
}

fn sample(pin_root: &Path) -> Result<Report> {
    match PinRoot::open_existing(pin_root, false)? {
        Some(root) => status::collect(&root),
        None => Ok(Report::empty(pin_root)),
    }
}

/// Waits `interval`; true if the view is to end (a quit key or a signal).
fn wait(interval: Duration, keys: bool) -> Result<bool> {
    let deadline = Instant::now() + interval;
    let stdin = std::io::stdin();
    loop {
        if QUIT.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        // Short slices, so a signal without EINTR is still seen soon.
        let slice = left.min(Duration::from_millis(200));
        if !keys {
            std::thread::sleep(slice);
            continue;
        }
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, PollTimeout::from(slice.as_millis() as u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for a key"),
        };
        if ready > 0 {
            let mut key = [0u8; 16];
            let n = stdin.lock().read(&mut key)?;
            // q, Q, Ctrl-C, Ctrl-D; end of input too.
            if n == 0 || key[..n].iter().any(|k| matches!(k, b'q' | b'Q' | 3 | 4)) {
                return Ok(true);
            }
        }
    }
}

/// (columns, rows) of the terminal on stdout; 80x24 if it does not say.
fn terminal_size() -> (usize, usize) {
    let mut size = empty_winsize();
    // SAFETY: TIOCGWINSZ writes a winsize through the pointer given.
    let ret = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if ret != 0 || size.ws_col == 0 || size.ws_row == 0 {
        return (80, 24);
    }
    (usize::from(size.ws_col), usize::from(size.ws_row))
}

fn empty_winsize() -> libc::winsize {
    libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// "18:40:01" (UTC: no time zone database needed on a router).
fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}
