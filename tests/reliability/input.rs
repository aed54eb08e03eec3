//! Bad input: hostile command lines are refused and change nothing;
//! errors are one line.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;

/// What the kernel's dev_valid_name() accepts (and pdscp on top: UTF-8, no
/// control characters, no Unicode white space).
fn acceptable_name(b: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(b) else {
        return false;
    };
    !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && !s.contains(['/', ':'])
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Interface names no device can have, a row per kind.
#[rustfmt::skip]
const BAD_NAMES: &[&str] = &[
    // Empty, dot names, paths.
    "", ".", "..", "../x", "../../etc", "../../../../tmp", "/", "a/b", "x/../../y",
    // An alias; white space, DEL, Unicode white space; 16 characters in 17 bytes.
    "eth0:1", "wg 0", "wg0\n", " wg0", "wg\t0", "wg\u{7f}", "wg\u{a0}0", "wg\u{2028}", "é234567890123456",
    // Shell.
    "$(reboot)", "`id`", ";id", "a|b", "a&&b", "*", "?", "~", "$IFS", "\"", "'", "\\",
    // An option; shell without spaces; a path back to a real device; too long.
    "-wg0", "$(touch${IFS}x)", "`touch${IFS}x`", ";touch${IFS}x", "up0/../up0", "x23456789012345678901234567890",
];

fn bad_name() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::sample::select(BAD_NAMES).prop_map(|s| s.as_bytes().to_vec()),
        "\\.\\./[a-z0-9]{1,10}".prop_map(String::into_bytes),
        "[a-z0-9.]{0,6}/[a-z0-9./]{0,8}".prop_map(String::into_bytes),
        "[a-z0-9]{0,6}:[a-z0-9]{0,6}".prop_map(String::into_bytes),
        "[a-z0-9]{0,6}[ \\t\\r\\n\\x0b\\x0c][a-z0-9]{0,6}".prop_map(String::into_bytes),
        "[a-z0-9]{0,6}[\\x01-\\x1f\\x7f][a-z0-9]{0,6}".prop_map(String::into_bytes),
        "[a-zA-Z0-9_.@-]{16,64}".prop_map(String::into_bytes),
        "[;&|`$(){}<>*?!#~'\"\\\\]{1,4}[a-z]{0,6}".prop_map(String::into_bytes),
        prop::collection::vec(1u8..=255, 0..40),
        (prop::collection::vec(1u8..=255, 0..12), 0x80u8..=0xff).prop_map(|(mut b, hi)| {
            b.push(hi);
            b.push(0xff); // never valid UTF-8
            b
        }),
    ]
    .boxed()
}

/// A hostile command line: a bad value in one position of an otherwise
/// working command, or a fixed malformed command.
#[derive(Clone, Debug)]
enum BadCall {
    /// `form` selects the position of `value`.
    Value {
        form: usize,
        value: Vec<u8>,
    },
    Fixed(&'static [&'static str]),
}

/// Malformed command lines, one a line.
#[rustfmt::skip]
const BAD_COMMANDS: &[&[&str]] = &[
    &["attach", "wg1", "--uplink", "up0", "--port", "0"],
    &["attach", "wg1", "--uplink", "up0", "--port", "65536"],
    &["attach", "wg1", "--uplink", "up0", "--port", "-1"],
    &["attach", "wg1", "--uplink", "up0", "--port", ""],
    &["attach", "wg1", "--uplink", "up0", "--port", "0x10"],
    &["attach", "wg1", "--uplink", "up0", "--port", "51830", "--any-port"],
    &["attach", "wg1", "--uplink", "up0", "--port", "51830", "--map-size", "0"],
    &["attach", "wg1", "--uplink", "up0", "--port", "51830", "--map-size", "15"],
    &["attach", "wg1", "--uplink", "up0", "--port", "51830", "--map-size", "16777217"],
    &["attach", "wg1", "--uplink", "up0", "--port", "51830", "--mode", "xdp"],
    &["attach", "wg1", "--uplink", "up0", "--port", "51830", "--mode", "TC"],
    &["attach", "wg1", "--uplink", "up0", "--port", "51830", "--frobnicate"],
    &["attach", "wg1", "extra", "--uplink", "up0", "--port", "51830"],
    &["attach", "wg1", "--uplink"],
    &["attach", "up0", "--uplink", "up0", "--port", "51830"],
    &["attach", "--uplink", "up0", "--port", "51830"],
    &["detach"],
    &["detach", "wg0", "wg1"],
    &["status", "--json", "extra"],
    &["gc", "now"],
    &["frobnicate"],
    &[],
];

