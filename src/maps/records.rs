//! The records of the `tunnels` and `uplinks` maps and the programs' index
//! entry of a device (`devices`), encoded as bpf/pdscp.h lays them out.
use std::collections::BTreeMap;

use super::{
    abi, as_bytes, decode_name, encode_name, from_bytes, mode_code, mode_from_code, port_code,
    port_from_code, DSCPS, MAX_UPLINKS,
};
use crate::model::{CakeTins, Policy, Reflection, TunnelRecord, UplinkRecord};
use crate::skel::types;

/// The flags the programs read, from a tunnel's settings (TUNNEL_IN_USE included).
pub fn tunnel_flags(rec: &TunnelRecord) -> u8 {
    let flag = |on: bool, bit: u32| if on { bit as u8 } else { 0 };
    flag(true, abi::TUNNEL_IN_USE)
        | flag(!rec.policy.is_copy(), abi::TUNNEL_MAPPED)
        | flag(rec.policy.fixed.is_some(), abi::TUNNEL_FIXED)
        | flag(rec.policy.handshake.is_some(), abi::TUNNEL_HANDSHAKE)
        | flag(rec.policy.priority_only, abi::TUNNEL_PRIORITY)
        | flag(rec.reflection.out, abi::TUNNEL_REFLECT_OUT)
        | flag(rec.reflection.into, abi::TUNNEL_REFLECT_IN)
        | flag(rec.reflection.override_own, abi::TUNNEL_REFLECT_OVERRIDE)
}

/// A `tunnels` value; an empty (unused) slot for None.
pub fn encode_tunnel(rec: Option<&TunnelRecord>) -> Vec<u8> {
    let Some(rec) = rec else {
        return as_bytes(&types::tunnel_rec::default()).to_vec();
    };
    let mut links = [0u16; MAX_UPLINKS];
    for (slot, row) in &rec.links {
        links[*slot] = *row;
    }
    let raw = types::tunnel_rec {
        links,
        dscp_map: rec.policy.map,
        reflect_allow: rec.reflection.allow,
        flags: tunnel_flags(rec),
        fixed_dscp: rec.policy.fixed.unwrap_or(0),
        handshake_dscp: rec.policy.handshake.unwrap_or(0),
        l2: rec.ethernet as u8,
        ifindex: rec.ifindex,
        port: port_code(rec.ports),
        reader_mode: mode_code(rec.reader),
        ingress_mode: mode_code(rec.ingress),
        name: encode_name(&rec.name),
        ..Default::default()
    };
    as_bytes(&raw).to_vec()
}

/// A `tunnels` value, or None for an unused slot (or bytes that are not one).
pub fn decode_tunnel(bytes: &[u8]) -> Option<TunnelRecord> {
    let raw: types::tunnel_rec = from_bytes(bytes)?;
    let has = |bit: u32| raw.flags & bit as u8 != 0;
    if !has(abi::TUNNEL_IN_USE) {
        return None;
    }
    let links: BTreeMap<usize, u16> = raw
        .links
        .iter()
        .enumerate()
        .filter(|(_, row)| **row != 0)
        .map(|(slot, row)| (slot, *row))
        .collect();
    Some(TunnelRecord {
        name: decode_name(&raw.name),
        ifindex: raw.ifindex,
        ethernet: raw.l2 != 0,
        ports: port_from_code(raw.port),
        reader: mode_from_code(raw.reader_mode),
        ingress: mode_from_code(raw.ingress_mode),
        policy: Policy {
            map: raw.dscp_map,
            fixed: has(abi::TUNNEL_FIXED).then_some(raw.fixed_dscp),
            handshake: has(abi::TUNNEL_HANDSHAKE).then_some(raw.handshake_dscp),
            priority_only: has(abi::TUNNEL_PRIORITY),
        },
        reflection: Reflection {
            out: has(abi::TUNNEL_REFLECT_OUT),
            into: has(abi::TUNNEL_REFLECT_IN),
            override_own: has(abi::TUNNEL_REFLECT_OVERRIDE),
            allow: raw.reflect_allow,
        },
        links,
    })
}

/// An `uplinks` value; an empty slot for None.
pub fn encode_uplink(rec: Option<&UplinkRecord>) -> Vec<u8> {
    let Some(rec) = rec else {
        return as_bytes(&types::uplink_rec::default()).to_vec();
    };
    let raw = types::uplink_rec {
        in_use: 1,
        l2: rec.ethernet as u8,
        mode: mode_code(Some(rec.mode)),
        ifindex: rec.ifindex,
        priority_major: rec.cake.as_ref().map_or(0, |c| c.priority_major),
        tin_of: rec.cake.as_ref().map_or([0; DSCPS], |c| c.tin_of),
        name: encode_name(&rec.name),
        ..Default::default()
    };
    as_bytes(&raw).to_vec()
}

