//! `track = [{ balancer = "www", weight = -60 }]` of a `[[vrrp]]`: the balancers whose
//! servers move this host's VRRP priority (keepalived's `track_script` weights). Every error
//! at its location; that each balancer exists is checked with the whole file
//! ([`known_balancers`]). No I/O.

use toml_edit::{Item, Table, TableLike};

use super::reader::{Reader, did_you_mean, span_of};

/// One tracked balancer of a `[[vrrp]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub balancer: String,
    /// Negative: added to the priority while the balancer has no server that can take a new
    /// client; positive: added while it has one (keepalived's weights). Never 0.
    pub weight: i16,
}

/// keepalived's range for script weights is ±253; 254 lets a weight take any backup priority
/// (1..254) to the other end.
const MAX_WEIGHT: i64 = 254;

/// One entry of `track`, with where it starts.
type Entry<'a> = (&'a dyn TableLike, Option<std::ops::Range<usize>>);

/// The entries of `track` (an array of inline tables, or `[[vrrp.track]]` tables).
fn entries(item: &Item) -> Option<Vec<Entry<'_>>> {
    if let Some(a) = item.as_array_of_tables() {
        return Some(
            a.iter()
                .map(|t| (t as &dyn TableLike, t.span().or_else(|| span_of(item))))
                .collect(),
        );
    }
    let arr = item.as_array()?;
    arr.iter()
        .map(|v| v.as_inline_table().map(|t| (t as &dyn TableLike, v.span())))
        .collect()
}

/// The `track` key of a `[[vrrp]]` table whose priority is `priority`.
pub fn read(r: &mut Reader, t: &Table, vrid: u8, priority: u8) -> Vec<Track> {
    let Some(item) = t.get("track") else {
        return Vec::new();
    };
    let Some(list) = entries(item) else {
        r.err_at(
            item,
            "`track` must be an array of tables, e.g. [{ balancer = \"www\", weight = -60 }]",
        );
        return Vec::new();
    };
    // 255: the address owner (RFC 3768 §5.3.4).
    if priority == 255 {
        r.err_at(
            item,
            format!("[[vrrp]] vrid {vrid}: `track` cannot move the address owner (priority 255), which keeps 255 whatever its servers do (as keepalived's owner does): give this host a priority of 254 or lower"),
        );
    }
    let mut out: Vec<Track> = Vec::new();
    for (e, span) in list {
        r.check_keys(e, "a `track` entry", &["balancer", "weight"]);
        let balancer = r.string(e, "balancer").map(|(s, i)| (s.to_string(), i));
        let weight = r.int(e, "weight", -MAX_WEIGHT, MAX_WEIGHT);
        if e.get("balancer").is_none() {
            r.err(
                span.clone(),
                "a `track` entry needs a `balancer` (its name)",
            );
        }
        match (e.get("weight"), weight) {
            (None, _) => r.err(
                span,
                "a `track` entry needs a `weight`, e.g. -60: added to the priority while the balancer has no server that can take a client",
            ),
            (Some(w), Some(0)) => r.err_at(
                w,
                "`weight` 0 would never change the priority (keepalived's weight 0, a fault, has no fwlb form): use a negative weight such as -60",
            ),
            _ => {}
        }
        let (Some((name, name_item)), Some(weight)) = (balancer, weight) else {
            continue;
        };
        if out.iter().any(|o| o.balancer == name) {
            r.err_at(
                name_item,
                format!("balancer {name:?} is tracked twice by VRID {vrid}: give it one weight"),
            );
            continue;
        }
        if weight != 0 {
            out.push(Track {
                balancer: name,
                weight: weight as i16,
            });
        }
    }
    out
}

/// Every `track` of `vrrp` tables names one of `names` (the balancers of the file).
pub fn known_balancers(r: &mut Reader, vrrp: &[&Table], names: &[String]) {
    for t in vrrp {
        let Some(list) = t.get("track").and_then(entries) else {
            continue;
        };
        for (e, _) in list {
            let Some(item) = e.get("balancer") else {
                continue;
            };
            let Some(name) = item.as_str() else { continue };
            if names.iter().any(|n| n == name) {
                continue;
            }
            let hint = did_you_mean(name, names.iter().map(String::as_str), false);
            let list = if names.is_empty() {
                "there is no [[balancer]]".to_string()
            } else {
                let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
                format!("balancers: {}", quoted.join(", "))
            };
            r.err_at(
                item,
                format!("`track`: no balancer named {name:?}{hint}; {list}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Track;
    use crate::config::parse_str;

    const HEAD: &str = "[[balancer]]\nname = \"www\"\nlisten = \"192.0.2.10:80\"\nservers = [\"10.0.0.11\"]\n[[balancer]]\nlisten = \"192.0.2.10:81\"\nservers = [\"10.0.0.11\"]\n[[vrrp]]\nvrid = 1\ninterface = \"eth0\"\naddresses = [\"192.0.2.10/24\"]\n";

    fn tracks(src: &str) -> Vec<Track> {
        let cfg = parse_str(&format!("{HEAD}{src}"), std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        cfg.vrrp[0].track.clone()
    }

    #[test]
    fn inline_and_table_forms_read_the_same() {
        let want = vec![
            Track {
                balancer: "www".into(),
                weight: -60,
            },
            Track {
                balancer: "lb2".into(),
                weight: 254,
            },
        ];
        assert_eq!(
            tracks(
                "track = [{ balancer = \"www\", weight = -60 }, { balancer = \"lb2\", weight = 254 }]\n"
            ),
            want
        );
        assert_eq!(
            tracks(
                "[[vrrp.track]]\nbalancer = \"www\"\nweight = -60\n[[vrrp.track]]\nbalancer = \"lb2\"\nweight = 254\n"
            ),
            want
        );
        assert!(tracks("").is_empty());
    }
}
