//! DSCP values and what pdscp does with them: names (`ef`, `af41`, `cs1`),
//! the `--dscp-map` presets and tables, reflection's allow list, and the
//! tins CAKE gives each DSCP (for `--priority-only`). Pure functions.
use anyhow::{bail, Context, Result};

pub type DscpTable = [u8; 64];

/// A DSCP from a number (0..63) or a name: cs0..cs7, af11..af43, ef, va, le, be/df.
pub fn parse_dscp(text: &str) -> Result<u8> {
    let t = text.trim().to_ascii_lowercase();
    let value = match t.as_str() {
        "ef" => Some(46),
        "va" => Some(44),
        "le" => Some(1),
        "be" | "df" | "default" => Some(0),
        _ => None,
    };
    if let Some(v) = value {
        return Ok(v);
    }
    let named = if let Some(n) = t.strip_prefix("cs") {
        n.parse::<u8>().ok().filter(|n| *n <= 7).map(|n| n * 8)
    } else if let Some(xy) = t.strip_prefix("af") {
        match xy.as_bytes() {
            [x @ b'1'..=b'4', y @ b'1'..=b'3'] => Some((x - b'0') * 8 + (y - b'0') * 2),
            _ => None,
        }
    } else {
        t.parse::<u8>().ok().filter(|n| *n < 64)
    };
    match named {
        Some(v) => Ok(v),
        None => bail!("{text:?} is not a DSCP: give 0..63 or a name such as ef, af41, cs1"),
    }
}

/// The usual name of a DSCP ("ef", "af41", "cs1"), or its number.
pub fn dscp_name(dscp: u8) -> String {
    match dscp {
        46 => "ef".into(),
        44 => "va".into(),
        1 => "le".into(),
        d if d % 8 == 0 && d < 64 => format!("cs{}", d / 8),
        d if (8..40).contains(&d) && d % 2 == 0 && (d % 8) / 2 >= 1 => format!("af{}{}", d / 8, (d % 8) / 2),
        d => d.to_string(),
    }
}

/// The `--dscp-map` presets.
pub const PRESETS: [&str; 5] = ["copy", "diffserv4", "diffserv3", "precedence", "wash"];

/// The table of a `--dscp-map` SPEC: a preset, or `IN=OUT,...[,*=OUT]` with
/// DSCP numbers or names; unlisted values are copied unless `*` is given.
pub fn parse_dscp_map(spec: &str) -> Result<DscpTable> {
    let identity: DscpTable = std::array::from_fn(|d| d as u8);
    match spec.trim() {
        "copy" => return Ok(identity),
        "wash" => return Ok([0; 64]),
        "precedence" => return Ok(std::array::from_fn(|d| d as u8 & 0x38)),
        "diffserv4" => {
            return Ok(std::array::from_fn(|d| {
                DIFFSERV4_CLASS[usize::from(DIFFSERV4_MINOR[d]) - 1]
            }))
        }
        "diffserv3" => {
            return Ok(std::array::from_fn(|d| {
                DIFFSERV3_CLASS[usize::from(DIFFSERV3_MINOR[d]) - 1]
            }))
        }
        _ => {}
    }
    let mut table = identity;
    let mut default = None;
    let mut explicit = Vec::new();
    for entry in spec.split(',') {
        let Some((from, to)) = entry.split_once('=') else {
            bail!(
                "--dscp-map {spec:?}: {entry:?} is not IN=OUT; give one of {} or a table such as 46=46,34=34,*=0",
                PRESETS.join(", ")
            );
        };
        let to = parse_dscp(to).with_context(|| format!("--dscp-map {spec:?}"))?;
        if from.trim() == "*" {
            default = Some(to);
        } else {
            explicit.push((
                parse_dscp(from).with_context(|| format!("--dscp-map {spec:?}"))?,
                to,
            ));
        }
    }
    if let Some(d) = default {
        table = [d; 64];
    }
    for (from, to) in explicit {
        table[usize::from(from)] = to;
    }
    Ok(table)
}

