//! What qdiscs a device has, as rtnetlink says: whether its ffff: qdisc is
//! clsact (pdscp's tc filters need it) or the classic `ingress` (sqm-scripts),
//! and the CAKE root qdisc `--priority-only` steers into.
use anyhow::{Context, Result};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::tc::{TcAttribute, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;

use super::netlink;

/// The handle both clsact and the classic ingress qdisc take: ffff:.
const INGRESS_MAJOR: u16 = 0xffff;
/// TCA_CAKE_* attributes of CAKE's TCA_OPTIONS (include/uapi/linux/pkt_sched.h).
const TCA_CAKE_DIFFSERV_MODE: u16 = 3;
const TCA_CAKE_WASH: u16 = 13;
const TCA_CAKE_FWMARK: u16 = 18;

/// A CAKE qdisc at the root of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cake {
    /// The major number of its handle (8001 in `8001:`).
    pub major: u16,
    /// CAKE_DIFFSERV_*: 0 diffserv3, 1 diffserv4, 2 diffserv8, 3 besteffort, 4 precedence.
    pub diffserv: u32,
    pub wash: bool,
    /// A non-zero mask lets skb->mark pick tins before skb->priority.
    pub fwmark_mask: u32,
}

/// A qdisc as rtnetlink describes it.
struct Qdisc {
    /// The major number of its handle.
    major: u16,
    parent: u32,
    kind: String,
    options: Vec<TcOption>,
}

/// The qdiscs of device `ifindex`.
fn qdiscs(ifindex: u32) -> Result<Vec<Qdisc>> {
    let socket = netlink::connect(NETLINK_ROUTE)?;
    let mut msg = TcMessage::default();
    msg.header.index = ifindex as i32;
    let replies = netlink::request(
        &socket,
        RouteNetlinkMessage::GetQueueDiscipline(msg),
        NLM_F_REQUEST | NLM_F_DUMP,
    )
    .context("listing qdiscs")?;
    let mut out = Vec::new();
    for reply in replies {
        let RouteNetlinkMessage::NewQueueDiscipline(q) = reply else {
            continue;
        };
        if q.header.index != ifindex as i32 {
            continue;
        }
        let parent = (u32::from(q.header.parent.major) << 16) | u32::from(q.header.parent.minor);
        let mut kind = String::new();
        let mut options = Vec::new();
        for attr in q.attributes {
            match attr {
                TcAttribute::Kind(k) => kind = k,
                TcAttribute::Options(o) => options = o,
                _ => {}
            }
        }
        out.push(Qdisc {
            major: q.header.handle.major,
            parent,
            kind,
            options,
        });
    }
    Ok(out)
}

/// The kind of the qdisc at ffff: ("clsact", "ingress"), if there is one.
pub fn ingress_kind(ifindex: u32) -> Result<Option<String>> {
    Ok(qdiscs(ifindex)?
        .into_iter()
        .find(|q| q.major == INGRESS_MAJOR)
        .map(|q| q.kind))
}

/// The CAKE qdisc at the root of device `ifindex`, if it has one.
pub fn root_cake(ifindex: u32) -> Result<Option<Cake>> {
    const TC_H_ROOT: u32 = 0xffff_ffff;
    let Some(q) = qdiscs(ifindex)?
        .into_iter()
        .find(|q| q.parent == TC_H_ROOT && q.kind == "cake")
    else {
        return Ok(None);
    };
    let mut cake = Cake {
        major: q.major,
        diffserv: 0,
        wash: false,
        fwmark_mask: 0,
    };
    // netlink-packet-route has no CAKE parser: TCA_OPTIONS arrives as one
    // raw nest of u32 attributes.
    for option in q.options {
        let TcOption::Other(nla) = option else { continue };
        let mut raw = vec![0u8; netlink_packet_core::Nla::value_len(&nla)];
        netlink_packet_core::Nla::emit_value(&nla, &mut raw);
        for (kind, value) in nested_u32s(&raw) {
            match kind {
                TCA_CAKE_DIFFSERV_MODE => cake.diffserv = value,
                TCA_CAKE_WASH => cake.wash = value != 0,
                TCA_CAKE_FWMARK => cake.fwmark_mask = value,
                _ => {}
            }
        }
    }
    Ok(Some(cake))
}

/// The (type, u32 value) attributes of a netlink nest; longer ones are skipped.
fn nested_u32s(mut raw: &[u8]) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    while raw.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([raw[0], raw[1]]));
        let kind = u16::from_ne_bytes([raw[2], raw[3]]) & 0x3fff;
        if len < 4 || len > raw.len() {
            break;
        }
        if len == 8 {
            out.push((kind, u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]])));
        }
        raw = &raw[((len + 3) & !3).min(raw.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_u32_attributes_of_a_nest() {
        let attr = |kind: u16, value: &[u8]| {
            let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
            a.extend(kind.to_ne_bytes());
            a.extend(value);
            while a.len() % 4 != 0 {
                a.push(0);
            }
            a
        };
        let mut raw = attr(2, &1_000_000u64.to_ne_bytes());
        raw.extend(attr(3, &1u32.to_ne_bytes()));
        raw.extend(attr(13, &1u32.to_ne_bytes()));
        raw.extend(attr(99, &[1, 2]));
        assert_eq!(nested_u32s(&raw), [(3, 1), (13, 1)]);
        assert_eq!(nested_u32s(&raw[..3]), []);
    }
}
