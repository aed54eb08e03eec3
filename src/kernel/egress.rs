//! Everything that runs on a device's egress, in the order the kernel runs
//! it: TCX programs first (in their link order), then the clsact egress tc
//! filters by priority. `pdscp check` lists what runs after pdscp's writer,
//! since whatever comes later has the last word on the DSCP.
use anyhow::{Context, Result};
use libbpf_rs::libbpf_sys;
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;

use super::bpf::prog_name;
use super::hook::PROG_PREFIX;
use super::netlink;

/// One program or filter on a device's egress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressHook {
    /// "tcx" or "tc".
    pub via: &'static str,
    /// tc: its priority; TCX: its place in the link order (0 first).
    pub order: u32,
    /// tc: the classifier ("bpf", "u32", "flower", ...); TCX: "bpf".
    pub kind: String,
    /// The BPF program's name, if it is one.
    pub program: Option<String>,
    pub prog_id: Option<u32>,
}

impl EgressHook {
    pub fn is_pdscp(&self) -> bool {
        self.program
            .as_deref()
            .is_some_and(|n| n.starts_with(PROG_PREFIX))
    }

    /// "tcx program shaper_mark (id 41)", "tc filter u32 priority 49152".
    pub fn describe(&self) -> String {
        match (self.via, &self.program) {
            ("tcx", Some(name)) => format!("tcx program {name} (id {})", self.prog_id.unwrap_or(0)),
            (_, Some(name)) => format!(
                "tc filter bpf priority {} running {name} (id {})",
                self.order,
                self.prog_id.unwrap_or(0)
            ),
            _ => format!("tc filter {} priority {}", self.kind, self.order),
        }
    }
}

/// What runs on device `ifindex`'s egress, in order.
pub fn hooks(ifindex: u32) -> Result<Vec<EgressHook>> {
    let mut hooks: Vec<EgressHook> = tcx_programs(ifindex)
        .into_iter()
        .enumerate()
        .map(|(i, id)| EgressHook {
            via: "tcx",
            order: i as u32,
            kind: "bpf".into(),
            program: Some(prog_name(id)),
            prog_id: Some(id),
        })
        .collect();
    let mut filters = tc_filters(ifindex)?;
    filters.sort_by_key(|f| f.order);
    hooks.extend(filters);
    Ok(hooks)
}

/// What runs after pdscp's writer (the first of pdscp's programs on the
/// egress) and is not pdscp's own; everything if no writer runs there.
pub fn after_writer(hooks: &[EgressHook]) -> Vec<EgressHook> {
    let start = hooks
        .iter()
        .position(|h| h.program.as_deref() == Some("pdscp_writer"))
        .map_or(0, |i| i + 1);
    hooks[start..].iter().filter(|h| !h.is_pdscp()).cloned().collect()
}

/// The ids of the TCX egress programs, in the order they run; none on
/// kernels without TCX.
fn tcx_programs(ifindex: u32) -> Vec<u32> {
    let mut ids = [0u32; 64];
    let mut opts = libbpf_sys::bpf_prog_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
        prog_ids: ids.as_mut_ptr(),
        ..Default::default()
    };
    opts.__bindgen_anon_1.count = ids.len() as u32;
    // SAFETY: plain syscall wrapper; `opts` is a valid, sized options struct
    // whose prog_ids points at `ids`, of the count given.
    let ret =
        unsafe { libbpf_sys::bpf_prog_query_opts(ifindex as i32, libbpf_sys::BPF_TCX_EGRESS, &mut opts) };
    if ret != 0 {
        return Vec::new();
    }
    // SAFETY: the kernel wrote the count back into the union.
    let count = unsafe { opts.__bindgen_anon_1.count } as usize;
    ids[..count.min(ids.len())].to_vec()
}

/// The filters on the clsact egress hook (parent ffff:fff3).
fn tc_filters(ifindex: u32) -> Result<Vec<EgressHook>> {
    let socket = netlink::connect(NETLINK_ROUTE)?;
    let mut msg = TcMessage::default();
    msg.header.index = ifindex as i32;
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: 0xfff3,
    };
    let replies = match netlink::request(
        &socket,
        RouteNetlinkMessage::GetTrafficFilter(msg),
        NLM_F_REQUEST | NLM_F_DUMP,
    ) {
        Ok(r) => r,
        // No clsact: no filters.
        Err(e) if [Some(libc::EINVAL), Some(libc::ENOENT)].contains(&e.raw_os_error()) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e).context("listing tc filters"),
    };
    let mut out: Vec<EgressHook> = Vec::new();
    for reply in replies {
        let RouteNetlinkMessage::NewTrafficFilter(f) = reply else {
            continue;
        };
        let mut hook = EgressHook {
            via: "tc",
            order: f.header.info >> 16,
            kind: String::new(),
            program: None,
            prog_id: None,
        };
        for attr in f.attributes {
            match attr {
                TcAttribute::Kind(k) => hook.kind = k,
                TcAttribute::Options(options) => {
                    for option in options {
                        match option {
                            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => hook.prog_id = Some(id),
                            TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => hook.program = Some(n),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        // The kernel names cls_bpf programs by their section; the program's own name tells pdscp's.
        if let Some(id) = hook.prog_id {
            hook.program = Some(prog_name(id));
        }
        if !hook.kind.is_empty() && !out.contains(&hook) {
            out.push(hook);
        }
    }
    // The dump has a bare message per priority besides each filter there; drop it.
    let bare = |h: &EgressHook, all: &[EgressHook]| {
        h.prog_id.is_none() && all.iter().any(|o| o.order == h.order && o.prog_id.is_some())
    };
    let all = out.clone();
    out.retain(|h| !bare(h, &all));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(via: &'static str, order: u32, program: Option<&str>) -> EgressHook {
        EgressHook {
            via,
            order,
            kind: if program.is_some() { "bpf" } else { "u32" }.into(),
            program: program.map(String::from),
            prog_id: program.map(|_| 7),
        }
    }

    #[test]
    fn what_runs_after_the_writer_excludes_pdscp_and_what_runs_before() {
        let hooks = [
            hook("tcx", 0, Some("early")),
            hook("tcx", 1, Some("pdscp_writer")),
            hook("tcx", 2, Some("late_mark")),
            hook("tc", 3421, Some("pdscp_reader")),
            hook("tc", 49152, None),
        ];
        let after: Vec<String> = after_writer(&hooks).iter().map(|h| h.describe()).collect();
        assert_eq!(
            after,
            ["tcx program late_mark (id 7)", "tc filter u32 priority 49152"]
        );
        assert_eq!(
            after_writer(&hooks[3..]).len(),
            1,
            "no writer: everything not pdscp's"
        );
    }
}