/// The name of a table if it is a preset's, else its non-copied entries as a spec.
pub fn describe_dscp_map(table: &DscpTable) -> String {
    for preset in PRESETS {
        if parse_dscp_map(preset).is_ok_and(|t| &t == table) {
            return preset.to_string();
        }
    }
    let entries: Vec<String> = (0..64u8)
        .filter(|d| table[usize::from(*d)] != *d)
        .map(|d| format!("{d}={}", table[usize::from(d)]))
        .collect();
    entries.join(",")
}

/// Reflection may copy every class but CS6 and CS7 unless told otherwise:
/// those would let the far end raise traffic above its station.
pub const DEFAULT_REFLECT_ALLOW: u64 = !((1 << 48) | (1 << 56));

/// A `--reflect-allow` LIST: DSCP numbers or names, comma-separated, or `all`.
pub fn parse_allow_list(list: &str) -> Result<u64> {
    if list.trim() == "all" {
        return Ok(u64::MAX);
    }
    let mut mask = 0u64;
    for item in list.split(',') {
        mask |= 1 << parse_dscp(item).with_context(|| format!("--reflect-allow {list:?}"))?;
    }
    Ok(mask)
}

/// The DSCPs of an allow mask, as names.
pub fn describe_allow(mask: u64) -> String {
    match mask {
        u64::MAX => "all".into(),
        DEFAULT_REFLECT_ALLOW => "all but cs6, cs7".into(),
        m => (0..64u8)
            .filter(|d| m >> d & 1 == 1)
            .map(dscp_name)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The DSCP each CAKE diffserv4 tin stands for in `--dscp-map diffserv4`,
/// by priority minor: Bulk CS1, Best Effort CS0, Video AF41, Voice EF.
const DIFFSERV4_CLASS: [u8; 4] = [8, 0, 34, 46];
/// diffserv3: Bulk CS1, Best Effort CS0, Voice EF.
const DIFFSERV3_CLASS: [u8; 3] = [8, 0, 46];

/// CAKE's tin for each DSCP as the skb->priority minor that selects it
/// (1-based, in `tc -s qdisc` order), from sch_cake.c's tin_index tables
/// and tin_order (Linux 5.9+).
const DIFFSERV3_MINOR: DscpTable = [
    2, 1, 2, 2, 3, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, //
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 3, 2, 3, 2, 2, 2, 2, 2, 2, 2, 3, 2, 2, 2, 2, 2, 2, 2,
];
const DIFFSERV4_MINOR: DscpTable = [
    2, 1, 2, 2, 3, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, //
    4, 2, 3, 2, 3, 2, 3, 2, 4, 2, 2, 2, 4, 2, 4, 2, 4, 2, 2, 2, 2, 2, 2, 2, 4, 2, 2, 2, 2, 2, 2, 2,
];
const DIFFSERV8_MINOR: DscpTable = [
    3, 1, 2, 3, 5, 3, 3, 3, 2, 3, 2, 3, 2, 3, 2, 3, 6, 3, 5, 3, 5, 3, 5, 3, 4, 3, 4, 3, 4, 3, 4, 3, //
    7, 3, 4, 3, 4, 3, 4, 3, 7, 3, 3, 3, 7, 3, 7, 3, 8, 3, 3, 3, 3, 3, 3, 3, 8, 3, 3, 3, 3, 3, 3, 3,
];

/// The skb->priority minors that put each DSCP in the tin a CAKE qdisc in
/// `diffserv` mode (CAKE_DIFFSERV_*) gives it, or why there is none.
pub fn cake_tins(diffserv: u32) -> Result<DscpTable> {
    Ok(match diffserv {
        0 => DIFFSERV3_MINOR,
        1 => DIFFSERV4_MINOR,
        2 => DIFFSERV8_MINOR,
        4 => std::array::from_fn(|d| (d as u8 >> 3) + 1),
        3 => bail!("CAKE in besteffort mode has one tin: there is nothing to prioritise"),
        m => bail!("CAKE diffserv mode {m} is unknown to pdscp"),
    })
}

/// The name of a CAKE_DIFFSERV_* mode.
pub fn cake_mode_name(diffserv: u32) -> &'static str {
    match diffserv {
        0 => "diffserv3",
        1 => "diffserv4",
        2 => "diffserv8",
        3 => "besteffort",
        4 => "precedence",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dscp_names_and_numbers() {
        for (text, value) in [
            ("ef", 46),
            ("EF", 46),
            ("af41", 34),
            ("af11", 10),
            ("af43", 38),
            ("cs1", 8),
            ("cs0", 0),
            ("cs7", 56),
            ("le", 1),
            ("va", 44),
            ("63", 63),
            ("0", 0),
        ] {
            assert_eq!(parse_dscp(text).unwrap(), value, "{text}");
        }
        for bad in ["64", "af51", "af14", "cs8", "", "x", "-1"] {
            assert!(parse_dscp(bad).is_err(), "{bad}");
        }
        for d in 0..64u8 {
            assert_eq!(parse_dscp(&dscp_name(d)).unwrap(), d, "{}", dscp_name(d));
        }
    }

    #[test]
    fn presets_map_each_class_to_its_tin() {
        let ds4 = parse_dscp_map("diffserv4").unwrap();
        assert_eq!(
            (ds4[46], ds4[34], ds4[10], ds4[8], ds4[0], ds4[48], ds4[1]),
            (46, 34, 0, 8, 0, 46, 8)
        );
        assert!(ds4.iter().all(|m| [0, 8, 34, 46].contains(m)));
        let ds3 = parse_dscp_map("diffserv3").unwrap();
        assert_eq!((ds3[46], ds3[34], ds3[8]), (46, 0, 8));
        assert_eq!(parse_dscp_map("precedence").unwrap()[46], 40);
        assert_eq!(parse_dscp_map("wash").unwrap(), [0; 64]);
        assert_eq!(describe_dscp_map(&ds4), "diffserv4");
    }

    #[test]
    fn tables_copy_what_they_do_not_list_unless_given_a_default() {
        let t = parse_dscp_map("46=46,34=34,10=8,*=0").unwrap();
        assert_eq!((t[46], t[34], t[10], t[12], t[0]), (46, 34, 8, 0, 0));
        let t = parse_dscp_map("ef=af41, cs6=0").unwrap();
        assert_eq!((t[46], t[48], t[26]), (34, 0, 26));
        assert_eq!(describe_dscp_map(&t), "46=34,48=0");
        for bad in ["46", "46=99", "x=1", "diffserv5", ""] {
            assert!(parse_dscp_map(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reflection_never_copies_cs6_or_cs7_by_default() {
        assert_eq!(DEFAULT_REFLECT_ALLOW >> 48 & 1, 0);
        assert_eq!(DEFAULT_REFLECT_ALLOW >> 56 & 1, 0);
        assert_eq!(DEFAULT_REFLECT_ALLOW >> 46 & 1, 1);
        assert_eq!(parse_allow_list("ef,af41").unwrap(), (1 << 46) | (1 << 34));
        assert_eq!(parse_allow_list("all").unwrap(), u64::MAX);
        assert!(parse_allow_list("ef,nine").is_err());
        assert_eq!(describe_allow(DEFAULT_REFLECT_ALLOW), "all but cs6, cs7");
    }

    #[test]
    fn cake_minors_follow_tc_order() {
        let t = cake_tins(1).unwrap();
        assert_eq!(
            (t[46], t[34], t[0], t[8]),
            (4, 3, 2, 1),
            "Voice, Video, Best Effort, Bulk"
        );
        assert_eq!(cake_tins(0).unwrap()[46], 3);
        assert_eq!(cake_tins(4).unwrap()[46], 6);
        assert!(cake_tins(3).is_err());
        assert!(cake_tins(2).unwrap().iter().all(|m| (1..=8).contains(m)));
    }
}