fn bad_call() -> BoxedStrategy<BadCall> {
    prop_oneof![
        (0..FORMS.len(), bad_name()).prop_map(|(form, value)| BadCall::Value { form, value }),
        prop::sample::select(BAD_COMMANDS).prop_map(BadCall::Fixed),
    ]
    .boxed()
}

/// Otherwise working commands, `BAD` marking where a bad value goes
/// (`BadCall::Value`'s `form` is the row).
const FORMS: [&str; 8] = [
    "attach BAD --uplink up0 --port 51830",
    "attach wg1 --uplink BAD --port 51830",
    "detach BAD",
    "detach wg0 --uplink BAD",
    "--netns BAD status",
    "attach wg1 --uplink up0 --port 51830 --mode BAD",
    "attach wg1 --uplink up0 --port BAD",
    "attach wg1 --uplink up0 --port 51830 --map-size BAD",
];

/// The argument vector, whether pdscp gets the bed's `--netns`, and whether
/// the call may legitimately succeed as a no-op ("not attached").
fn bad_call_args(call: &BadCall) -> (Vec<OsString>, bool, bool) {
    match call {
        BadCall::Fixed(v) => (v.iter().map(OsString::from).collect(), true, false),
        BadCall::Value { form, value } => {
            let form = FORMS[*form];
            let args = form
                .split(' ')
                .map(|w| match w {
                    "BAD" => OsString::from_vec(value.clone()),
                    _ => OsString::from(w),
                })
                .collect();
            // A detach of a well-formed name that is not attached is a no-op.
            let may_noop = acceptable_name(value) && form.starts_with("detach ");
            (args, !form.starts_with("--netns "), may_noop)
        }
    }
}