/// An `uplinks` value, or None for an unused slot.
pub fn decode_uplink(bytes: &[u8]) -> Option<UplinkRecord> {
    let raw: types::uplink_rec = from_bytes(bytes)?;
    if raw.in_use == 0 {
        return None;
    }
    Some(UplinkRecord {
        name: decode_name(&raw.name),
        ifindex: raw.ifindex,
        ethernet: raw.l2 != 0,
        mode: mode_from_code(raw.mode)?,
        cake: (raw.priority_major != 0).then_some(CakeTins {
            priority_major: raw.priority_major,
            tin_of: raw.tin_of,
        }),
    })
}

/// A `devices` value: what the programs need of a device that is a tunnel
/// (slot and record), an uplink (slot), both, or neither (an empty slot).
pub fn encode_device(
    tunnel: Option<(usize, &TunnelRecord)>,
    uplink: Option<(usize, &UplinkRecord)>,
) -> Vec<u8> {
    let mut raw = types::dev_slot::default();
    if let Some((slot, rec)) = tunnel {
        raw.roles |= abi::DEV_TUNNEL as u8;
        raw.l2 = rec.ethernet as u8;
        raw.tunnel_flags = tunnel_flags(rec);
        raw.tunnel = slot as u16;
        raw.port = port_code(rec.ports);
    }
    if let Some((slot, rec)) = uplink {
        raw.roles |= abi::DEV_UPLINK as u8;
        raw.l2 = rec.ethernet as u8;
        raw.uplink = slot as u8;
    }

    as_bytes(&raw).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    use crate::model::{Mode, PortMatch};

    fn tunnel() -> TunnelRecord {
        TunnelRecord {
            name: "x23456789012345".into(),
            ifindex: 7,
            ethernet: true,
            ports: PortMatch::Port(0x1234),
            reader: Some(Mode::Tcx),
            ingress: Some(Mode::Tc),
            policy: Policy {
                fixed: Some(8),
                handshake: Some(0),
                priority_only: true,
                ..Policy::copy()
            },
            reflection: Reflection {
                out: true,
                into: false,
                override_own: true,
                allow: !(3 << 48),
            },
            links: BTreeMap::from([(0, 1), (31, 511)]),
        }
    }

    #[test]
    fn tunnel_records_round_trip() {
        let rec = tunnel();
        assert_eq!(decode_tunnel(&encode_tunnel(Some(&rec))), Some(rec.clone()));
        let any = TunnelRecord {
            ports: PortMatch::Any,
            reader: None,
            ingress: None,
            policy: Policy::copy(),
            reflection: Reflection::default(),
            links: BTreeMap::new(),
            ..rec
        };
        assert_eq!(decode_tunnel(&encode_tunnel(Some(&any))), Some(any));
        assert_eq!(decode_tunnel(&encode_tunnel(None)), None, "unused slot");
        assert_eq!(decode_tunnel(&[0; 3]), None, "wrong size");
    }

    #[test]
    fn ports_are_stored_in_network_order() {
        let bytes = encode_tunnel(Some(&tunnel()));
        let port_at = offset_of!(types::tunnel_rec, port);
        assert_eq!(&bytes[port_at..port_at + 2], &[0x12, 0x34]);
        let up = UplinkRecord {
            name: "x23456789012345".into(),
            ifindex: 7,
            ethernet: true,
            mode: Mode::Tcx,
            cake: None,
        };
        let dev = encode_device(Some((3, &tunnel())), Some((2, &up)));
        assert_eq!(&dev[6..8], &[0x12, 0x34]);
        assert_eq!(dev[0], (abi::DEV_TUNNEL | abi::DEV_UPLINK) as u8);
        assert_eq!((dev[3], dev[4]), (2, 3));
    }

    #[test]
    fn uplink_records_round_trip() {
        let rec = UplinkRecord {
            name: "eth0".into(),
            ifindex: 2,
            ethernet: true,
            mode: Mode::Tc,
            cake: Some(CakeTins {
                priority_major: 0x8001 << 16,
                tin_of: [2; 64],
            }),
        };
        assert_eq!(decode_uplink(&encode_uplink(Some(&rec))), Some(rec.clone()));
        let plain = UplinkRecord { cake: None, ..rec };
        assert_eq!(decode_uplink(&encode_uplink(Some(&plain))), Some(plain));
        assert_eq!(decode_uplink(&encode_uplink(None)), None);
    }

    #[test]
    fn flags_say_what_the_programs_must_do() {
        let mut rec = tunnel();
        let flags = tunnel_flags(&rec);
        for bit in [
            abi::TUNNEL_IN_USE,
            abi::TUNNEL_FIXED,
            abi::TUNNEL_PRIORITY,
            abi::TUNNEL_REFLECT_OUT,
        ] {
            assert_ne!(flags & bit as u8, 0, "{bit}");
        }
        assert_eq!(flags & abi::TUNNEL_MAPPED as u8, 0, "copy is no map");
        rec.policy.map[46] = 34;
        assert_ne!(tunnel_flags(&rec) & abi::TUNNEL_MAPPED as u8, 0);
    }
}