/// Property: every hostile command line is refused (non-zero exit; a
/// well-formed detach of nothing may say "not attached") and changes
/// nothing: the pin tree (paths, modes, inodes) under a scratch directory
/// around the pin root, `status --json`, the programs on the devices,
/// /sys/fs/bpf's top level, and the working directory (no shell ran).
#[test]
fn hostile_input_is_refused_and_changes_nothing() {
    let bed = TestBed::new();
    let t0 = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    bed.add_vxlan("wg1", 101, 51830, Underlay::V4, 2);
    // The pin root two levels down, so an escape upwards shows in the scratch tree.
    let scratch = Scratch::new(Path::new("/sys/fs/bpf"), "pdscp-hostile");
    let root = scratch.path().join("deep/root");
    ok(run_cmd(pdscp_cmd(
        &root,
        Some(&bed.a),
        &attach_args(&t0, UPLINK, "tcx"),
    )));
    let cwd = Scratch::new(&std::env::temp_dir(), "pdscp-hostile-cwd");
    let existing: BTreeSet<Vec<u8>> = devices(&bed.a).into_keys().map(String::into_bytes).collect();
    let top = || dir_names(Path::new("/sys/fs/bpf"));
    let top_before = top();
    // Every path component typed, to tell an escape from the comings and
    // goings of other tests at the top of /sys/fs/bpf.
    let tried = std::sync::Mutex::new(BTreeSet::<OsString>::new());
    let hooks_before = pdscp_hooks(&bed.a);
    let snapshot = || (listing(scratch.path()), status_without_counters(&root, &bed.a));
    let before = snapshot();
    let cases = AtomicUsize::new(0);
    let noops = AtomicUsize::new(0);
    let multi_line = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        max_shrink_iters: 32,
        ..Config::default()
    });
    let result = runner.run(&bad_call(), |call| {
        if let BadCall::Value { value, .. } = &call {
            // A device of that name would make the call legitimate.
            prop_assume!(!existing.contains(value));
        }
        let (args, with_netns, may_noop) = bad_call_args(&call);
        let mut cmd = pdscp_cmd(&root, with_netns.then_some(&bed.a), &args);
        cmd.current_dir(cwd.path());
        let out = run_cmd(cmd);
        cases.fetch_add(1, Ordering::Relaxed);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let noop = out.status.success() && may_noop && stdout.contains("not attached");
        if noop {
            noops.fetch_add(1, Ordering::Relaxed);
        }
        prop_assert!(
            noop || (!out.status.success() && out.status.code().is_some() && !out.stderr.is_empty()),
            "{call:?} {args:?} should be refused: {}",
            output_text(&out)
        );
        if !noop && String::from_utf8_lossy(&out.stderr).lines().count() != 1 {
            multi_line.fetch_add(1, Ordering::Relaxed);
        }
        for a in &args {
            for c in Path::new(a).components() {
                tried.lock().unwrap().insert(c.as_os_str().to_os_string());
            }
        }
        prop_assert_eq!(&snapshot(), &before, "{:?} changed state", args);
        prop_assert!(dir_names(cwd.path()).is_empty(), "{:?} ran something", args);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(
        pdscp_hooks(&bed.a),
        hooks_before,
        "programs on the devices unchanged"
    );
    let tried = tried.into_inner().unwrap();
    let escaped: Vec<_> = top()
        .difference(&top_before)
        .filter(|n| tried.contains(OsStr::new(n.as_str())))
        .cloned()
        .collect();
    assert!(
        escaped.is_empty(),
        "created at the top of /sys/fs/bpf: {escaped:?}"
    );
    assert_eq!(multi_line.load(Ordering::Relaxed), 0, "every error is one line");
    eprintln!(
        "hostile input: {} cases run, all refused ({} well-formed detaches of nothing were no-ops; \
         {} errors on more than one line), state unchanged",
        cases.load(Ordering::Relaxed),
        noops.load(Ordering::Relaxed),
        multi_line.load(Ordering::Relaxed)
    );
}

/// Was a bug (fixed): README: "errors ... are found before anything changes
/// (bad interface names, unknown devices, ...)". An attach of an unknown
/// device is refused, but only after the pin root has been created (with
/// every missing parent): `pdscp --pin-root /sys/fs/bpf/x/y attach nosuch
/// --uplink up0 --port 1` exits 1 and leaves /sys/fs/bpf/x/y behind.
#[test]
fn refused_attach_leaves_no_pin_root() {
    let bed = TestBed::new();
    bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let scratch = Scratch::new(Path::new("/sys/fs/bpf"), "pdscp-refused");
    let root = scratch.path().join("x/root");
    for args in [
        &["attach", "nosuchdev", "--uplink", UPLINK, "--port", "1"][..],
        &["attach", "wg0", "--uplink", "nosuchdev", "--port", "1"],
        &["attach", "wg0", "--uplink", UPLINK],
    ] {
        let out = run_cmd(pdscp_cmd(&root, Some(&bed.a), args));
        assert!(!out.status.success(), "{args:?}: {}", output_text(&out));
        assert_eq!(
            listing(scratch.path()),
            Vec::<String>::new(),
            "{args:?} was refused but created the pin root"
        );
    }
}

/// Was a bug (fixed): README: "errors are one line on stderr". User input
/// is printed raw in some messages, so a newline in it splits the error:
///   pdscp --netns $'wg0\n' status
///     pdscp: no network namespace "wg0\n" (/run/netns/wg0
///      not found): No such file or directory (os error 2)
/// (netns::validate_name lets control characters through and the context
/// prints the path with `display()`), and
///   pdscp --pin-root $'/tmp/pd\nx' attach wg0 --uplink up0 --port 1
/// (bpffs.rs prints pin roots with `display()`). Interface names are
/// refused with `{:?}` and stay on one line.
#[test]
fn errors_about_input_with_a_newline_are_one_line() {
    let bed = TestBed::new();
    let tmp = Scratch::new(&std::env::temp_dir(), "pdscp-newline");
    let root = tmp.path().join("a\nb");
    let mut outs = vec![(
        "--netns wg0\\n status",
        run_cmd(pdscp_cmd(&bed.pin_root, None, &["--netns", "wg0\n", "status"])),
    )];
    outs.push((
        "--pin-root <dir>/a\\nb attach",
        run_cmd(pdscp_cmd(
            &root,
            Some(&bed.a),
            &["attach", "wg0", "--uplink", UPLINK, "--port", "1"],
        )),
    ));
    let mut split = Vec::new();
    for (what, out) in outs {
        assert!(!out.status.success(), "{what}: {}", output_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.lines().count() != 1 {
            split.push(format!("{what}: {stderr:?}"));
        }
    }
    assert!(split.is_empty(), "errors on several lines:\n{}", split.join("\n"));
}

/// README: "errors are one line on stderr". That holds for usage errors
/// found by the argument parser too (bad port, unknown option, non-UTF-8),
/// which clap would print with its usage block.
#[test]
fn usage_errors_are_one_line() {
    let bed = TestBed::new();
    for args in [
        vec![
            OsString::from("attach"),
            "wg0".into(),
            "--port".into(),
            "0".into(),
        ],
        vec!["detach".into(), "--frobnicate".into()],
        vec!["detach".into(), OsString::from_vec(vec![b'w', 0xff])],
    ] {
        let out = bed.pdscp(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", output_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line of error: {stderr:?}"
        );
        assert!(stderr.starts_with("pdscp: "), "{stderr:?}");
    }
}
